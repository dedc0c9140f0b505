"""``bench=true`` for finetune/train.py: the real loop vs the model alone vs a naive loop, in one run.

- end-to-end: cached uint8 frames -> loader -> device -> unpack + augmentation -> step (the real path);
- model-only: the same step on one batch already on the device;
- naive: decode the PNG and rasterise the JSON every step, float32 masks from the loader, then the same step.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from bonekit.cache import pack, resize_image, resize_nearest
from bonekit.formats import competition


class NaiveFrames(Dataset):
    """What a notebook does: read the PNG and the JSON for every sample, every step."""

    def __init__(self, cache, indices, classes, resolution):
        self.frames = [cache.frames[i] for i in indices]
        self.idx = list(indices)
        self.classes, self.r = classes, resolution

    def __len__(self):
        return len(self.frames)

    def __getitem__(self, i):
        f = self.frames[i]
        img = competition.read_image(f["image"])
        mask = competition.read_mask(f["label"], img.shape[0], img.shape[1], self.classes)
        img = resize_image(img, self.r)
        words = resize_nearest(pack(mask), self.r)
        return {"image": torch.from_numpy(img[None]), "words": torch.from_numpy(np.ascontiguousarray(words)),
                "index": self.idx[i]}


def bench(accelerator, model, opt, train_ds, task, cfg, d, run_dir: Path) -> Path:
    n, b = cfg.bench_steps, cfg.loop.batch_size
    dev = accelerator.device
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def step(batch, i, ready=None):
        if ready is None:
            keys = [(0, 0, int(j)) for j in batch["index"].tolist()]
            x, t = task.inputs(batch, keys, i)
        else:  # model only: inputs already made (no loading, unpacking or augmentation)
            x, t = ready
        if dev.type == "cuda" and cfg.loop.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with accelerator.autocast():
            loss = task.loss(model(x), t, i)
        accelerator.backward(loss)
        opt.step()
        opt.zero_grad(set_to_none=True)

    def timed(loader, fixed=None):
        it = iter(loader)
        batch = fixed or next(it)
        ready = None
        if fixed is not None:
            ready = task.inputs(batch, [(0, 0, int(j)) for j in batch["index"].tolist()], 0)
        step(batch, 0, ready)  # warm-up
        sync()
        wait, t0 = 0.0, time.perf_counter()
        for i in range(n):
            if fixed is None:
                tw = time.perf_counter()
                try:
                    batch = next(it)
                except StopIteration:
                    it = iter(loader)
                    batch = next(it)
                wait += time.perf_counter() - tw
            step(batch, i, ready)
        sync()
        dt = time.perf_counter() - t0
        return n * b / dt, wait / dt

    mk = lambda ds: accelerator.prepare_data_loader(DataLoader(ds, batch_size=b, shuffle=True, drop_last=True,  # noqa: E731
                                                               num_workers=cfg.loop.workers, pin_memory=dev.type == "cuda"))
    real = mk(train_ds)
    e2e, wait = timed(real)
    fixed = next(iter(real))
    model_only, _ = timed(real, fixed)
    naive_rate = None
    if d.cache.frames[0]["kind"] == "competition":
        naive_ds = NaiveFrames(d.cache, train_ds.indices, d.classes, cfg.data.resolution)
        with _fp32(accelerator):
            naive_rate, naive_wait = timed(mk(naive_ds))
    # Data side alone, one process (no workers): what one core spends to produce a batch.
    def data_only(ds, m=3):
        dl = DataLoader(ds, batch_size=b, shuffle=True, drop_last=True, num_workers=0)
        it = iter(dl)
        next(it)
        t0 = time.perf_counter()
        got = 0
        for _ in range(m):
            try:
                got += len(next(it)["index"])
            except StopIteration:
                it = iter(dl)
        return got / (time.perf_counter() - t0)

    data_cache = data_only(train_ds)
    data_naive = data_only(NaiveFrames(d.cache, train_ds.indices, d.classes, cfg.data.resolution)) if naive_rate else None
    msg = (f"bench train {cfg.model.arch}/{cfg.model.encoder} {cfg.data.resolution}px batch {b} on {dev} "
           f"x{accelerator.num_processes} ({accelerator.mixed_precision}): end-to-end {e2e:.1f} img/s "
           f"(data wait {wait:.0%}), model-only {model_only:.1f} img/s, ratio {e2e / model_only:.0%}")
    if naive_rate:
        msg += f"; naive loop (PNG+JSON every step, fp32) {naive_rate:.1f} img/s, speed-up {e2e / naive_rate:.1f}x"
        msg += (f"; data side on one core: cache {data_cache:.0f} img/s vs PNG+JSON {data_naive:.0f} img/s "
                f"({data_cache / data_naive:.0f}x)")
    accelerator.print(msg)
    if accelerator.is_main_process:
        (run_dir / "bench.txt").write_text(msg + "\n")
    return run_dir


class _fp32:
    """The naive loop runs in fp32: mixed precision off for its duration."""

    def __init__(self, accelerator):
        self.acc = accelerator

    def __enter__(self):
        self.saved = self.acc.native_amp
        self.acc.native_amp = False
        return self

    def __exit__(self, *a):
        self.acc.native_amp = self.saved
        return False
