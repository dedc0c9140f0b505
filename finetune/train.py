"""Supervised fine-tuning of a 2.5D segmentation model (Dice per bone on a person-grouped validation fold).

    accelerate launch finetune/train.py [config=FILE.yaml] [key=value ...]
    accelerate launch finetune/train.py labels.fraction=0.05 model.init=runs/pretrain/<run>/encoder.safetensors

Writes ``runs/train/<timestamp>/``: config.yaml, best.safetensors (by validation Dice), last.safetensors,
metrics.csv, tb/, loss.png, val_dice.png, checkpoints/. ``resume=auto`` continues exactly; ``bench=true`` times
the real loop against the model alone and a naive loop.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, set_seed

from bonekit import checkpoint, config
from bonekit.config import DataConfig
from bonekit.datasets import CachedFrames
from bonekit.distributed import sync_batchnorm
from bonekit.loop import LoopConfig, fit
from bonekit.models import load_encoder, make_optimizer, make_segmenter
from bonekit.runlog import start_run
from bonekit.segdata import setup
from finetune.task import AugConfig, ModelConfig, SupervisedTask, seg_aug_config


@dataclass
class LabelsConfig:
    fraction: float = 1.0  # nested label subset of the training folds; the rest is the unlabelled pool
    seed: int = 0


@dataclass
class TrainConfig:
    # 128 px keeps the default run to minutes on a 2-core CPU; use 512/1024 on a GPU.
    data: DataConfig = field(default_factory=lambda: DataConfig(resolution=128))
    model: ModelConfig = field(default_factory=ModelConfig)
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    aug: AugConfig = field(default_factory=AugConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    loss: str = "bce_dice"  # bce_dice | bce | dice | focal | jaccard | focal_dice
    class_weights: list[float] = field(default_factory=list)  # one per class, or empty
    eval_resolution: int = 0  # 0: each label's own resolution (2048 for competition data)
    crop: int = 0  # train on random crops of this size, infer with a sliding window (0: whole image)
    precision: str = "auto"  # auto (bf16 on GPU) | bf16 | fp16 | no
    run_dir: str = ""
    resume: str = ""  # "" | auto | checkpoint folder
    bench: bool = False
    bench_steps: int = 10


def make_accelerator(precision: str) -> Accelerator:
    cuda = torch.cuda.is_available()
    mp = ("bf16" if cuda else "no") if precision == "auto" else precision
    return Accelerator(cpu=not cuda, mixed_precision=mp, dataloader_config=DataLoaderConfiguration(split_batches=True))


def build_model(mcfg, in_channels: int, n_out: int, device) -> torch.nn.Module:
    model = make_segmenter(mcfg.arch, mcfg.encoder, in_channels, n_out)
    if mcfg.init not in ("", "scratch"):
        load_encoder(model, mcfg.init, mcfg.encoder, in_channels)
    return sync_batchnorm(model, device)


def prepare(accelerator, model, lcfg):
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    opt = make_optimizer(lcfg.optimizer, [{"params": decay, "weight_decay": lcfg.weight_decay},
                                          {"params": no_decay, "weight_decay": 0.0}], lcfg.lr)
    if accelerator.device.type == "cuda" and lcfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if lcfg.compile:
        model = torch.compile(model)
    return accelerator.prepare(model, opt)


def main(argv: list[str] | None = None) -> Path:
    cfg = config.load(TrainConfig, sys.argv[1:] if argv is None else argv)
    cfg.run_dir, resume_from = checkpoint.find_resume(cfg.resume, cfg.run_dir, "train")
    accelerator = make_accelerator(cfg.precision)
    set_seed(cfg.loop.seed)
    if cfg.loop.batch_size % accelerator.num_processes:
        raise ValueError(f"loop.batch_size={cfg.loop.batch_size} must divide by {accelerator.num_processes} processes")
    run_dir = start_run(cfg, "train", accelerator)
    d = setup(cfg.data, accelerator, cfg.labels.fraction, cfg.labels.seed, cfg.eval_resolution)
    k = len(d.classes)
    if cfg.class_weights and len(cfg.class_weights) != k:
        raise ValueError(f"class_weights has {len(cfg.class_weights)} values for {k} classes")
    accelerator.print(f"data: {len(d.train_idx)} training frames ({len(d.labelled)} labelled, "
                      f"{len(d.pool)} in the unlabelled pool), {len(d.val_idx)} validation frames")
    train_ds = CachedFrames(d.cache, d.labelled, cfg.data.slices)
    task = SupervisedTask(k, list(range(k)), seg_aug_config(cfg.aug, d.classes), cfg.loss,
                          list(cfg.class_weights) or None, cfg.aug.clahe_p, cfg.crop)
    model = build_model(cfg.model, cfg.data.slices, k, accelerator.device)
    model, opt = prepare(accelerator, model, cfg.loop)
    meta = {"arch": cfg.model.arch, "encoder": cfg.model.encoder, "in_channels": cfg.data.slices,
            "classes": d.classes, "resolution": cfg.data.resolution, "crop": cfg.crop, "config": config.to_dict(cfg)}
    if cfg.bench:
        from finetune.bench import bench

        return bench(accelerator, model, opt, train_ds, task, cfg, d, run_dir)
    res = fit(accelerator, model, opt, train_ds, d.val, task, cfg.loop, run_dir, resume_from, d.classes, meta,
              config.to_dict(cfg))
    accelerator.print(f"fine-tuning: {res.steps} steps, {res.images_per_s:.1f} img/s, data wait {res.data_wait:.0%}; "
                      f"best validation Dice {res.best:.4f} at epoch {res.best_epoch} -> {run_dir / 'best.safetensors'}")
    return run_dir


if __name__ == "__main__":
    main()
