"""Dice per BCP round (labelled-only -> bcp -> bcp2 -> bcp3, and the pooloff2 control) per seed, one panel per init,
read from a finished study's result.json files (docs/results.md, "More rounds").

    python bench/rounds_figure.py runs/study/lowlabel --png docs/img/lowlabel_rounds.png

Several study folders may be given (e.g. scratch and pretrained arms run apart): each init is read from the first
folder that has its ``bcp`` cells. The dotted line is the every-label ceiling (from scratch where no pretrained one
was run).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROUNDS = ["finetune", "bcp", "bcp2", "bcp3"]  # round 0 = the labelled-only student every BCP round starts from


def dice(out: Path, init: str, method: str, frac: float, seed: int) -> float | None:
    p = out / init / method / f"f{frac:g}" / f"s{seed}" / "result.json"
    return json.loads(p.read_text())["mean_dice"] if p.is_file() else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("outs", type=Path, nargs="+", help="the study's out_dir (or several)")
    ap.add_argument("--fraction", type=float, default=0.05)
    ap.add_argument("--png", type=Path, required=True)
    a = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    where = {}
    for init in ("scratch", "pretrained"):
        found = [o for o in a.outs if (o / init / "bcp").is_dir()]
        if found:
            where[init] = found[0]
    if not where:
        raise SystemExit(f"{a.outs}: no bcp cells")
    inits = list(where)
    seeds = sorted({int(p.name[1:]) for i, o in where.items() for p in (o / i / "bcp" / f"f{a.fraction:g}").glob("s*")})
    fig, axes = plt.subplots(1, len(inits), figsize=(5.2 * len(inits), 4), sharey=True, squeeze=False)
    for ax, init in zip(axes[0], inits):
        out = where[init]
        for k, seed in enumerate(seeds):
            ys = [dice(out, init, m, a.fraction, seed) for m in ROUNDS]
            xs = [x for x, y in zip(range(len(ROUNDS)), ys) if y is not None]
            color = f"C{k}"
            ax.plot(xs, [y for y in ys if y is not None], "o-", color=color, label=f"seed {seed}")
            ctrl = dice(out, init, "pooloff2", a.fraction, seed)
            if ctrl is not None:  # round two without a loss on the pool, from the same bcp student
                ax.plot([1, 2], [ys[1], ctrl], "x--", color=color, alpha=0.7,
                        label="pooloff2 (control)" if not ax.get_legend_handles_labels()[1].count("pooloff2 (control)")
                        else None)
            ceil = next((c for o in a.outs for i in (init, "scratch")
                         if (c := dice(o, i, "ceiling", 1.0, seed)) is not None), None)
            if ceil is not None:
                ax.axhline(ceil, color=color, lw=0.8, ls=":")
        ax.set_xticks(range(len(ROUNDS)), ["labelled\nonly", "bcp", "bcp2", "bcp3"])
        ax.set_title(f"{init} init, {a.fraction:.0%} labels")
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    axes[0][0].set_ylabel("mean Dice, validation fold (dotted: ceiling)")
    fig.tight_layout()
    a.png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.png, dpi=110)
    print(f"-> {a.png}")


if __name__ == "__main__":
    main()
