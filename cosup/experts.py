"""Train the expert teachers: each owns a group of bones or a shard of the data.

    accelerate launch cosup/experts.py [labels.fraction=0.05] [partition.by=bones partition.groups=rays]
    accelerate launch cosup/experts.py partition.by=shards partition.shards=kmeans partition.n_shards=2 \
        partition.embed_encoder=runs/pretrain/<run>/encoder.safetensors

Experts train on the labelled subset only, with the shared loop (bonekit/loop.py). They may be deliberately weaker
than the student (``model.encoder=resnet10t``, lower ``data.resolution``), as in weak-to-strong studies. Writes
``runs/experts/<timestamp>/experts.json`` (the manifest label.py and distill.py read) and one run folder per expert.
``resume=auto`` skips finished experts and resumes the one in progress.
"""

from __future__ import annotations

import copy
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import set_seed
from omegaconf import OmegaConf

from bonekit import checkpoint, config
from bonekit.accel import make_accelerator
from bonekit.classes import GROUPINGS
from bonekit.cli import run
from bonekit.config import DataConfig, LabelsConfig
from bonekit.datasets import CachedFrames
from bonekit.engine import check_config, prepare_training
from bonekit.loop import LoopConfig, fit
from bonekit.models import (
    ModelConfig,
    build_segmenter,
    init_from_model,
    load_encoder,
    make_encoder,
    model_meta,
    read_model_meta,
    segmentation_choices,
)
from bonekit.runlog import start_run
from bonekit.seg_augment import SegAugConfig
from bonekit.segdata import setup
from bonekit.supervised import SupervisedTask
from cosup import partition as P
from cosup.gate import GateConfig
from cosup.gate import check as gate_check
from cosup.manifest import Expert, Manifest


@dataclass
class PartitionConfig:
    by: str = "bones"  # bones | shards
    groups: str = "regions"  # bones: regions (fingers/carpals/forearm) | rays (thumb..little, carpals, forearm)
    custom: dict[str, list[str]] = field(default_factory=dict)  # bones: name -> bones (overrides groups)
    shards: str = "kmeans"  # shards: kmeans | hierarchical | meta
    n_shards: int = 2
    levels: int = 1  # hierarchical: 1 -> 2 shards, 2 -> 4
    meta_field: str = "sex"  # meta: sex | age | side
    embed_encoder: str = ""  # encoder.safetensors for the embeddings ("" = model.init, else a random encoder)
    crop_groups: list[str] = field(default_factory=list)  # bones: groups that get a region-crop expert, e.g. [carpals]
    crop_source: int = 0  # resolution the crops are cut from (0: 4x data.resolution, at most the labels' own)
    crop_size: int = 0  # the crop expert's input size (0: data.resolution)
    crop_margin: float = 0.15
    generalist: str = ""  # a model of every bone (e.g. the labelled-only student): each expert starts from it


@dataclass
class ExpertsConfig:
    data: DataConfig = field(default_factory=lambda: DataConfig(resolution=128))
    labels: LabelsConfig = field(default_factory=lambda: LabelsConfig(fraction=0.1))
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    aug: SegAugConfig = field(default_factory=SegAugConfig)
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(steps=100, eval_every=0))
    loss: str = "bce_dice"
    eval_resolution: int = 0
    precision: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | bf16 (fp32 on a CPU without hardware bf16) | fp16 | no
    run_dir: str = ""
    gate: GateConfig = field(default_factory=GateConfig)  # per-bone CV gate of the specialists (cosup/gate.py)
    resume: str = ""  # "" | auto | a run folder (or a checkpoint inside it): every model continues where it stopped
    allow_changed: bool = False  # resume even though the config differs from the saved one


def plan_experts(cfg, d, accelerator) -> tuple[list[dict], dict]:
    """The experts to train: name, owned classes, training frames; plus shard data for the manifest."""
    classes = d.classes
    if cfg.partition.by == "bones":
        spec = dict(cfg.partition.custom) if cfg.partition.custom else cfg.partition.groups
        groups = P.bone_groups(spec, classes)
        return [{"name": g, "classes": list(b), "frames": d.labelled.tolist()} for g, b in groups.items()], {}
    if cfg.partition.by != "shards":
        raise ValueError(f"partition.by={cfg.partition.by!r}: bones | shards")
    train = d.train_idx
    shard_info: dict = {"method": cfg.partition.shards}
    if cfg.partition.shards == "meta":
        ids, names = P.meta_shards([d.cache.frames[i] for i in train], cfg.partition.meta_field)
        shard_info["names"] = names
    else:
        enc_path = cfg.partition.embed_encoder or (cfg.model.init if cfg.model.init not in ("", "scratch") else "")
        enc = make_encoder(cfg.model.encoder, cfg.data.slices)
        if enc_path:
            load_encoder(enc, enc_path, cfg.model.encoder, cfg.data.slices)
        frames = torch.from_numpy(np.stack([d.cache.stack(int(i), cfg.data.slices // 2) for i in train]))
        z = P.embed(enc, frames, accelerator.device)
        if cfg.partition.shards == "kmeans":
            ids, _ = P.kmeans(z, cfg.partition.n_shards, cfg.loop.seed)
        elif cfg.partition.shards == "hierarchical":
            ids = P.hierarchical(z, cfg.partition.levels, cfg.loop.seed)
        else:
            raise ValueError(f"partition.shards={cfg.partition.shards!r}: kmeans | hierarchical | meta")
        shard_info["embed_encoder"] = enc_path
    n = int(ids.max()) + 1
    shard_of = {int(f): int(s) for f, s in zip(train, ids)}
    labelled = set(d.labelled.tolist())
    experts = []
    for s in range(n):
        mine = [f for f in train.tolist() if shard_of[f] == s and f in labelled]
        if not mine:
            raise ValueError(f"shard {s} holds no labelled image: use fewer shards or a larger labels.fraction")
        experts.append({"name": f"shard{s}", "classes": list(classes), "frames": mine, "shard": s})
    shard_info["shard_of"] = shard_of
    return experts, shard_info


def train_crop_experts(cfg, d, results: list[dict], run_dir: Path, accelerator) -> list[dict] | None:
    """For each group of ``partition.crop_groups``: an expert on square crops around its bones, cut from a cache at
    a higher resolution. The group's whole-image expert becomes its coarse locator for unlabelled images."""
    from bonekit.cache import build
    from cosup.crops import CropFrames

    if cfg.partition.by != "bones":
        raise ValueError("partition.crop_groups needs partition.by=bones")
    native = max(f["height"] for f in d.cache.frames)
    src_res = cfg.partition.crop_source or min(4 * cfg.data.resolution, native)
    size = cfg.partition.crop_size or cfg.data.resolution
    with accelerator.main_process_first():
        # The training cache's own records (data.pool_root's too), so frame numbers agree with it.
        source = build(d.records, src_res, d.classes, cfg.data.cache_dir or None,
                       workers=cfg.data.workers, progress=accelerator.is_main_process)
    lookup = {c: i for i, c in enumerate(d.classes)}
    by_name = {r["name"]: r for r in results}
    for g in cfg.partition.crop_groups:
        if g not in by_name:
            raise ValueError(f"partition.crop_groups names {g!r}, not one of the experts {sorted(by_name)}")
        coarse = by_name[g]
        out = [lookup[c] for c in coarse["classes"]]
        edir = run_dir / "experts" / f"{g}-crop"
        if not (edir / "last.safetensors").is_file():
            acc = make_accelerator(cfg.precision)
            set_seed(cfg.loop.seed + 7)
            model, opt = prepare_training(acc, build_segmenter(cfg.model, cfg.data.slices, len(out), acc.device),
                                          cfg.loop, cfg.loop.channels_last, cfg.loop.compile)
            ds = CropFrames(source, d.labelled.tolist(), out, len(d.classes), size, cfg.partition.crop_margin,
                            cfg.data.slices)
            task = SupervisedTask(len(d.classes), out, OmegaConf.to_object(cfg.aug), d.classes, cfg.loss)
            meta = model_meta(cfg.model, cfg.data.slices, coarse["classes"], size, config.to_dict(cfg),
                              expert=f"{g}-crop")
            res = fit(acc, model, opt, ds, None, task, cfg.loop, edir, checkpoint.latest(edir) if cfg.resume else None,
                      d.classes, meta, config.to_dict(cfg))
            if res.steps < cfg.loop.steps:
                return None
        # Scored like the others: on whole validation images, the box found by the coarse expert, the crop cut from
        # the same higher-resolution source it labels the pool with.
        from torch.utils.data import DataLoader

        from bonekit.loop import validate
        from bonekit.metrics import summarise
        from bonekit.models import load_model
        from cosup.crops import CropModule

        fine = load_model(edir / "last.safetensors")[0].to(accelerator.device).eval()
        loc = load_model(coarse["checkpoint"])[0].to(accelerator.device).eval()
        per_class, mean = summarise(validate(accelerator, CropModule(loc, fine, size, cfg.partition.crop_margin, source),
                                             DataLoader(d.val, batch_size=cfg.loop.val_batch_size), len(d.classes), out,
                                             gather=False))  # each process reads the whole fold
        accelerator.print(f"expert {g}-crop: {size}px crops cut from {src_res}px, located by the {g} expert: "
                          f"validation Dice {mean:.4f} (whole-image {g} expert: {coarse['val_dice']:.4f})")
        by_name[g] = {**coarse, "name": f"{g}-crop", "checkpoint": str((edir / "last.safetensors").resolve()),
                      "val_dice": mean, "val_per_class": per_class.tolist(),
                      "crop": {"coarse": coarse["checkpoint"], "source_cache": str(source.root), "size": size,
                               "margin": cfg.partition.crop_margin}}
    return [by_name[r["name"]] for r in results]


def train_expert(cfg, d, e: dict, n: int, edir: Path, generalist: str, val_ds, accelerator,
                 steps: int = 0) -> dict | None:
    """Train one expert ``e`` ({name, classes, frames[, shard]}) in ``edir`` from ``generalist`` (its head cut to
    the expert's bones; "" = ``model.init``), ``steps`` (0: ``loop.steps``) on ``e["frames"]``. Returns its result
    (also ``edir/result.json``), or None when it stopped early (``resume=auto`` continues it)."""
    done = edir / "last.safetensors"
    if done.is_file() and (edir / "result.json").is_file():  # finished in an earlier, interrupted run
        accelerator.print(f"expert {e['name']}: done, skipped")
        return json.loads((edir / "result.json").read_text())
    loop = copy.deepcopy(cfg.loop)
    if steps:
        loop.steps = steps
    lookup = {c: i for i, c in enumerate(d.classes)}
    resume_from = checkpoint.latest(edir) if cfg.resume else None
    acc = make_accelerator(cfg.precision)  # one Accelerator per expert: its state holds one model
    set_seed(cfg.loop.seed + 1000 * n)  # initial weights depend on the expert only (resume-safe)
    out = [lookup[c] for c in e["classes"]]
    model = build_segmenter(cfg.model, cfg.data.slices, len(out), acc.device)
    if generalist:  # specialists start from the generalist, its head cut to their bones
        g_classes = read_model_meta(generalist)["classes"]
        init_from_model(model, generalist, [g_classes.index(c) for c in e["classes"]])
    model, opt = prepare_training(acc, model, loop, loop.channels_last, loop.compile)
    task = SupervisedTask(len(d.classes), out, OmegaConf.to_object(cfg.aug), d.classes, cfg.loss)
    meta = model_meta(cfg.model, cfg.data.slices, e["classes"], cfg.data.resolution, config.to_dict(cfg),
                      expert=e["name"])
    edir.mkdir(parents=True, exist_ok=True)
    res = fit(acc, model, opt, CachedFrames(d.cache, e["frames"], cfg.data.slices), val_ds, task, loop, edir,
              resume_from, d.classes, meta, config.to_dict(cfg))
    if res.steps < loop.steps:
        accelerator.print(f"expert {e['name']} stopped at step {res.steps}; resume=auto continues it")
        return None
    # The last weights, never the best on the validation fold (the fold every report scores).
    r = {"name": e["name"], "classes": e["classes"], "checkpoint": str(done.resolve()),
         "val_dice": res.best, "val_per_class": res.per_class, "shard": e.get("shard")}
    if acc.is_main_process:
        (edir / "result.json").write_text(json.dumps(r, indent=1))
    checkpoint.prune_finished(edir, acc)
    return r


def main(argv: list[str] | None = None) -> Path:
    cfg = config.load(ExpertsConfig, sys.argv[1:] if argv is None else argv)
    check_config(cfg.loop, "loop")
    config.check_choices(cfg, segmentation_choices())
    config.check_choices(cfg, {"partition.by": ["bones", "shards"], "partition.groups": sorted(GROUPINGS),
                               "partition.shards": ["kmeans", "hierarchical", "meta"],
                               "partition.meta_field": ["sex", "age", "side"]})
    gate_check(cfg)
    cfg.run_dir = checkpoint.find_resume_run(cfg.resume, cfg.run_dir, "experts")
    accelerator = make_accelerator(cfg.precision)
    run_dir = start_run(cfg, "experts", accelerator)
    d = setup(cfg.data, accelerator, cfg.labels, cfg.eval_resolution)
    experts, shard_info = plan_experts(cfg, d, accelerator)
    accelerator.print(f"{len(experts)} experts ({cfg.partition.by}) on {len(d.labelled)} labelled frames: "
                      + ", ".join(f"{e['name']} ({len(e['classes'])} bones, {len(e['frames'])} images)" for e in experts))
    results = []
    for n, e in enumerate(experts):
        r = train_expert(cfg, d, e, n, run_dir / "experts" / e["name"], cfg.partition.generalist, d.val, accelerator)
        if r is None:
            return run_dir
        results.append(r)
    gate = {}
    if cfg.gate.folds:
        from cosup.gate import run_gate

        gate = run_gate(cfg, d, experts, run_dir, accelerator, train_expert)
        if gate is None:
            return run_dir
    if cfg.partition.crop_groups:
        results = train_crop_experts(cfg, d, results, run_dir, accelerator)
        if results is None:
            return run_dir
    manifest = Manifest(
        partition=cfg.partition.by, classes=d.classes, experts=[Expert(**r) for r in results],
        labelled=d.labelled.tolist(), pool=d.pool.tolist(), val=d.val_idx.tolist(), train=d.train_idx.tolist(),
        cache=str(d.cache.root), data=config.to_dict(cfg)["data"], labels=config.to_dict(cfg)["labels"],
        shards=shard_info, gate=gate)
    if accelerator.is_main_process:
        manifest.save(run_dir / "experts.json")
        for r in results:
            print(f"expert {r['name']}: validation Dice {r['val_dice']:.4f} on its {len(r['classes'])} bones")
        print(f"experts -> {run_dir / 'experts.json'}")
    return run_dir


if __name__ == "__main__":
    run(main)
