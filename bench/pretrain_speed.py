"""Throughput of selfsup/pretrain.py's loop, in one run: the real engine path vs the same step on ready views.

    accelerate launch bench/pretrain_speed.py [any selfsup/pretrain.py key=value] [steps=10]

- end-to-end: cached uint8 frames -> EpochLoader -> device -> two augmented views -> method loss -> engine step;
- model-only: the same engine step on views already made (no loading, no augmentation).
Prints one line and writes it to ``<run_dir>/bench.txt``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from accelerate.utils import set_seed
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere
sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import FixedBatch, split_steps, time_steps  # noqa: E402

from bonekit import config  # noqa: E402
from bonekit.accel import make_accelerator  # noqa: E402
from bonekit.datasets import CachedFrames  # noqa: E402
from bonekit.engine import EpochLoader  # noqa: E402
from bonekit.runlog import start_run  # noqa: E402
from selfsup.pretrain import PretrainConfig, build_model, load_frames  # noqa: E402  (set-up pieces, not main)
from selfsup.step import ViewPair, method_loss  # noqa: E402


def main(argv: list[str] | None = None) -> str:
    argv = sys.argv[1:] if argv is None else argv
    n, argv = split_steps(argv)
    cfg = config.load(PretrainConfig, argv)
    accelerator = make_accelerator(cfg.precision)
    set_seed(cfg.train.seed)
    run_dir = start_run(cfg, "bench-pretrain", accelerator)
    cache, frames = load_frames(cfg, accelerator)
    ds = CachedFrames(cache, frames, slices=cfg.data.slices, with_masks=False)
    model, opt = build_model(cfg, accelerator)
    dev = accelerator.device
    views = ViewPair(OmegaConf.to_object(cfg.views), cfg.train.seed, dev, dev.type == "cuda" and cfg.channels_last)

    def timed(loader, fn) -> tuple[float, float]:
        return time_steps(accelerator, model, opt, loader, cfg.train, n, fn, cfg.train.batch_size)

    real = EpochLoader(accelerator, ds, cfg.train.batch_size, cfg.train.seed, cfg.train.workers)
    e2e, wait = timed(real, lambda batch, epoch: method_loss(accelerator, model, *views(batch, epoch)))
    _, fixed = real.next()
    ready = views(fixed, 0)
    model_only, _ = timed(FixedBatch(fixed), lambda batch, epoch: method_loss(accelerator, model, *ready))
    msg = (f"bench pretrain {cfg.method.name}/{cfg.encoder} views {cfg.views.size}px batch {cfg.train.batch_size} on "
           f"{dev} x{accelerator.num_processes} ({accelerator.mixed_precision}): end-to-end {e2e:.1f} img/s, "
           f"model-only {model_only:.1f} img/s, ratio {e2e / model_only:.0%}, data wait {wait:.0%}")
    accelerator.print(msg)
    if accelerator.is_main_process:
        (run_dir / "bench.txt").write_text(msg + "\n")
    return msg


if __name__ == "__main__":
    main()
