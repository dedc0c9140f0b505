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
