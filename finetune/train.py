"""Supervised fine-tuning of a 2.5D segmentation model (Dice per bone on a person-grouped validation fold).

    accelerate launch finetune/train.py [config=FILE.yaml] [key=value ...]
    accelerate launch finetune/train.py labels.fraction=0.05 model.init=runs/pretrain/<run>/encoder.safetensors

Writes ``runs/train/<timestamp>/``: config.yaml, best.safetensors (by validation Dice), last.safetensors,
metrics.csv, tb/, loss.png, val_dice.png, checkpoints/. ``resume=auto`` continues exactly. Throughput of this
loop: ``python bench/train_speed.py``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from accelerate.utils import set_seed
from omegaconf import OmegaConf

from bonekit import checkpoint, config
from bonekit.accel import make_accelerator
from bonekit.cli import run
from bonekit.config import DataConfig, LabelsConfig
from bonekit.datasets import CachedFrames
from bonekit.engine import check_config, prepare_training
from bonekit.loop import LoopConfig, fit
from bonekit.models import (
    ModelConfig,
    build_segmenter,
    model_meta,
    segmentation_choices,
)
from bonekit.runlog import start_run
from bonekit.seg_augment import SegAugConfig
from bonekit.segdata import setup
from bonekit.supervised import SupervisedTask


@dataclass
class TrainConfig:
    # 128 px keeps the default run to minutes on a 2-core CPU; use 512/1024 on a GPU.
    data: DataConfig = field(default_factory=lambda: DataConfig(resolution=128))
    model: ModelConfig = field(default_factory=ModelConfig)
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    aug: SegAugConfig = field(default_factory=SegAugConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    loss: str = "bce_dice"  # bce_dice | bce | dice | focal | jaccard | focal_dice | bce_batch_dice (volumes)
    class_weights: list[float] = field(default_factory=list)  # one per class, or empty
    eval_resolution: int = 0  # 0: each label's own resolution (2048 for competition data)
    crop: int = 0  # train on random crops of this size, infer with a sliding window (0: whole image)
    precision: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | bf16 (fp32 on a CPU without hardware bf16) | fp16 | no
    run_dir: str = ""  # "" -> runs/train/<timestamp>
    resume: str = ""  # "" | auto | a run folder (its newest checkpoint) | a checkpoint folder
    allow_changed: bool = False  # resume even though the config differs from the saved one


def main(argv: list[str] | None = None) -> Path:
    cfg = config.load(TrainConfig, sys.argv[1:] if argv is None else argv)
    check_config(cfg.loop, "loop")
    config.check_choices(cfg, segmentation_choices())
    cfg.run_dir, resume_from = checkpoint.find_resume(cfg.resume, cfg.run_dir, "train")
    accelerator = make_accelerator(cfg.precision)
    set_seed(cfg.loop.seed)
    if cfg.loop.batch_size % accelerator.num_processes:
        raise ValueError(f"loop.batch_size={cfg.loop.batch_size} must divide by {accelerator.num_processes} processes")
    run_dir = start_run(cfg, "train", accelerator)
    d = setup(cfg.data, accelerator, cfg.labels, cfg.eval_resolution)
    k = len(d.classes)
    if cfg.class_weights and len(cfg.class_weights) != k:
        raise ValueError(f"class_weights has {len(cfg.class_weights)} values for {k} classes")
    train_ds = CachedFrames(d.cache, d.labelled, cfg.data.slices)
    task = SupervisedTask(k, list(range(k)), OmegaConf.to_object(cfg.aug), d.classes, cfg.loss,
                          list(cfg.class_weights) or None, cfg.crop)
    model = build_segmenter(cfg.model, cfg.data.slices, k, accelerator.device)
    model, opt = prepare_training(accelerator, model, cfg.loop, cfg.loop.channels_last, cfg.loop.compile)
    meta = model_meta(cfg.model, cfg.data.slices, d.classes, cfg.data.resolution, config.to_dict(cfg), crop=cfg.crop)
    res = fit(accelerator, model, opt, train_ds, d.val, task, cfg.loop, run_dir, resume_from, d.classes, meta,
              config.to_dict(cfg))
    accelerator.print(f"fine-tuning: {res.steps} steps, {res.images_per_s:.1f} img/s, data wait {res.data_wait:.0%}; "
                      f"best validation Dice {res.best:.4f} at epoch {res.best_epoch} -> {run_dir / 'best.safetensors'}")
    return run_dir


if __name__ == "__main__":
    run(main)
