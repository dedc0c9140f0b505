"""``python -m bonekit.phantom --out DIR [--people N] [--size S] [--seed X] [--volumes] [--bent-share F]``
``python -m bonekit.phantom --stats DIR``   prints the figures recorded in docs/phantom.md."""

from __future__ import annotations

import argparse
import sys
import time

from bonekit.phantom.generate import generate, stats
from bonekit.phantom.spec import Spec


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bonekit.phantom", description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="output folder (must not exist or be empty)")
    ap.add_argument("--people", type=int, default=24, help="training people (two radiographs each)")
    ap.add_argument("--test-people", type=int, default=6)
    ap.add_argument("--size", type=int, default=512, help="radiograph side in pixels, 64..2048")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bent-share", type=float, default=0.11, help="share of bent/rotated wrists in train")
    ap.add_argument("--test-bent-share", type=float, default=None, help="the test split's share (0.58: real shift)")
    ap.add_argument("--volumes", action="store_true", help="also write CT-like NIfTI volumes")
    ap.add_argument("--variation", default="classic", choices=["classic", "wide"],
                    help="wide: children, curled/splayed fingers, turned hands, clutter, varied exposures")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--stats", metavar="DIR", help="print the figures of a written dataset and exit")
    a = ap.parse_args(argv)
    if a.stats:
        s = stats(a.stats)
        print(f"images: {s['images']} at {s['size']}px; pixel mean {s['mean']:.3f} (real 0.124), std {s['std']:.3f} (real 0.168)")
        print(f"images holding all 29 classes: {s['all_classes']:.0%}")
        for k, v in s["overlap"].items():
            print(f"overlap {k}: {v:.0%} of images")
        scale = (2048 / s["size"]) ** 2
        print("mean area per class (px at this size | scaled to 2048^2), smallest first:")
        for c, v in sorted(s["area"].items(), key=lambda t: t[1]):
            print(f"  {c:12s} {v:9.0f} | {v * scale:9.0f}")
        return 0
    if not a.out:
        ap.error("--out is required (or --stats DIR)")
    spec = Spec(people=a.people, test_people=a.test_people, size=a.size, seed=a.seed, bent_share=a.bent_share,
                test_bent_share=a.test_bent_share, volumes=a.volumes, variation=a.variation)
    t = time.perf_counter()
    try:
        generate(a.out, spec, workers=a.workers)
    except (ValueError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n = 2 * (a.people + a.test_people)
    dt = time.perf_counter() - t
    print(f"wrote {n} radiographs at {a.size}px to {a.out} in {dt:.1f} s ({n / dt:.1f} img/s, {a.workers} worker(s))")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
