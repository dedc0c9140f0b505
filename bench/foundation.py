"""Foundation figures: cache read time, RLE encode time vs the common loop, Dice agreement with numpy.

    python bench/foundation.py            # prints the figures recorded in docs/benchmarks.md
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from bonekit import cache, metrics, rle  # noqa: E402
from bonekit.classes import HAND29  # noqa: E402
from bonekit.formats import competition, discover  # noqa: E402


def timeit(fn, n: int) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1000.0


def main() -> None:
    torch.set_num_threads(1)
    from conftest import make_competition

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        split = make_competition(tmp / "train", people=4, size=2048, seed=0)
        recs = discover(split)
        t0 = time.perf_counter()
        c = cache.build(recs, 1024, HAND29, tmp / "cache", workers=2, progress=False)
        build_s = time.perf_counter() - t0
        rng = np.random.default_rng(0)
        order = rng.integers(0, len(c), 200)
        it = iter(np.tile(order, 10))
        read_ms = timeit(lambda: c.read(int(next(it))), 200)
        img, words = c.read(0)
        unpack_ms = timeit(lambda: cache.unpack(torch.from_numpy(words), 29), 20)
        print(f"cache: built {len(c)} images 2048->1024 in {build_s:.2f} s")
        print(f"cache: read one 1024^2 sample (image + 29 packed masks) {read_ms:.3f} ms")
        print(f"cache: unpack 29 masks to bool on the CPU {unpack_ms:.2f} ms (done on the training device)")

        masks = competition.read_mask(recs[0].label, 2048, 2048)
        fast = timeit(lambda: rle.encode_many(masks), 10)
        loop = timeit(lambda: [rle.encode_loop(m) for m in masks], 3)
        assert rle.encode_many(masks) == [rle.encode_loop(m) for m in masks]
        print(f"rle: encode 29 masks at 2048^2 {fast:.1f} ms (vectorised) vs {loop:.1f} ms (common loop), "
              f"{loop / fast:.1f}x")

    pred = rng.random((8, 29, 256, 256)) > 0.5
    gt = rng.random((8, 29, 256, 256)) > 0.4
    tp, fp, fn = metrics.counts(torch.from_numpy(pred), torch.from_numpy(gt))
    d = metrics.dice_from_counts(tp.double(), fp.double(), fn.double()).numpy()
    print(f"dice: max |device counts - numpy reference| = {np.abs(d - metrics.dice_numpy(pred, gt)).max():.2e}")


if __name__ == "__main__":
    main()
