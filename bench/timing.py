"""Timing helpers shared by the bench scripts: wall time of n engine steps, counting the wait for batches."""

from __future__ import annotations

import time

import torch


class Timer:
    """``with Timer(device) as t: ...`` -> ``t.seconds`` after a device sync; ``t.wait()`` brackets a data wait."""

    def __init__(self, device):
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self.waited = 0.0
        self._tw = 0.0

    def __enter__(self):
        self.sync()
        self.t0 = time.perf_counter()
        return self

    def data_start(self):
        self._tw = time.perf_counter()

    def data_ready(self):
        self.waited += time.perf_counter() - self._tw

    def __exit__(self, *a):
        self.sync()
        self.seconds = time.perf_counter() - self.t0
        return False


class FixedBatch:
    """A stand-in for :class:`bonekit.engine.EpochLoader` that hands out one batch forever (model-only timing)."""

    def __init__(self, batch: dict, epoch: int = 0):
        self.batch, self.epoch = batch, epoch

    def next(self):
        return self.epoch, self.batch


class TimedLoader:
    """Wraps an :class:`~bonekit.engine.EpochLoader`, measuring how long each ``next`` waits for its batch."""

    def __init__(self, loader, timer: Timer):
        self.loader, self.timer = loader, timer

    def next(self):
        self.timer.data_start()
        out = self.loader.next()
        self.timer.data_ready()
        return out


def split_steps(argv: list[str], default: int = 10) -> tuple[int, list[str]]:
    """``steps=N`` (timed steps) out of a stage's ``key=value`` arguments -> (N, the rest)."""
    n = int(next((a.split("=", 1)[1] for a in argv if a.startswith("steps=")), default))
    return n, [a for a in argv if not a.startswith("steps=")]


def time_steps(accelerator, model, opt, loader, engine_cfg, n: int, loss_of, batch_size: int) -> tuple[float, float]:
    """Images/s and data-wait share of ``n`` engine steps (after one warm-up step), on a flat schedule."""
    from omegaconf import OmegaConf

    from bonekit.engine import optimizer_step

    flat = OmegaConf.merge(engine_cfg, {"steps": 10**6, "warmup": 0})  # a flat schedule: timing only
    optimizer_step(accelerator, model, opt, loader, flat, 0, loss_of)  # warm-up (allocations, autotune, compile)
    with Timer(accelerator.device) as t:
        tl = TimedLoader(loader, t)
        for i in range(n):
            optimizer_step(accelerator, model, opt, tl, flat, i, loss_of)
    return n * batch_size / t.seconds, t.waited / t.seconds
