"""Label-free pretraining of an encoder on raw X-rays.

    accelerate launch selfsup/pretrain.py [config=configs/pretrain.yaml] [key=value ...]

With no arguments it pretrains a resnet18 with DenseCL on the embedded phantom's images (labels ignored) for a
short schedule and writes ``runs/pretrain/<timestamp>/``: config.yaml, encoder.safetensors (timm key names,
strict-loadable by ``smp.Unet("tu-resnet18", encoder_weights=None, in_channels=C)``), metrics.csv, tb/,
loss.png and checkpoints/. ``resume=auto`` continues the newest run exactly; ``bench=true`` times the loop.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, set_seed
from torch.utils.data import DataLoader, Subset

from bonekit import checkpoint, config
from bonekit.augment import ViewConfig, make_views
from bonekit.cache import build
from bonekit.config import DataConfig
from bonekit.data import resolve_root
from bonekit.datasets import CachedFrames, epoch_order
from bonekit.distributed import sync_batchnorm
from bonekit.formats import discover
from bonekit.models import make_encoder, make_optimizer, save_encoder
from bonekit.runlog import Progress, RunLog, start_run
from bonekit.schedule import momentum_at, warmup_cosine
from selfsup.methods import METHODS


# ---------------------------------------------------------------------------------------------------- config
@dataclass
class MethodConfig:
    name: str = "densecl"  # densecl | simclr | byol | moco | vicregl
    hidden_dim: int = 512
    out_dim: int = 128
    temperature: float = 0.2
    dense_weight: float = 0.5  # DenseCL: share of the dense loss
    momentum: float = 0.99  # EMA start for momentum encoders (cosine to 1.0)


@dataclass
class ViewsConfig:
    size: int = 96
    scale: list[float] = field(default_factory=lambda: [0.3, 1.0])
    rotation: float = 15.0
    flip: float = 0.5
    gamma: list[float] = field(default_factory=lambda: [0.7, 1.4])
    contrast: list[float] = field(default_factory=lambda: [0.7, 1.3])
    noise: list[float] = field(default_factory=lambda: [0.0, 0.04])
    blur_p: float = 0.4


@dataclass
class TrainConfig:
    steps: int = 60
    batch_size: int = 32  # global batch (split across processes)
    optimizer: str = "adamw"  # adamw | sgd (momentum 0.9)
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int = 5
    save_every: int = 25
    log_every: int = 5
    workers: int = 2  # data-loader processes
    seed: int = 0
    stop_at_step: int = 0  # stop early after this step (to split a run; resume=auto continues it)


@dataclass
class ProbeConfig:
    every: int = 0  # steps between probes (0 = off); also probed before the first step and at the end
    images: int = 8  # labelled images to fit the 1x1 head on, and as many to score it on
    steps: int = 60


@dataclass
class PretrainConfig:
    data: DataConfig = field(default_factory=lambda: DataConfig(resolution=128))
    splits: list[str] = field(default_factory=lambda: ["train", "test"])  # phantom splits used (labels ignored)
    encoder: str = "resnet18"
    method: MethodConfig = field(default_factory=MethodConfig)
    views: ViewsConfig = field(default_factory=ViewsConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    precision: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | bf16 | fp16 | no
    channels_last: bool = True  # on GPU
    compile: bool = False
    run_dir: str = ""
    resume: str = ""  # "" | auto | path to a checkpoint folder
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    bench: bool = False
    bench_steps: int = 10


# ---------------------------------------------------------------------------------------------------- setup
def load_frames(cfg, accelerator):
    """Cache of every image under the data root(s), labels ignored. -> (Cache, slices)."""
    from omegaconf import OmegaConf

    roots = [Path(cfg.data.root)] if cfg.data.root else []
    with accelerator.main_process_first():  # one process generates the phantom / builds the cache
        if not roots:
            roots = [resolve_root(cfg.data, s) for s in cfg.splits]
        records = [r for root in roots for r in discover(root, labels="ignore")]
        cache = build(records, cfg.data.resolution, list(OmegaConf.to_container(cfg.data.classes)),
                      cfg.data.cache_dir or None, workers=cfg.data.workers, skip_bad=cfg.data.skip_bad,
                      progress=accelerator.is_main_process)
    return cache


def make_probe(cfg, accelerator):
    """A function encoder -> probe Dice on the phantom's (or data.root's) labelled images; None when off.

    Runs on the main process only (other processes get NaN): it is a yardstick, not part of the training."""
    if cfg.probe.every <= 0:
        return None
    from omegaconf import OmegaConf

    from selfsup.probe import probe

    classes = list(OmegaConf.to_container(cfg.data.classes))
    with accelerator.main_process_first():
        recs = discover(resolve_root(OmegaConf.merge(cfg.data, {"slices": 1}), "train"), labels="required")
        recs = recs[: 2 * cfg.probe.images]
        lab = build(recs, cfg.data.resolution, classes, cfg.data.cache_dir or None, workers=cfg.data.workers,
                    progress=False)
    n = len(lab) // 2
    train, test = list(range(n)), list(range(n, 2 * n))

    def run(encoder) -> float:
        if not accelerator.is_main_process:
            return float("nan")
        return probe(encoder, lab, train, test, len(classes), accelerator.device, cfg.probe.steps)

    return run


def view_config(v) -> ViewConfig:
    return ViewConfig(size=v.size, scale=tuple(v.scale), rotation=v.rotation, flip=v.flip, gamma=tuple(v.gamma),
                      contrast=tuple(v.contrast), noise=tuple(v.noise), blur_p=v.blur_p)


def main(argv: list[str] | None = None) -> Path:
    cfg = config.load(PretrainConfig, sys.argv[1:] if argv is None else argv)
    cfg.run_dir, resume_from = checkpoint.find_resume(cfg.resume, cfg.run_dir, "pretrain")
    cuda = torch.cuda.is_available()
    precision = ("bf16" if cuda else "no") if cfg.precision == "auto" else cfg.precision
    # cpu=True lets torchrun/accelerate start several CPU processes (gloo); the batch size is the global batch.
    accelerator = Accelerator(cpu=not cuda, mixed_precision=precision,
                              dataloader_config=DataLoaderConfiguration(split_batches=True))
    set_seed(cfg.train.seed)
    device = accelerator.device
    if cfg.method.name not in METHODS:
        raise ValueError(f"method.name={cfg.method.name!r} is not one of {sorted(METHODS)}")
    if cfg.train.batch_size % accelerator.num_processes:
        raise ValueError(f"train.batch_size={cfg.train.batch_size} must divide by {accelerator.num_processes} processes")
    run_dir = start_run(cfg, "pretrain", accelerator)

    # Data: uint8 frames from the cache; views are made on the device.
    cache = load_frames(cfg, accelerator)
    ds = CachedFrames(cache, slices=cfg.data.slices, with_masks=False)
    steps_per_epoch = len(ds) // cfg.train.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"{len(ds)} images cannot fill one batch of train.batch_size={cfg.train.batch_size}")
    vcfg = view_config(cfg.views)

    # Model: online encoder + method heads (+ momentum copies, made before DDP wrapping).
    encoder = make_encoder(cfg.encoder, cfg.data.slices)
    feat_dim = encoder.out_channels[-1]
    model = METHODS[cfg.method.name](encoder, feat_dim, cfg.method)
    model = sync_batchnorm(model, device)
    if cuda and cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    opt = make_optimizer(cfg.train.optimizer, groups, cfg.train.lr)
    if cfg.compile:
        model = torch.compile(model)
    model, opt = accelerator.prepare(model, opt)
    start = checkpoint.load(accelerator, resume_from) if resume_from else 0
    if resume_from:
        accelerator.print(f"resumed from {resume_from} at step {start}")
    total = cfg.train.steps
    log = RunLog(run_dir, accelerator.is_main_process, resume_step=start)

    def loader_from(step: int):
        """Batches of the epoch holding ``step``, positioned at ``step`` (skip_first_batches on resume)."""
        epoch, pos = divmod(step, steps_per_epoch)
        order = epoch_order(len(ds), cfg.train.seed, epoch)
        dl = DataLoader(Subset(ds, order.tolist()), batch_size=cfg.train.batch_size, drop_last=True,
                        num_workers=cfg.train.workers, persistent_workers=False, pin_memory=cuda)
        dl = accelerator.prepare_data_loader(dl)
        if pos:
            dl = accelerator.skip_first_batches(dl, pos)
        return epoch, iter(dl)

    def train_step(batch, step: int, epoch: int, ready=None) -> torch.Tensor:
        views, thetas = ready if ready is not None else make_inputs(batch, epoch)
        return optimise(views, thetas, step)

    def make_inputs(batch, epoch: int):
        """uint8 frames -> two augmented views per image, made on the device."""
        x = batch["image"].to(device, non_blocking=True).float().div_(255)
        idx = batch["index"].tolist()
        views, thetas = [], []
        for v in range(2):
            # Seeds keyed by (seed, epoch, frame, view): identical whichever process or resume handles the sample.
            view, th = make_views(x, [(cfg.train.seed, epoch, i, v) for i in idx], vcfg)
            if cuda and cfg.channels_last:
                view = view.contiguous(memory_format=torch.channels_last)
            views.append(view)
            thetas.append(th)
        return views, thetas

    def optimise(views, thetas, step: int) -> torch.Tensor:
        lr = warmup_cosine(step, total, cfg.train.lr, cfg.train.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        with accelerator.autocast():
            loss = model(views, thetas)
        # One host sync per step: fail fast on a non-finite loss, naming the step.
        if not torch.isfinite(loss.detach()).item():
            raise FloatingPointError(f"non-finite loss ({loss.item()}) at step {step}: lower train.lr or check the data")
        accelerator.backward(loss)
        opt.step()
        opt.zero_grad(set_to_none=True)
        accelerator.unwrap_model(model).momentum_update(momentum_at(step + 1, total, cfg.method.momentum))
        return loss.detach()

    if cfg.bench:
        return bench(cfg, accelerator, loader_from, train_step, make_inputs, run_dir)

    run_probe = make_probe(cfg, accelerator)

    model.train()
    if run_probe and start == 0:
        log.log(0, probe_dice=run_probe(accelerator.unwrap_model(model).encoder))
    prog = Progress(total, start, f"pretrain {cfg.method.name}", accelerator.is_local_main_process)
    epoch, it = loader_from(start)
    step = start
    while step < total:
        if step % steps_per_epoch == 0 and step != start:
            epoch, it = loader_from(step)
        batch = next(it)
        prog.data_ready()
        loss = train_step(batch, step, epoch)
        step += 1
        mean_loss = accelerator.reduce(loss, "mean").item()  # the loss of the global batch
        prog.step_done(len(batch["index"]) * accelerator.num_processes, loss=f"{mean_loss:.4f}")
        if step % cfg.train.log_every == 0 or step == total:
            log.log(step, loss=mean_loss, lr=warmup_cosine(step - 1, total, cfg.train.lr, cfg.train.warmup),
                    images_per_s=prog.rate, data_wait=prog.wait_share)
        if run_probe and (step % cfg.probe.every == 0 or step == total):
            d = run_probe(accelerator.unwrap_model(model).encoder)
            log.log(step, probe_dice=d)
            accelerator.print(f"\nprobe at step {step}: frozen encoder + 1x1 head, Dice {d:.4f}")
        if step % cfg.train.save_every == 0 or step == total:
            log.flush()
            checkpoint.save(accelerator, run_dir, step, config.to_dict(cfg))
        if cfg.train.stop_at_step and step >= cfg.train.stop_at_step:
            break
    prog.close()
    if accelerator.is_main_process:
        save_encoder(run_dir / "encoder.safetensors", accelerator.unwrap_model(model).encoder, cfg.encoder,
                     cfg.data.slices, extra={"method": cfg.method.name, "steps": step})
        log.plot(["loss"], run_dir / "loss.png", f"{cfg.method.name} / {cfg.encoder}")
        if run_probe:
            log.plot(["probe_dice"], run_dir / "probe.png", "probe: frozen encoder + 1x1 head, Dice")
        log.close()
        print(f"pretraining: {step} steps, {prog.rate:.1f} img/s, data wait {prog.wait_share:.0%}; "
              f"encoder -> {run_dir / 'encoder.safetensors'}")
    accelerator.wait_for_everyone()
    return run_dir


def bench(cfg, accelerator, loader_from, train_step, make_inputs, run_dir: Path) -> Path:
    """Times the real loop (data + views + step) against the same step on a batch already on the device."""
    n = cfg.bench_steps
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    epoch, it = loader_from(0)
    steps_per_epoch = None
    batch = next(it)
    train_step(batch, 0, epoch)  # warm-up (allocations, cudnn autotune, compile)
    sync()
    # End to end: loader -> device -> views -> step, counting the time spent waiting for batches.
    wait = 0.0
    t0 = time.perf_counter()
    step = 1
    for _ in range(n):
        tw = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            epoch, it = loader_from(step if steps_per_epoch is None else step)
            batch = next(it)
        wait += time.perf_counter() - tw
        train_step(batch, step, epoch)
        step += 1
    sync()
    e2e = time.perf_counter() - t0
    # Model only: forward/backward/step on views already made (no loading, no augmentation).
    ready = make_inputs(batch, epoch)
    t0 = time.perf_counter()
    for _ in range(n):
        train_step(batch, step, epoch, ready)
        step += 1
    sync()
    model_only = time.perf_counter() - t0
    b = cfg.train.batch_size
    r_e2e, r_model = n * b / e2e, n * b / model_only
    msg = (f"bench pretrain {cfg.method.name}/{cfg.encoder} views {cfg.views.size}px batch {b} on "
           f"{accelerator.device} x{accelerator.num_processes} ({accelerator.mixed_precision}): "
           f"end-to-end {r_e2e:.1f} img/s, model-only {r_model:.1f} img/s, ratio {r_e2e / r_model:.0%}, "
           f"data wait {wait / e2e:.0%}")
    accelerator.print(msg)
    if accelerator.is_main_process:
        (run_dir / "bench.txt").write_text(msg + "\n")
    return run_dir


if __name__ == "__main__":
    main()
