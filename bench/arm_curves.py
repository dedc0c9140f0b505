"""Validation Dice during training of chosen arms, one panel per seed with the arms on the same axes (the study
report draws one panel per method, where two arms of one seed are hard to compare). Read from a study's cells.

    python bench/arm_curves.py runs/study/lowlabel_fp32 --methods finetune bcp bcpfp --png docs/img/x.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

from study_tables import load

from finetune.report_html import plot_curves


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path, help="the study's out_dir")
    ap.add_argument("--methods", nargs="+", required=True)
    ap.add_argument("--init", default="scratch")
    ap.add_argument("--fraction", type=float, default=0.05)
    ap.add_argument("--png", type=Path, required=True)
    a = ap.parse_args()
    rows = [r for r in load(a.out) if r["method"] in a.methods and r["init"] == a.init and r["fraction"] == a.fraction]
    if not rows:
        raise SystemExit(f"{a.out}: no finished cell of {a.methods} ({a.init}, {a.fraction:g})")
    colour = {m: f"C{i}" for i, m in enumerate(a.methods)}
    a.png.parent.mkdir(parents=True, exist_ok=True)
    done = plot_curves(rows, a.png, style=lambda r: {"color": colour[r["method"]]},
                       panel=lambda r: f"{a.init}, {a.fraction:.0%} labels, seed {r['seed']}",
                       label=lambda r: r["method"])
    if done is None:
        raise SystemExit(f"{a.out}: those cells logged no validation curve (loop.eval_every)")
    print(f"-> {a.png}")


if __name__ == "__main__":
    main()
