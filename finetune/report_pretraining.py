"""The pretraining part of the study report: the pretraining run's curves and the paired pretrained − scratch
differences (finetune/report_html.py puts them in summary.md and report.html)."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path


def pretraining_effect(rows: list[dict]) -> list[tuple[float, str, list[float]]]:
    """Per (fraction, method) run from both inits: the paired per-seed differences pretrained − scratch."""
    by = {(r["init"], r["fraction"], r["method"], r["seed"]): r["mean_dice"] for r in rows}
    out = defaultdict(list)
    for (init, f, m, seed), v in sorted(by.items(), key=lambda t: (t[0][1], t[0][2], t[0][3])):
        if init == "pretrained" and ("scratch", f, m, seed) in by:
            out[(f, m)].append(v - by[("scratch", f, m, seed)])
    return [(f, m, d) for (f, m), d in sorted(out.items(), key=lambda t: (-t[0][0] if t[0][1] == "ceiling" else t[0][0], t[0][1]))]


def plot_pretraining(metrics_csv: Path, path: Path) -> Path | None:
    """The pretraining run's loss and encoder-check Dice against step, side by side (its metrics.csv)."""
    if not metrics_csv.is_file():
        return None
    with open(metrics_csv) as f:
        rows = list(csv.DictReader(f))
    series = {k: [(int(r["step"]), float(r[k])) for r in rows if r.get(k) not in (None, "")]
              for k in ("loss", "probe_dice")}
    if not series["loss"]:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), dpi=110)
    for ax, (k, title) in zip(axes, [("loss", "pretraining loss"), ("probe_dice", "encoder check Dice (frozen)")]):
        if series[k]:
            ax.plot(*zip(*series[k]), marker="o" if k == "probe_dice" else None)
        ax.set_xlabel("step")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
