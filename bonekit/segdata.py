"""Data set-up shared by every segmentation stage: caches, person-grouped folds, nested label subsets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from bonekit.cache import Cache, build
from bonekit.data import resolve_root
from bonekit.datasets import PairedFrames
from bonekit.errors import DataError
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


def setup(data_cfg, accelerator, fraction: float = 1.0, label_seed: int = 0, eval_resolution: int = 0,
          with_val: bool = True) -> SegData:
    classes = list(OmegaConf.to_container(data_cfg.classes))
    with accelerator.main_process_first():
        root = resolve_root(data_cfg, "train")
        records = discover(root, labels="required")
        cache = build(records, data_cfg.resolution, classes, data_cfg.cache_dir or None, workers=data_cfg.workers,
                      skip_bad=data_cfg.skip_bad, progress=accelerator.is_main_process)
    persons = cache.persons
    if len(set(persons)) < data_cfg.folds:
        raise DataError(root, f"{len(set(persons))} people cannot fill data.folds={data_cfg.folds} person-grouped folds")
    train_idx, val_idx = train_val(persons, data_cfg.folds, data_cfg.fold, seed=0)
    labelled, pool = label_subset(train_idx, fraction, seed=label_seed)
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
    return SegData(cache, classes, train_idx, val_idx, labelled, pool, val, root)
