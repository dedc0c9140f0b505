"""Markdown tables of a finished study for docs/results.md, read from its cells' result.json (nothing typed by
hand): per-seed Dice and the gap recovered per method, paired differences between methods, small bones.

    python bench/study_tables.py runs/study/lowlabel [--vs selftrain meanteacher]
    python bench/study_tables.py runs/study/lowlabel_fp32 --baseline pooloff --ceiling-dice 0.8032 0.8029 0.8051

``--baseline`` names the arm the gap is recovered from (default the labelled-only student ``finetune``; e.g.
``pooloff`` with ``warm_start=true``, the same schedule without the pool); ``--ceiling-dice`` gives one ceiling
Dice per seed (in the order of the seeds) for a study that ran none, e.g. the ceilings of another study.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from bonekit.classes import SMALL_BONES
from finetune.study import METHODS


def load(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("*/*/*/s*/result.json"))]


def by_cell(rows: list[dict]) -> dict:
    """{(init, method, fraction, seed): row} — how every table pairs cells."""
    return {(r["init"], r["method"], r["fraction"], r["seed"]): r for r in rows}


def pm(v, fmt=".4f") -> str:
    v = [x for x in v if x is not None]
    if not v:
        return ""
    if len(v) == 1:
        return f"{v[0]:{fmt}}"
    return f"{np.mean(v):{fmt}} ± {np.std(v, ddof=1):{fmt.replace('+', '')}}"


def fmt(v, f: str) -> str:
    """Per-seed values, "–" where a seed has none."""
    return ", ".join("–" if x is None else f"{x:{f}}" for x in v)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--vs", nargs="*", default=["selftrain", "meanteacher", "pooloff"])
    ap.add_argument("--baseline", default="finetune", help="the arm the gap is recovered from")
    ap.add_argument("--ceiling-dice", type=float, nargs="*", default=[],
                    help="one ceiling Dice per seed, for a study without ceiling cells")
    a = ap.parse_args()
    rows = load(a.out)
    if not rows:
        raise SystemExit(f"{a.out}: no finished cell (result.json)")
    cell = by_cell(rows)
    seeds = sorted({r["seed"] for r in rows})
    if a.ceiling_dice:
        if len(a.ceiling_dice) != len(seeds):
            raise SystemExit(f"--ceiling-dice: {len(a.ceiling_dice)} values for {len(seeds)} seeds {seeds}")
        for init in {r["init"] for r in rows}:
            for s, v in zip(seeds, a.ceiling_dice):
                cell.setdefault((init, "ceiling", 1.0, s), {"mean_dice": v})
    groups = defaultdict(dict)
    for r in rows:
        groups[(r["init"], r["fraction"], r["method"])][r["seed"]] = r
    print(f"| labels | method | Dice per seed ({', '.join(f's{s}' for s in seeds)}) | mean ± sd | "
          f"− {a.baseline} per seed | gap recovered from {a.baseline} per seed | gap mean ± sd | "
          "cell wall per seed (min) |")
    print("|---|---|---|---|---|---|---|---|")
    order = ["ceiling", "finetune", *METHODS]
    for (init, frac, method), by_seed in sorted(groups.items(), key=lambda t: (
            -t[0][1], t[0][0] != "scratch", order.index(t[0][2]) if t[0][2] in order else 99)):
        d = [by_seed[s]["mean_dice"] if s in by_seed else None for s in seeds]
        base = [cell.get((init, a.baseline, frac, s)) for s in seeds]
        ceil = [cell.get((init, "ceiling", 1.0, s)) for s in seeds]
        diff, gap = [], []
        for x, b, c in zip(d, base, ceil):
            ok = method not in ("finetune", "ceiling", a.baseline) and x is not None and b is not None
            diff.append(x - b["mean_dice"] if ok else None)
            gap.append((x - b["mean_dice"]) / (c["mean_dice"] - b["mean_dice"]) if ok and c else None)
        wall = [by_seed[s]["wall_s"] / 60 if s in by_seed else None for s in seeds]
        name = method if init == "scratch" else f"{init} {method}"
        print(f"| {100 * frac:g}% | {name} | {fmt(d, '.4f')} | {pm(d)} | "
              f"{fmt(diff, '+.3f') if any(x is not None for x in diff) else ''} | "
              f"{fmt(gap, '.2f') if any(x is not None for x in gap) else ''} | {pm(gap, '.2f')} | {fmt(wall, '.1f')} |")
    print()
    methods = sorted({r["method"] for r in rows} - {"ceiling", "finetune"})
    print("| paired, per seed | " + " | ".join(f"− {v}" for v in a.vs) + " |")
    print("|---|" + "---|" * len(a.vs))
    for m in methods:
        cells = []
        for v in a.vs:
            ds = [cell[(i, m, f, s)]["mean_dice"] - cell[(i, v, f, s)]["mean_dice"]
                  for (i, mm, f, s) in cell if mm == m and (i, v, f, s) in cell]
            cells.append(f"{', '.join(f'{x:+.3f}' for x in ds)} ({pm(ds, '+.3f')})" if ds and v != m else "")
        print(f"| {m} | " + " | ".join(cells) + " |")
    print()
    # columns: (init, method) at the lowest label fraction, the ceiling first; a non-scratch init is named
    low = min(r["fraction"] for r in rows if r["method"] != "ceiling") if len(rows) > 1 else 1.0
    cols = sorted({(r["init"], r["method"]) for r in rows if r["method"] == "ceiling" or r["fraction"] == low},
                  key=lambda c: (c[0] != "scratch", order.index(c[1]) if c[1] in order else 99, c))
    print("| small bone | " + " | ".join(m if i == "scratch" else f"{i} {m}" for i, m in cols) + " |")
    print("|---|" + "---|" * len(cols))
    for b in SMALL_BONES:
        vals = [pm([r["per_bone"][b] for r in rows if (r["init"], r["method"]) == (i, m)
                    and (m == "ceiling" or r["fraction"] == low)], ".2f") for i, m in cols]
        print(f"| {b} | " + " | ".join(vals) + " |")
    gate_table(a.out, seeds)
    init_table(cell, seeds)


def init_table(cell: dict, seeds: list[int]) -> None:
    """Arms of a non-scratch init (e.g. pretrained) against scratch, paired by seed: the same method from scratch,
    the scratch labelled-only student, and the gap recovered against the *scratch* labelled-only student and
    ceiling (the whole pipeline against plain supervised training)."""
    arms = sorted({(i, m, f) for (i, m, f, _) in cell if i != "scratch" and m != "ceiling"}, key=lambda t: (t[2], t[1]))
    if not arms:
        return
    print()
    print("| init | labels | method | Dice per seed | − same method from scratch | − scratch labelled-only | "
          "gap recovered vs scratch labelled-only | gap mean ± sd |")
    print("|---|---|---|---|---|---|---|---|")
    for init, method, frac in arms:
        d, same, lab, gap = [], [], [], []
        for s in seeds:
            r = cell.get((init, method, frac, s))
            if r is None:
                continue
            x = r["mean_dice"]
            d.append(x)
            sm, b, c = (cell.get(("scratch", m, f, s)) for m, f in ((method, frac), ("finetune", frac), ("ceiling", 1.0)))
            same.append(x - sm["mean_dice"] if sm else None)
            lab.append(x - b["mean_dice"] if b else None)
            gap.append((x - b["mean_dice"]) / (c["mean_dice"] - b["mean_dice"]) if b and c else None)
        print(f"| {init} | {100 * frac:g}% | {method} | {fmt(d, '.4f')} | {fmt(same, '+.3f')} ({pm(same, '+.3f')}) | "
              f"{fmt(lab, '+.3f')} ({pm(lab, '+.3f')}) | {fmt(gap, '.2f')} | {pm(gap, '.2f')} |")


def gate_table(out: Path, seeds: list[int]) -> None:
    """The per-bone gate's decisions (``cosupgate`` cells' ``experts/gate.json``): held-out Dice of the fold
    generalists and specialists per bone and seed, S where the specialist was used."""
    gates = {int(p.parts[-3][1:]): json.loads(p.read_text())
             for p in sorted(out.glob("*/cosupgate/*/s*/experts/gate.json"))}
    if not gates:
        return
    ss = [s for s in seeds if s in gates]
    bones = list(next(iter(gates.values()))["bones"])
    print()
    print("| bone | " + " | ".join(f"s{s}: generalist / specialist" for s in ss) + " | specialist used |")
    print("|---|" + "---|" * (len(ss) + 1))
    for b in bones:
        cells = [f"{gates[s]['bones'][b]['generalist']:.2f} / {gates[s]['bones'][b]['specialist']:.2f}"
                 + (" S" if gates[s]["bones"][b]["use_specialist"] else "") for s in ss]
        used = sum(gates[s]["bones"][b]["use_specialist"] for s in ss)
        print(f"| {b} | " + " | ".join(cells) + f" | {used}/{len(ss)} |")
    print("| specialists used | " + " | ".join(
        f"{sum(v['use_specialist'] for v in gates[s]['bones'].values())}/{len(bones)}" for s in ss) + " | |")


if __name__ == "__main__":
    main()
