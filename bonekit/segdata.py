"""Data set-up shared by every segmentation stage: caches, person-grouped folds, nested label subsets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from bonekit.cache import Cache, build
from bonekit.data import resolve_root
from bonekit.datasets import PairedFrames
from bonekit.errors import ConfigError, DataError
from bonekit.formats import discover
from bonekit.splits import label_subset, train_val


@dataclass
class SegData:
    cache: Cache  # every training-split frame at the training resolution
    classes: list[str]
    train_idx: np.ndarray  # frames of the training folds
    val_idx: np.ndarray  # frames of the validation fold
    labelled: np.ndarray  # the label subset (labels.fraction) of train_idx
    pool: np.ndarray  # the rest of train_idx: the unlabelled pool
    val: PairedFrames | None  # validation inputs + labels at the label resolution
    root: Path
    records: list  # what the cache was built from, in its frame order (data.root's, then data.pool_root's)
    extra: np.ndarray  # frames from data.pool_root: in the pool, never in a fold


def records_of(data_cfg) -> tuple[Path, list, list]:
    """(training root, its labelled records, the unlabelled records of ``data.pool_root``). The pool folder's
    people are prefixed ``pool/`` so they never share a person with the labelled data."""
    root = resolve_root(data_cfg, "train")
    records = discover(root, labels="required")
    extra = []
    if data_cfg.get("pool_root", ""):
        import dataclasses

        extra = [dataclasses.replace(r, label=None, person=f"pool/{r.person}")
                 for r in discover(data_cfg.pool_root, labels="ignore")]
        if not extra:
            raise DataError(data_cfg.pool_root, "data.pool_root holds no X-ray this toolkit can read")
    return root, records, extra


def setup(data_cfg, accelerator, labels=None, eval_resolution: int = 0, with_val: bool = True) -> SegData:
    """Cache ``data_cfg``'s frames and split them: person-grouped folds, then the label subset ``labels`` (a
    ``labels.*`` mapping: fraction, seed, unit; None: every training frame labelled) of the training folds."""
    labels = {"fraction": 1.0, "seed": 0, **(labels or {})}
    unit = labels.get("unit", "frame")
    if unit not in ("frame", "volume"):
        raise ConfigError(f"labels.unit={unit!r} is not one of ['frame', 'volume']")
    classes = list(OmegaConf.to_container(data_cfg.classes))
    with accelerator.main_process_first():
        root, records, extra_records = records_of(data_cfg)
        cache = build(records + extra_records, data_cfg.resolution, classes, data_cfg.cache_dir or None,
                      workers=data_cfg.workers, skip_bad=data_cfg.skip_bad, progress=accelerator.is_main_process)
    # Folds, label subset and validation come from data.root's frames alone; data.pool_root's join the pool.
    extra_images = {str(r.image) for r in extra_records}
    is_extra = np.array([f["image"] in extra_images for f in cache.frames], dtype=bool)
    own = np.flatnonzero(~is_extra)
    persons = [cache.persons[i] for i in own]
    if len(set(persons)) < data_cfg.folds:
        raise DataError(root, f"{len(set(persons))} people cannot fill data.folds={data_cfg.folds} person-grouped folds")
    train_idx, val_idx = (own[i] for i in train_val(persons, data_cfg.folds, data_cfg.fold, seed=0))
    # unit=volume: a volume's slices share their source file, so they are labelled (or pooled) together.
    units = [cache.frames[i]["image"] for i in train_idx] if unit == "volume" else None
    labelled, pool = label_subset(train_idx, labels["fraction"], seed=labels["seed"], groups=units)
    extra = np.flatnonzero(is_extra)
    pool = np.concatenate([pool, extra]).astype(np.int64)
    val = None
    if with_val and len(val_idx):
        sizes = {(cache.frames[i]["height"], cache.frames[i]["width"]) for i in val_idx}
        if eval_resolution == 0:
            if len(sizes) != 1 or len({s for hw in sizes for s in hw}) != 1:
                raise DataError(root, f"validation images have sizes {sorted(sizes)[:4]}: set eval_resolution=N "
                                      "to score them at one square size")
            eval_resolution = next(iter(sizes))[0]
        # Labels at their own resolution (2048 for competition data): a second cache over the validation images.
        by_image = {}
        for i in val_idx:
            by_image.setdefault(cache.frames[i]["image"], []).append(int(i))
        val_records = [r for r in records if str(r.image) in by_image]
        with accelerator.main_process_first():
            label_cache = build(val_records, eval_resolution, classes, data_cfg.cache_dir or None,
                                workers=data_cfg.workers, progress=accelerator.is_main_process)
        pos = {(f["image"], f["slice"]): j for j, f in enumerate(label_cache.frames)}
        label_idx = [pos[(cache.frames[i]["image"], cache.frames[i]["slice"])] for i in val_idx]
        val = PairedFrames(cache, label_cache, val_idx, label_idx, data_cfg.slices)
    accelerator.print(f"data: {len(train_idx)} training frames ({len(labelled)} labelled, {len(pool)} in the "
                      f"unlabelled pool" + (f", {len(extra)} of them from data.pool_root" if len(extra) else "")
                      + f"), {len(val_idx)} validation frames")
    return SegData(cache, classes, train_idx, val_idx, labelled, pool, val, root, records + extra_records, extra)
