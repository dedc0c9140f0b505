"""The training engine every stage shares: the epoch loader, the learning-rate schedule, gradient accumulation,
the non-finite check and the optimizer step. Pretraining (``selfsup/``) and segmentation (:mod:`bonekit.loop`)
differ only in the function that turns a micro-batch into a loss.

Written out in the style of Accelerate's examples (``prepare_data_loader``, ``skip_first_batches``, ``no_sync``).
The learning rate is a pure function of the optimizer step, and the data order a pure function of (seed, epoch),
so a run resumed from a checkpoint at step ``s`` sees exactly the batches and rates of an unbroken run.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from bonekit.datasets import epoch_order
from bonekit.schedule import warmup_cosine


@dataclass
class EngineConfig:
    """The optimisation keys of every training stage (``train.*`` in pretraining, ``loop.*`` in segmentation)."""

    steps: int = 150  # optimizer steps of the whole run
    batch_size: int = 8  # global batch per optimizer step (split across processes), before accumulation
    accumulate: int = 1  # gradient accumulation: micro-batches per optimizer step
    optimizer: str = "adamw"  # adamw | sgd (momentum 0.9, Nesterov)
    lr: float = 2e-3  # peak learning rate (linear warm-up, then cosine to 0)
    weight_decay: float = 1e-4  # on weights with 2+ dimensions; none on biases and norm parameters
    warmup: int = 10  # warm-up steps
    save_every: int = 50  # steps between resumable checkpoints
    keep_checkpoints: int = 1  # resumable checkpoints kept (weights + optimizer state); older ones are deleted
    log_every: int = 10  # steps between metric rows
    workers: int = -1  # data-loader processes (-1: 0 on a CPU, where they would take cores from the model; 4 on a GPU)
    seed: int = 0  # weights, data order and augmentation
    stop_at_step: int = 0  # stop after this step (split a run; resume=auto continues it)
    # Below 1 a pretrained encoder moves slower than the random decoder learning to read it (docs/results.md).
    encoder_lr_scale: float = 1.0  # the encoder's learning rate relative to the rest (0: weights held, BN stats adapt)


def check_config(cfg: EngineConfig, prefix: str) -> None:
    """Values no run can use, refused before anything is written (``prefix``: ``loop`` or ``train``)."""
    from bonekit.errors import ConfigError

    for key in ("batch_size", "accumulate", "save_every", "log_every"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{prefix}.{key}={getattr(cfg, key)}: must be >= 1")
    for key in ("steps", "warmup", "keep_checkpoints"):
        if getattr(cfg, key) < 0:
            raise ConfigError(f"{prefix}.{key}={getattr(cfg, key)}: must be >= 0")
    if cfg.lr <= 0:
        raise ConfigError(f"{prefix}.lr={cfg.lr}: must be > 0")
    if cfg.encoder_lr_scale < 0:
        raise ConfigError(f"{prefix}.encoder_lr_scale={cfg.encoder_lr_scale}: must be >= 0")


def param_groups(model: torch.nn.Module, weight_decay: float, encoder_lr_scale: float = 1.0) -> list[dict]:
    """Weight decay on weights with 2+ dimensions; none on biases and normalisation parameters. With
    ``encoder_lr_scale != 1`` the parameters of ``model.encoder`` form groups of their own whose ``lr_scale``
    multiplies the scheduled learning rate (:func:`optimizer_step`); empty groups are left out."""
    params = [p for p in model.parameters() if p.requires_grad]
    encoder_ids: set[int] = set()
    if encoder_lr_scale != 1.0:
        encoder = getattr(model, "encoder", None)
        if not isinstance(encoder, torch.nn.Module):
            raise ValueError(f"encoder_lr_scale={encoder_lr_scale}: {type(model).__name__} has no `encoder` to scale")
        encoder_ids = {id(p) for p in encoder.parameters()}
    groups = []
    for scale, part in ((1.0, [p for p in params if id(p) not in encoder_ids]),
                        (encoder_lr_scale, [p for p in params if id(p) in encoder_ids])):
        for decay, chosen in ((weight_decay, [p for p in part if p.ndim > 1]), (0.0, [p for p in part if p.ndim <= 1])):
            if chosen:
                groups.append({"params": chosen, "weight_decay": decay, "lr_scale": scale})
    return groups


OPTIMIZERS = ("adamw", "sgd")


def make_optimizer(name: str, groups: list[dict], lr: float) -> torch.optim.Optimizer:
    """``adamw`` or ``sgd`` (momentum 0.9, Nesterov). The learning rate is set every step by the schedule."""
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
    raise ValueError(f"optimizer={name!r}: choose adamw or sgd")


def loader_workers(workers: int, device) -> int:
    """``-1`` (auto): no worker processes on a CPU (cache reads take microseconds, and workers compete with the
    model's threads for the same cores: measured 1.64x slower end to end on 2 cores), 4 on a GPU."""
    if workers >= 0:
        return workers
    return 0 if device.type == "cpu" else 4


def micro_batch_size(n_items: int, cfg: EngineConfig, accelerator) -> int:
    """The global micro-batch: ``batch_size``, or the largest split of a tiny label subset (with a note)."""
    if cfg.batch_size < 1 or cfg.accumulate < 1:
        raise ValueError(f"batch_size={cfg.batch_size} and accumulate={cfg.accumulate} must both be >= 1")
    micro = cfg.batch_size
    if n_items < micro:  # a tiny label subset: smaller batches rather than no training
        micro = n_items - n_items % accelerator.num_processes
        accelerator.print(f"note: {n_items} training images < batch_size={cfg.batch_size}: batches of {micro}")
    if micro == 0:
        raise ValueError(f"{n_items} training image(s) cannot be split over {accelerator.num_processes} processes")
    return micro


BLOCK_BATCHES = 512  # batches per DataLoader: its worker processes start once per block, not once per epoch


class EpochLoader:
    """Micro-batches forever, epoch after epoch, each epoch in the order :func:`epoch_order` gives.

    One DataLoader serves a *block* of consecutive epochs (at least :data:`BLOCK_BATCHES` batches): a 5-image label
    subset is one batch per epoch, and a DataLoader per epoch restarted its worker processes every step (measured on
    an H200: 86% of the 5% student's time waiting for data, 4 steps/s against 13 for the ceiling). Each epoch keeps
    only its first ``steps_per_epoch * micro`` items (drop_last per epoch), so batches never straddle two epochs and
    the stream is the one a DataLoader per epoch gives.
    ``start`` is the micro-step to begin at (optimizer step x accumulation on resume): the block's loader skips its
    first batches, so the stream continues exactly where an unbroken run would be.
    """

    def __init__(self, accelerator, dataset: Dataset, micro: int, seed: int, workers: int, start: int = 0):
        self.accelerator, self.dataset, self.micro = accelerator, dataset, micro
        self.seed, self.workers = seed, loader_workers(workers, accelerator.device)
        self.steps_per_epoch = len(dataset) // micro
        if self.steps_per_epoch == 0:
            raise ValueError(f"{len(dataset)} items cannot fill one batch of {micro}")
        self.epochs_per_block = -(-BLOCK_BATCHES // self.steps_per_epoch)
        self.m_step = start
        self.epoch = start // self.steps_per_epoch
        self._it: Iterator | None = None
        self._block_end = 0  # the micro-step at which the open block's loader is spent

    def _open(self) -> None:
        first, pos = divmod(self.m_step, self.steps_per_epoch)
        used = self.steps_per_epoch * self.micro
        order = np.concatenate([epoch_order(len(self.dataset), self.seed, e)[:used]
                                for e in range(first, first + self.epochs_per_block)])
        # Its own generator: starting a DataLoader's iterator draws a base seed, from torch's global generator if
        # none is given, and that draw would move the stream of dropout and copy-paste boxes whenever a loader
        # opens, which a resumed run does at another step than the unbroken one.
        gen = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, 8_888, first]).generate_state(1)[0]))
        dl = DataLoader(Subset(self.dataset, order.tolist()), batch_size=self.micro, drop_last=True,
                        num_workers=self.workers, pin_memory=self.accelerator.device.type == "cuda", generator=gen)
        dl = self.accelerator.prepare_data_loader(dl)
        if pos:
            dl = self.accelerator.skip_first_batches(dl, pos)
        self._it = iter(dl)
        self._block_end = (first + self.epochs_per_block) * self.steps_per_epoch

    def next(self) -> tuple[int, dict]:
        """-> (epoch, batch)."""
        if self._it is None or self.m_step >= self._block_end:
            self._open()
        batch = next(self._it)
        self.epoch = self.m_step // self.steps_per_epoch
        self.m_step += 1
        return self.epoch, batch


@dataclass
class StepResult:
    loss: torch.Tensor  # mean loss over the micro-batches of this step (this process), detached
    lr: float
    images: int  # images this process saw in the step


def optimizer_step(accelerator, model, opt, loader: EpochLoader, cfg: EngineConfig, step: int,
                   loss_of: Callable[[dict, int], torch.Tensor], on_batch: Callable[[], None] | None = None,
                   total: int | None = None) -> StepResult:
    """One optimizer step: set the learning rate of ``step``, accumulate ``cfg.accumulate`` micro-batches
    (``loss_of(batch, epoch)`` each; gradients synchronised on the last one only), stop on a non-finite loss
    naming the step, then step and clear the optimizer."""
    lr = warmup_cosine(step, total or cfg.steps, cfg.lr, cfg.warmup)
    for g in opt.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)
    total_loss = torch.zeros((), device=accelerator.device)
    n_img = 0
    for j in range(cfg.accumulate):
        epoch, batch = loader.next()
        if on_batch:
            on_batch()
        last = j == cfg.accumulate - 1
        ctx = accelerator.no_sync(model) if not last and accelerator.num_processes > 1 else contextlib.nullcontext()
        with ctx:
            loss = loss_of(batch, epoch) / cfg.accumulate
            accelerator.backward(loss)
        total_loss += loss.detach()
        n_img += len(batch["index"])
    # A host sync per step: stop on a non-finite loss before it reaches the weights, naming the step.
    value = total_loss.item()
    if not math.isfinite(value):
        raise FloatingPointError(f"non-finite loss ({value}) at step {step}: lower the learning rate or check the data")
    opt.step()
    opt.zero_grad(set_to_none=True)
    return StepResult(total_loss, lr, n_img)


def prepare_training(accelerator, model: torch.nn.Module, cfg: EngineConfig, channels_last: bool = True,
                     compile: bool = False):
    """Optimizer over :func:`param_groups`, channels-last on a GPU, optional ``torch.compile``, then
    ``accelerator.prepare`` -> (model, optimizer)."""
    if accelerator.device.type == "cuda" and channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = make_optimizer(cfg.optimizer, param_groups(model, cfg.weight_decay, cfg.encoder_lr_scale), cfg.lr)
    if compile:
        model = torch.compile(model)
    return accelerator.prepare(model, opt)
