"""Label-free pretraining of an encoder on raw X-rays.

    accelerate launch selfsup/pretrain.py [config=configs/pretrain.yaml] [key=value ...]

With no arguments it pretrains a resnet18 with DenseCL on the embedded phantom's images (labels ignored) for a
short schedule and writes ``runs/pretrain/<timestamp>/``: config.yaml, encoder.safetensors (timm key names,
strict-loadable by ``smp.Unet("tu-resnet18", encoder_weights=None, in_channels=C)``), metrics.csv, tb/,
loss.png and checkpoints/; ``method.name=mimunet`` also writes decoder.safetensors (the U-Net decoder it trained,
for a student's ``model.init_decoder``). ``resume=auto`` continues the newest run exactly. Throughput: ``python bench/pretrain_speed.py``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from accelerate.utils import set_seed
from omegaconf import OmegaConf
from torch import nn

from bonekit import checkpoint, config
from bonekit.accel import PRECISIONS, make_accelerator
from bonekit.augment import ViewConfig
from bonekit.cache import build
from bonekit.cli import run
from bonekit.config import DataConfig
from bonekit.data import resolve_root
from bonekit.datasets import CachedFrames
from bonekit.distributed import sync_batchnorm
from bonekit.engine import (
    OPTIMIZERS,
    EngineConfig,
    EpochLoader,
    check_config,
    optimizer_step,
    prepare_training,
)
from bonekit.formats import discover
from bonekit.models import make_encoder, save_decoder, save_encoder
from bonekit.runlog import Progress, RunLog, start_run
from bonekit.schedule import momentum_at, warmup_cosine
from selfsup.methods import METHODS
from selfsup.step import ViewPair, method_loss


# ---------------------------------------------------------------------------------------------------- config
@dataclass
class MethodConfig:
    name: str = "densecl"  # densecl | simclr | byol | moco | vicregl | mim | mimunet (mim through a U-Net decoder)
    hidden_dim: int = 512  # projection head hidden width
    out_dim: int = 128  # projection output width
    temperature: float = 0.2  # InfoNCE temperature (densecl, simclr, moco)
    dense_weight: float = 0.5  # DenseCL: share of the dense loss
    dense_level: int = -3  # DenseCL: feature level of the dense loss (-1 deepest, stride 32; -3 stride 8: 12x12 at 96 px)
    momentum: float = 0.99  # EMA start for momentum encoders (cosine to 1.0)
    mask_ratio: float = 0.6  # MIM: share of a view's patches hidden from the encoder
    mask_patch: int = 16  # MIM: side of a hidden patch, pixels (views.size must be a multiple of it and of 32)
    decoder_channels: list[int] = field(default_factory=list)  # mimunet: U-Net widths ([]: smp's) = the student's


@dataclass
class ProbeConfig:
    every: int = 0  # steps between probes (0 = off); also probed before the first step and at the end
    images: int = 8  # labelled images to fit the check's light decoder on, and as many (other people) to score it on
    steps: int = 300  # Adam steps of the light decoder on the frozen features


@dataclass
class PretrainConfig:
    data: DataConfig = field(default_factory=lambda: DataConfig(resolution=128))
    splits: list[str] = field(default_factory=lambda: ["train"])  # splits read (labels ignored); add test knowingly
    include_val: bool = False  # also pretrain on the validation fold's people (data.folds/data.fold)
    encoder: str = "resnet18"  # any timm encoder smp takes as tu-<name>
    method: MethodConfig = field(default_factory=MethodConfig)
    views: ViewConfig = field(default_factory=ViewConfig)
    train: EngineConfig = field(default_factory=lambda: EngineConfig(steps=60, batch_size=32, warmup=5, save_every=25,
                                                                     log_every=5))
    precision: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | bf16 (fp32 on a CPU without hardware bf16) | fp16 | no
    channels_last: bool = True  # channels-last memory format (on GPU)
    compile: bool = False  # torch.compile the model
    run_dir: str = ""  # "" -> runs/pretrain/<timestamp>
    resume: str = ""  # "" | auto | a run folder (its newest checkpoint) | a checkpoint folder
    allow_changed: bool = False  # resume even though the config differs from the saved one
    probe: ProbeConfig = field(default_factory=ProbeConfig)


# ---------------------------------------------------------------------------------------------------- setup
def load_frames(cfg, accelerator) -> tuple:
    """Cache of the images to pretrain on (labels ignored) and the frames used -> (Cache, frame indices).

    By default the validation fold's people and the test split stay out of pretraining, so the encoder has never
    seen the images its downstream Dice is scored on; ``include_val=true`` / ``splits=[train,test]`` put them in,
    and the run says so."""
    from omegaconf import OmegaConf

    from bonekit.splits import train_val

    roots = [Path(cfg.data.root)] if cfg.data.root else []
    with accelerator.main_process_first():  # one process generates the phantom / builds the cache
        if not roots:
            roots = [resolve_root(cfg.data, s) for s in cfg.splits]
        records = [r for root in roots for r in discover(root, labels="ignore")]
        cache = build(records, cfg.data.resolution, list(OmegaConf.to_container(cfg.data.classes)),
                      cfg.data.cache_dir or None, workers=cfg.data.workers, skip_bad=cfg.data.skip_bad,
                      progress=accelerator.is_main_process)
    frames = np.arange(len(cache))
    if not cfg.include_val and len(set(cache.persons)) >= cfg.data.folds:
        # the same person-grouped folds as every segmentation stage (bonekit.segdata.setup)
        train_idx, val_idx = train_val(cache.persons, cfg.data.folds, cfg.data.fold, seed=0)
        if "test" not in cfg.splits or cfg.data.root:
            frames = np.sort(train_idx)
        else:  # the test people form no folds of their own: drop the validation people only
            val_people = {cache.persons[i] for i in val_idx}
            frames = np.array([i for i in range(len(cache)) if cache.persons[i] not in val_people])
    accelerator.print(f"pretraining data: {len(frames)} frames from {', '.join(map(str, roots))}; validation fold "
                      f"{'INCLUDED (include_val=true)' if cfg.include_val else 'excluded'}; test split "
                      f"{'INCLUDED' if 'test' in cfg.splits and not cfg.data.root else 'excluded'}")
    return cache, frames


def make_probe(cfg, accelerator):
    """A function encoder -> probe Dice on the phantom's (or data.root's) labelled images; None when off.

    Runs on the main process only (other processes get NaN): it is a yardstick, not part of the training."""
    if cfg.probe.every <= 0:
        return None
    from selfsup.probe import check_images, probe

    with accelerator.main_process_first():
        lab, train, test = check_images(cfg.data, cfg.probe.images)
    k = len(cfg.data.classes)

    def run(encoder) -> float:
        if not accelerator.is_main_process:
            return float("nan")
        return probe(encoder, lab, train, test, k, accelerator.device, cfg.probe.steps, cfg.data.slices)

    return run


def build_model(cfg, accelerator):
    """Online encoder + method heads (+ momentum copies, made before DDP wrapping) -> (model, optimizer)."""
    if cfg.method.name not in METHODS:
        raise ValueError(f"method.name={cfg.method.name!r} is not one of {sorted(METHODS)}")
    encoder = make_encoder(cfg.encoder, cfg.data.slices)
    model = METHODS[cfg.method.name](encoder, encoder.out_channels[-1], cfg.method)
    model = sync_batchnorm(model, accelerator.device)
    return prepare_training(accelerator, model, cfg.train, cfg.channels_last, cfg.compile)


def main(argv: list[str] | None = None) -> Path:
    # ---- set-up: config, accelerator, run folder, data, model
    cfg = config.load(PretrainConfig, sys.argv[1:] if argv is None else argv)
    check_config(cfg.train, "train")
    config.check_choices(cfg, {"method.name": sorted(METHODS), "precision": PRECISIONS,
                               "train.optimizer": list(OPTIMIZERS)})
    cfg.run_dir, resume_from = checkpoint.find_resume(cfg.resume, cfg.run_dir, "pretrain")
    accelerator = make_accelerator(cfg.precision)
    set_seed(cfg.train.seed)
    if cfg.train.batch_size % accelerator.num_processes:
        raise ValueError(f"train.batch_size={cfg.train.batch_size} must divide by {accelerator.num_processes} processes")
    run_dir = start_run(cfg, "pretrain", accelerator)
    cache, frames = load_frames(cfg, accelerator)
    ds = CachedFrames(cache, frames, slices=cfg.data.slices, with_masks=False)
    if len(ds) < cfg.train.batch_size:
        raise ValueError(f"{len(ds)} images cannot fill one batch of train.batch_size={cfg.train.batch_size}")
    model, opt = build_model(cfg, accelerator)
    start = checkpoint.load(accelerator, resume_from) if resume_from else 0
    if resume_from:
        accelerator.print(f"resumed from {resume_from} at step {start}")
    total = cfg.train.steps
    loader = EpochLoader(accelerator, ds, cfg.train.batch_size, cfg.train.seed, cfg.train.workers,
                         start * cfg.train.accumulate)
    views = ViewPair(OmegaConf.to_object(cfg.views), cfg.train.seed, accelerator.device,
                     accelerator.device.type == "cuda" and cfg.channels_last)
    log = RunLog(run_dir, accelerator.is_main_process, resume_step=start)
    run_probe = make_probe(cfg, accelerator)
    net = accelerator.unwrap_model(model)

    # ---- the loop: engine step; momentum update; log; probe; save
    model.train()
    if run_probe and start == 0:
        log.log(0, probe_dice=run_probe(net.encoder))
    prog = Progress(total, start, f"pretrain {cfg.method.name}", accelerator.is_local_main_process)
    step = start
    while step < total:
        out = optimizer_step(accelerator, model, opt, loader, cfg.train, step,
                             lambda batch, epoch: method_loss(accelerator, model, *views(batch, epoch)),
                             prog.data_ready)
        net.momentum_update(momentum_at(step + 1, total, cfg.method.momentum))
        step += 1
        mean_loss = accelerator.reduce(out.loss, "mean").item()  # the loss of the global batch
        prog.step_done(out.images * accelerator.num_processes, loss=f"{mean_loss:.4f}")
        if step % cfg.train.log_every == 0 or step == total:
            log.log(step, loss=mean_loss, lr=warmup_cosine(step - 1, total, cfg.train.lr, cfg.train.warmup),
                    images_per_s=prog.rate, data_wait=prog.wait_share)
        if run_probe and (step % cfg.probe.every == 0 or step == total):
            d = run_probe(net.encoder)
            log.log(step, probe_dice=d)
            accelerator.print(f"\nencoder check at step {step}: frozen encoder + light decoder, Dice {d:.4f}")
        if step % cfg.train.save_every == 0 or step == total:
            log.flush()
            checkpoint.save(accelerator, run_dir, step, config.to_dict(cfg), keep=cfg.train.keep_checkpoints)
        if cfg.train.stop_at_step and step >= cfg.train.stop_at_step:
            break
    prog.close()

    # ---- outputs
    if accelerator.is_main_process:
        save_encoder(run_dir / "encoder.safetensors", net.encoder, cfg.encoder, cfg.data.slices,
                     extra={"method": cfg.method.name, "steps": step})
        if isinstance(getattr(net, "decoder", None), nn.Module):  # mimunet: the U-Net decoder, for model.init_decoder
            save_decoder(run_dir / "decoder.safetensors", net.decoder, cfg.encoder, cfg.data.slices,
                         list(cfg.method.decoder_channels), extra={"method": cfg.method.name, "steps": step})
        log.plot(["loss"], run_dir / "loss.png", f"{cfg.method.name} / {cfg.encoder}")
        if run_probe:
            log.plot(["probe_dice"], run_dir / "probe.png", "encoder check: frozen encoder + light decoder, Dice")
        log.close()
        print(f"pretraining: {step} steps, {prog.rate:.1f} img/s, data wait {prog.wait_share:.0%}; "
              f"encoder -> {run_dir / 'encoder.safetensors'}"
              + (f", decoder -> {run_dir / 'decoder.safetensors'}" if (run_dir / "decoder.safetensors").is_file() else ""))
    accelerator.wait_for_everyone()
    return run_dir


if __name__ == "__main__":
    run(main)
