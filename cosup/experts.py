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

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import set_seed

from bonekit import checkpoint, config
from bonekit.config import DataConfig
from bonekit.datasets import CachedFrames
from bonekit.loop import LoopConfig, fit
from bonekit.models import load_encoder, make_encoder
from bonekit.runlog import latest_run, start_run
from bonekit.segdata import setup
from cosup import partition as P
from finetune.task import AugConfig, ModelConfig, SupervisedTask, seg_aug_config
from finetune.train import LabelsConfig, build_model, make_accelerator, prepare


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


@dataclass
class ExpertsConfig:
    data: DataConfig = field(default_factory=lambda: DataConfig(resolution=128))
    labels: LabelsConfig = field(default_factory=lambda: LabelsConfig(fraction=0.1))
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    aug: AugConfig = field(default_factory=AugConfig)
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(steps=100, eval_every=0))
    loss: str = "bce_dice"
    eval_resolution: int = 0
    precision: str = "auto"
    run_dir: str = ""
    resume: str = ""  # "" | auto


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


def main(argv: list[str] | None = None) -> Path:
    cfg = config.load(ExpertsConfig, sys.argv[1:] if argv is None else argv)
    if cfg.resume == "auto" and not cfg.run_dir:
        cfg.run_dir = latest_run("experts")
    accelerator = make_accelerator(cfg.precision)
    run_dir = start_run(cfg, "experts", accelerator)
    d = setup(cfg.data, accelerator, cfg.labels.fraction, cfg.labels.seed, cfg.eval_resolution)
    experts, shard_info = plan_experts(cfg, d, accelerator)
    accelerator.print(f"{len(experts)} experts ({cfg.partition.by}) on {len(d.labelled)} labelled frames: "
                      + ", ".join(f"{e['name']} ({len(e['classes'])} bones, {len(e['frames'])} images)" for e in experts))
    lookup = {c: i for i, c in enumerate(d.classes)}
    results = []
    for n, e in enumerate(experts):
        edir = run_dir / "experts" / e["name"]
        done = edir / "last.safetensors"
        if done.is_file():  # finished in an earlier, interrupted run
            accelerator.print(f"expert {e['name']}: done, skipped")
            results.append(json.loads((edir / "result.json").read_text()))
            continue
        resume_from = checkpoint.latest(edir) if cfg.resume else None
        acc = make_accelerator(cfg.precision)  # one Accelerator per expert: its state holds one model
        set_seed(cfg.loop.seed + 1000 * n)  # initial weights depend on the expert only (resume-safe)
        out = [lookup[c] for c in e["classes"]]
        model = build_model(cfg.model, cfg.data.slices, len(out), acc.device)
        model, opt = prepare(acc, model, cfg.loop)
        task = SupervisedTask(len(d.classes), out, seg_aug_config(cfg.aug, d.classes), cfg.loss, None, cfg.aug.clahe_p)
        meta = {"arch": cfg.model.arch, "encoder": cfg.model.encoder, "in_channels": cfg.data.slices,
                "classes": e["classes"], "resolution": cfg.data.resolution, "config": config.to_dict(cfg),
                "expert": e["name"]}
        edir.mkdir(parents=True, exist_ok=True)
        res = fit(acc, model, opt, CachedFrames(d.cache, e["frames"], cfg.data.slices), d.val, task, cfg.loop, edir,
                  resume_from, d.classes, meta, config.to_dict(cfg))
        if res.steps < cfg.loop.steps:
            accelerator.print(f"expert {e['name']} stopped at step {res.steps}; resume=auto continues it")
            return run_dir
        r = {"name": e["name"], "classes": e["classes"], "checkpoint": str((edir / "best.safetensors").resolve()),
             "val_dice": res.best, "val_per_class": res.per_class, "shard": e.get("shard")}
        if acc.is_main_process:
            (edir / "result.json").write_text(json.dumps(r, indent=1))
        results.append(r)
        del model, opt
    manifest = {
        "partition": cfg.partition.by, "classes": d.classes, "experts": results,
        "labelled": d.labelled.tolist(), "pool": d.pool.tolist(), "val": d.val_idx.tolist(),
        "train": d.train_idx.tolist(), "cache": str(d.cache.root), "data": config.to_dict(cfg)["data"],
        "labels": config.to_dict(cfg)["labels"], "shards": shard_info,
    }
    if accelerator.is_main_process:
        (run_dir / "experts.json").write_text(json.dumps(manifest, indent=1))
        for r in results:
            print(f"expert {r['name']}: validation Dice {r['val_dice']:.4f} on its {len(r['classes'])} bones")
        print(f"experts -> {run_dir / 'experts.json'}")
    return run_dir


if __name__ == "__main__":
    main()
