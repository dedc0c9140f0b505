"""Dice per round of a family of restarted arms per seed, one panel per init, read from a finished study's
result.json files (docs/results.md): ``--family bcp`` (labelled-only -> bcp -> bcp2 -> bcp3, the pooloff2 control)
or ``--family meanteacher`` (labelled-only -> meanteacher -> meanteacher2; from the meanteacher student also the
pooloff2mt control and cosupmt2). Side arms are drawn dashed from the round they start from.

    python bench/rounds_figure.py runs/study/lowlabel --png docs/img/lowlabel_rounds.png
    python bench/rounds_figure.py runs/study/lowlabel_fp32 --family meanteacher --png docs/img/meanteacher_rounds.png

Several study folders may be given (e.g. scratch and pretrained arms run apart): each init is read from the first
folder that has finished round cells of it. The dotted line is the every-label ceiling (from scratch where no pretrained one
was run).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from study_tables import by_cell, load

# family -> (its rounds, round 0 = the labelled-only student; side arm -> (index of the round it starts from, style))
FAMILIES = {
    "bcp": (["finetune", "bcp", "bcp2", "bcp3"], {"pooloff2": (1, "x--")}),
    "meanteacher": (["finetune", "meanteacher", "meanteacher2"],
                    {"pooloff": (0, "x:"), "pooloff2mt": (1, "x--"), "cosupmt2": (1, "s-.")}),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("outs", type=Path, nargs="+", help="the study's out_dir (or several)")
    ap.add_argument("--fraction", type=float, default=0.05)
    ap.add_argument("--family", choices=sorted(FAMILIES), default="bcp")
    ap.add_argument("--png", type=Path, required=True)
    ap.add_argument("--ceiling-dice", type=float, nargs="*", default=[],
                    help="the ceiling per seed (0, 1, ...) where no ceiling cell is in the folders")
    a = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # (init, method, fraction, seed) -> mean Dice, per study folder
    cells = [{k: r["mean_dice"] for k, r in by_cell(load(o)).items()} for o in a.outs]
    rounds, side = FAMILIES[a.family]
    arms = {*rounds[1:], *side}

    def round_cells(c: dict, init: str) -> list[tuple]:
        return [k for k in c if k[0] == init and k[1] in arms and k[2] == a.fraction]

    where = {}  # init -> the first folder with finished round cells of that init
    for init in ("scratch", "pretrained"):
        found = [c for c in cells if round_cells(c, init)]
        if found:
            where[init] = found[0]
    if not where:
        raise SystemExit(f"{a.outs}: no finished {a.family}-round cell at fraction {a.fraction}")
    inits = list(where)
    seeds = sorted({k[3] for init, c in where.items() for k in round_cells(c, init)})
    if a.ceiling_dice and len(a.ceiling_dice) <= max(seeds):
        raise SystemExit(f"--ceiling-dice gives {len(a.ceiling_dice)} values; seeds 0..{max(seeds)} need one each")
    fig, axes = plt.subplots(1, len(inits), figsize=(5.2 * len(inits), 4), sharey=True, squeeze=False)
    for ax, init in zip(axes[0], inits):
        c = where[init]
        labelled = set()  # side arms already in the legend
        for k, seed in enumerate(seeds):
            ys = [c.get((init, m, a.fraction, seed)) for m in rounds]
            xs = [x for x, y in zip(range(len(rounds)), ys) if y is not None]
            color = f"C{k}"
            ax.plot(xs, [y for y in ys if y is not None], "o-", color=color, label=f"seed {seed}")
            for arm, (start, style) in side.items():  # drawn from the round whose student it starts from
                y = c.get((init, arm, a.fraction, seed))
                if y is not None:
                    y0 = float("nan") if ys[start] is None else ys[start]
                    ax.plot([start, start + 1], [y0, y], style, color=color, alpha=0.7)
                    labelled.add(arm)
            ceil = next((cc[(i, "ceiling", 1.0, seed)] for cc in cells for i in (init, "scratch")
                         if (i, "ceiling", 1.0, seed) in cc), None)
            if ceil is None and a.ceiling_dice:  # the ceiling ran in another study folder
                ceil = a.ceiling_dice[seed]
            if ceil is not None:
                ax.axhline(ceil, color=color, lw=0.8, ls=":")
        for arm in sorted(labelled):  # one grey legend entry per side arm (colours are seeds)
            ax.plot([], [], side[arm][1], color="grey", label=arm)
        ax.set_xticks(range(len(rounds)), ["labelled\nonly", *rounds[1:]])
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
