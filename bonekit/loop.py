"""The one segmentation training loop: experts, distillation and fine-tuning differ only in their Task
(how a batch becomes inputs and targets, and the loss).

Written out in the style of Accelerate's examples: ``prepare``, ``skip_first_batches``, ``gather_for_metrics``.
The learning rate is a pure function of the optimizer step and data order/augmentation are pure functions of
(seed, epoch, frame), so ``resume=auto`` reproduces an unbroken run. Checkpoints every ``save_every`` steps and
the best model by validation Dice (``best.safetensors``); a non-finite loss stops the run naming the step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader

from bonekit import checkpoint
from bonekit.engine import (
    EngineConfig,
    EpochLoader,
    loader_workers,
    micro_batch_size,
    optimizer_step,
)
from bonekit.maskbits import unpack
from bonekit.metrics import (
    DiceTable,
    counts_from_logits,
    format_per_class,
    summarise,
    volume_dice,
)
from bonekit.models import link_or_copy, save_model
from bonekit.runlog import Progress, RunLog
from bonekit.tiles import sliding_window


@dataclass
class LoopConfig(EngineConfig):
    """The ``loop.*`` keys of every segmentation stage: the engine's plus validation and device options."""

    eval_every: int = 50  # steps between validations (0: only at the end)
    channels_last: bool = True  # channels-last memory format (on GPU)
    compile: bool = False  # torch.compile the model
    val_batch_size: int = 4  # validation images per process


class Task(Protocol):
    """What a caller of :func:`fit` supplies."""

    out_classes: list[int]  # indices into the data's class list that the model outputs (for validation)

    def inputs(self, batch: dict, keys: list[tuple[int, ...]], step: int) -> tuple[torch.Tensor, dict]:
        """Batch from the loader (on the device) -> (model input ``[B, C, R, R]``, targets for :meth:`loss`)."""

    def loss(self, logits: torch.Tensor, targets: dict, step: int) -> torch.Tensor:
        ...


@dataclass
class FitResult:
    best: float = -1.0
    best_epoch: int = -1
    best_step: int = -1
    per_class: list[float] = field(default_factory=list)
    steps: int = 0
    images_per_s: float = 0.0
    data_wait: float = 0.0


@torch.no_grad()
def validate(accelerator, model, loader, n_classes: int, out_classes: list[int], threshold=0.5,
             channels_last: bool = False, tile: int = 0, gather: bool = True,
             volume_of: dict[int, str] | None = None) -> np.ndarray:
    """Dice ``[N, K_out]`` per (image, class) at the label resolution, counted on the device. ``gather=False`` for a
    plain loader that one process reads whole (no collective call: the other processes may not be there).
    ``volume_of`` (frame number -> volume name, for slices of volumes): Dice ``[V, K_out]`` per volume in 3D instead
    (counts summed over each volume's slices, :func:`bonekit.metrics.volume_dice`)."""
    model.eval()
    table = DiceTable()
    frames = []
    for batch in loader:
        x = batch["image"].float().div_(255)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with accelerator.autocast():
            if getattr(model, "takes_frames", False) and not tile:  # e.g. crop experts: their own source images
                logits = model(x, frames=batch["index"].tolist())
            else:
                logits = sliding_window(model, x, tile) if tile else model(x)
        target = unpack(batch["words"], n_classes)[:, out_classes]
        # Upsampling and thresholding at the label's resolution happen one image at a time to bound memory.
        rows = [torch.stack(counts_from_logits(logits[i : i + 1].float(), target[i : i + 1], threshold), 1)
                for i in range(len(x))]
        c = torch.cat(rows)  # [n, 3, K]: small integers only
        if volume_of:  # the frame of each row travels with its counts (to group them by volume)
            idx = torch.as_tensor(batch["index"], device=c.device)
            if gather:
                c, idx = accelerator.gather_for_metrics((c, idx))
            frames += idx.tolist()
        elif gather:
            c = accelerator.gather_for_metrics(c)
        table.add(c[:, 0], c[:, 1], c[:, 2])
    model.train()
    if volume_of:
        return volume_dice(table.counts(), [volume_of[f] for f in frames])[0]
    return table.dice()


def fit(accelerator, model, opt, train_ds, val_ds, task: Task, cfg: LoopConfig, run_dir: Path,
        resume_from: Path | None, class_names: list[str], model_meta: dict, config_dict: dict,
        log_extra: Callable[[int], dict] | None = None) -> FitResult:
    """Train ``model`` on ``train_ds`` (CachedFrames items) for ``cfg.steps`` optimizer steps."""
    cuda = accelerator.device.type == "cuda"
    micro = micro_batch_size(len(train_ds), cfg, accelerator)
    res = FitResult()
    start = 0
    if resume_from:
        start, extra = checkpoint.load_with_extra(accelerator, resume_from)
        res.best, res.best_epoch, res.best_step = extra.get("best", -1.0), extra.get("best_epoch", -1), extra.get("best_step", -1)
        accelerator.print(f"resumed from {resume_from} at step {start}")
    log = RunLog(run_dir, accelerator.is_main_process, resume_step=start)
    val_loader = None
    if val_ds is not None and len(val_ds):
        val_loader = accelerator.prepare_data_loader(
            DataLoader(val_ds, batch_size=cfg.val_batch_size * accelerator.num_processes,
                       num_workers=loader_workers(cfg.workers, accelerator.device)))
    out_names = [class_names[i] for i in task.out_classes]
    # Slices of volumes are scored per volume in 3D (per-slice Dice rewards empty predictions: metrics.volume_dice).
    volume_of = val_ds.volume_of() if val_loader is not None and hasattr(val_ds, "volume_of") else None
    loader = EpochLoader(accelerator, train_ds, micro, cfg.seed, cfg.workers, start * cfg.accumulate)
    steps_per_epoch = loader.steps_per_epoch

    def run_validation(step: int) -> None:
        dice = validate(accelerator, model, val_loader, len(class_names), task.out_classes,
                        channels_last=cuda and cfg.channels_last, tile=getattr(task, "crop", 0), volume_of=volume_of)
        per_class, mean = summarise(dice)
        epoch = step * cfg.accumulate // steps_per_epoch  # epochs of micro-batches, as the loader counts them
        log.log(step, val_dice=mean)
        if accelerator.is_main_process:
            print("\n" + format_per_class(out_names, per_class))
            old = res.best
            if mean > res.best:
                res.best, res.best_epoch, res.best_step, res.per_class = mean, epoch, step, per_class.tolist()
                save_model(run_dir / "best.safetensors", accelerator.unwrap_model(model), model_meta)
            if old < 0:
                change = f"first validation {mean:.4f}"
            elif mean > old:
                change = f"{old:.4f} -> {mean:.4f}"
            else:
                change = f"no improvement ({mean:.4f} now)"
            print(f"Best performance at epoch: {res.best_epoch} (step {res.best_step}), {change}")
        flag = [res.best, res.best_epoch, res.best_step]
        from accelerate.utils import broadcast_object_list

        if accelerator.num_processes > 1:
            broadcast_object_list(flag, from_process=0)
        res.best, res.best_epoch, res.best_step = flag

    def loss_of(batch: dict, epoch: int) -> torch.Tensor:
        # Augmentation keys (seed, epoch, frame): the same sample gets the same augmentation on any process/resume.
        keys = [(cfg.seed, epoch, int(i)) for i in batch["index"].tolist()]
        x, targets = task.inputs(batch, keys, step)
        if cuda and cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with accelerator.autocast():
            # A task may run the forward pass itself (distillation: labelled and pool parts apart, kd.separate_bn)
            logits = task.forward(model, x, targets) if hasattr(task, "forward") else model(x)
        return task.loss(logits, targets, step)

    model.train()
    prog = Progress(cfg.steps, start, "train", accelerator.is_local_main_process)
    step = start
    while step < cfg.steps:
        out = optimizer_step(accelerator, model, opt, loader, cfg, step, loss_of, prog.data_ready)
        lr = out.lr
        step += 1
        mean_loss = accelerator.reduce(out.loss, "mean").item()
        prog.step_done(out.images * accelerator.num_processes, loss=f"{mean_loss:.4f}")
        if step % cfg.log_every == 0 or step == cfg.steps:
            extra = log_extra(step) if log_extra else {}
            log.log(step, loss=mean_loss, lr=lr, images_per_s=prog.rate, data_wait=prog.wait_share, **extra)
        if val_loader is not None and ((cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps):
            run_validation(step)
        if step % cfg.save_every == 0 or step == cfg.steps:
            log.flush()
            checkpoint.save(accelerator, run_dir, step, config_dict, keep=cfg.keep_checkpoints,
                            extra={"best": res.best, "best_epoch": res.best_epoch, "best_step": res.best_step})
        if cfg.stop_at_step and step >= cfg.stop_at_step:
            break
    prog.close()
    if cfg.steps == 0 and val_loader is not None:  # no training (an expert taken as it is): still scored
        run_validation(0)
    res.steps, res.images_per_s, res.data_wait = step, prog.rate, prog.wait_share
    finished = step >= cfg.steps  # a run stopped early (stop_at_step) is not finished: no last.safetensors
    if accelerator.is_main_process and finished:
        if res.best_step == step and (run_dir / "best.safetensors").is_file():
            # The best model is the final one (always so without eval_every): one file on disk, two names.
            link_or_copy(run_dir / "best.safetensors", run_dir / "last.safetensors")
        else:
            save_model(run_dir / "last.safetensors", accelerator.unwrap_model(model), model_meta)
    if accelerator.is_main_process:
        log.plot(["loss"], run_dir / "loss.png", "training loss")
        if any("val_dice" in r for r in log.rows):
            log.plot(["val_dice"], run_dir / "val_dice.png", "validation Dice")
        log.close()
    accelerator.wait_for_everyone()
    return res

