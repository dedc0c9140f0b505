"""Throughput of finetune/train.py's loop, in one run: the real engine path vs the model alone vs a naive loop.

    accelerate launch bench/train_speed.py [any finetune/train.py key=value] [steps=10]

- end-to-end: cached uint8 frames -> EpochLoader -> device -> unpack + augmentation -> engine step (the real path);
- model-only: the same engine step on one batch already made (no loading, unpacking or augmentation);
- naive: decode the PNG and rasterise the JSON every step, float32 masks from the loader, then the same step.
Prints one line and writes it to ``<run_dir>/bench.txt``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import set_seed
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere
sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import FixedBatch, split_steps, time_steps  # noqa: E402

from bonekit import config  # noqa: E402
from bonekit.accel import make_accelerator  # noqa: E402
from bonekit.cache import resize_image, resize_nearest  # noqa: E402
from bonekit.datasets import CachedFrames  # noqa: E402
from bonekit.engine import EpochLoader, prepare_training  # noqa: E402
from bonekit.formats import competition  # noqa: E402
from bonekit.maskbits import pack  # noqa: E402
from bonekit.models import build_segmenter  # noqa: E402
from bonekit.runlog import start_run  # noqa: E402
from bonekit.segdata import setup  # noqa: E402
from bonekit.supervised import SupervisedTask  # noqa: E402
from finetune.train import TrainConfig  # noqa: E402  (the schema only: bench times train.py's own config)


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


def main(argv: list[str] | None = None) -> str:
    argv = sys.argv[1:] if argv is None else argv
    n, argv = split_steps(argv)
    cfg = config.load(TrainConfig, argv)
    accelerator = make_accelerator(cfg.precision)
    set_seed(cfg.loop.seed)
    run_dir = start_run(cfg, "bench-train", accelerator)
    d = setup(cfg.data, accelerator, cfg.labels, cfg.eval_resolution, with_val=False)
    k = len(d.classes)
    train_ds = CachedFrames(d.cache, d.labelled, cfg.data.slices)
    task = SupervisedTask(k, list(range(k)), OmegaConf.to_object(cfg.aug), d.classes, cfg.loss, None, cfg.crop)
    model, opt = prepare_training(accelerator, build_segmenter(cfg.model, cfg.data.slices, k, accelerator.device),
                                  cfg.loop, cfg.loop.channels_last, cfg.loop.compile)
    dev = accelerator.device
    b = cfg.loop.batch_size

    def loss_of(batch, epoch, ready=None):
        x, t = ready if ready is not None else task.inputs(batch, [(0, epoch, int(j)) for j in batch["index"].tolist()], 0)
        if dev.type == "cuda" and cfg.loop.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with accelerator.autocast():
            return task.loss(model(x), t, 0)

    def timed(loader, fn) -> tuple[float, float]:
        return time_steps(accelerator, model, opt, loader, cfg.loop, n, fn, b)

    real = EpochLoader(accelerator, train_ds, b, cfg.loop.seed, cfg.loop.workers)
    e2e, wait = timed(real, loss_of)
    _, fixed = real.next()
    ready = task.inputs(fixed, [(0, 0, int(j)) for j in fixed["index"].tolist()], 0)
    model_only, _ = timed(FixedBatch(fixed), lambda batch, epoch: loss_of(batch, epoch, ready))
    naive_rate = None
    if d.cache.frames[0]["kind"] == "competition":
        naive_ds = NaiveFrames(d.cache, train_ds.indices, d.classes, cfg.data.resolution)
        with _fp32(accelerator):
            naive_rate, _ = timed(EpochLoader(accelerator, naive_ds, b, cfg.loop.seed, cfg.loop.workers), loss_of)

    def data_only(ds, m=3):
        """Data side alone, one process (no workers): what one core spends to produce a batch."""
        dl = DataLoader(ds, batch_size=b, shuffle=True, drop_last=True, num_workers=0)
        next(iter(dl))  # warm-up
        t0, got, it = time.perf_counter(), 0, iter(dl)
        for _ in range(m):
            try:
                got += len(next(it)["index"])
            except StopIteration:  # a tiny data set: start another pass
                it = iter(dl)
                got += len(next(it)["index"])
        return got / (time.perf_counter() - t0)

    msg = (f"bench train {cfg.model.arch}/{cfg.model.encoder} {cfg.data.resolution}px batch {b} on {dev} "
           f"x{accelerator.num_processes} ({accelerator.mixed_precision}): end-to-end {e2e:.1f} img/s "
           f"(data wait {wait:.0%}), model-only {model_only:.1f} img/s, ratio {e2e / model_only:.0%}")
    if naive_rate:
        data_cache = data_only(train_ds)
        data_naive = data_only(NaiveFrames(d.cache, train_ds.indices, d.classes, cfg.data.resolution))
        msg += f"; naive loop (PNG+JSON every step, fp32) {naive_rate:.1f} img/s, speed-up {e2e / naive_rate:.1f}x"
        msg += (f"; data side on one core: cache {data_cache:.0f} img/s vs PNG+JSON {data_naive:.0f} img/s "
                f"({data_cache / data_naive:.0f}x)")
    accelerator.print(msg)
    if accelerator.is_main_process:
        (run_dir / "bench.txt").write_text(msg + "\n")
    return msg


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


if __name__ == "__main__":
    main()
