"""Dice per BCP round (labelled-only -> bcp -> bcp2 -> bcp3, and the pooloff2 control) per seed, one panel per init,
read from a finished study's result.json files (docs/results.md, "More rounds").

    python bench/rounds_figure.py runs/study/lowlabel --png docs/img/lowlabel_rounds.png

Several study folders may be given (e.g. scratch and pretrained arms run apart): each init is read from the first
folder that has finished BCP-round cells of it. The dotted line is the every-label ceiling (from scratch where no pretrained one
was run).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from study_tables import by_cell, load

ROUNDS = ["finetune", "bcp", "bcp2", "bcp3"]  # round 0 = the labelled-only student every BCP round starts from


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("outs", type=Path, nargs="+", help="the study's out_dir (or several)")
    ap.add_argument("--fraction", type=float, default=0.05)
    ap.add_argument("--png", type=Path, required=True)
    a = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # (init, method, fraction, seed) -> mean Dice, per study folder
    cells = [{k: r["mean_dice"] for k, r in by_cell(load(o)).items()} for o in a.outs]
    arms = {*ROUNDS[1:], "pooloff2"}

    def round_cells(c: dict, init: str) -> list[tuple]:
        return [k for k in c if k[0] == init and k[1] in arms and k[2] == a.fraction]

    where = {}  # init -> the first folder with finished BCP-round cells of that init
    for init in ("scratch", "pretrained"):
        found = [c for c in cells if round_cells(c, init)]
        if found:
            where[init] = found[0]
    if not where:
        raise SystemExit(f"{a.outs}: no finished BCP-round cell at fraction {a.fraction}")
    inits = list(where)
    seeds = sorted({k[3] for init, c in where.items() for k in round_cells(c, init)})
    fig, axes = plt.subplots(1, len(inits), figsize=(5.2 * len(inits), 4), sharey=True, squeeze=False)
    for ax, init in zip(axes[0], inits):
        c = where[init]
        control_labelled = False
        for k, seed in enumerate(seeds):
            ys = [c.get((init, m, a.fraction, seed)) for m in ROUNDS]
            xs = [x for x, y in zip(range(len(ROUNDS)), ys) if y is not None]
            color = f"C{k}"
            ax.plot(xs, [y for y in ys if y is not None], "o-", color=color, label=f"seed {seed}")
            ctrl = c.get((init, "pooloff2", a.fraction, seed))
            if ctrl is not None:  # round two without a loss on the pool, from the same bcp student
                ax.plot([1, 2], [float("nan") if ys[1] is None else ys[1], ctrl], "x--", color=color, alpha=0.7,
                        label=None if control_labelled else "pooloff2 (control)")
                control_labelled = True
            ceil = next((cc[(i, "ceiling", 1.0, seed)] for cc in cells for i in (init, "scratch")
                         if (i, "ceiling", 1.0, seed) in cc), None)
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
