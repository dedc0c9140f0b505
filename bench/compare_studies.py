"""Two finished studies that differ in one setting (e.g. ``data.slices=1`` against ``data.slices=3``), cell by
cell: the paired table for docs/results.md and the validation curves of both in one figure.

    python bench/compare_studies.py runs/study/volumes_2d runs/study/volumes_2p5d --names 2D 2.5D \\
        --png docs/img/volumes_curves.png

Cells are paired on (init, arm, label fraction, seed); a cell without a partner in the other study is left out
and counted. The difference is B − A per seed, then mean ± sd (sample sd) and how many seeds B wins.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from study_tables import by_cell, fmt, load, pm

from finetune.report_html import plot_curves


def paired(a: list[dict], b: list[dict]) -> tuple[dict, int]:
    """{(init, arm, fraction): [(seed, dice A, dice B), ...]} over the cells both studies finished, and the number
    of cells that had no partner."""
    ia, ib = by_cell(a), by_cell(b)
    out: dict = {}
    for k in sorted(ia.keys() & ib.keys(), key=lambda k: (k[0], -k[2], k[1], k[3])):
        out.setdefault(k[:3], []).append((k[3], ia[k]["mean_dice"], ib[k]["mean_dice"]))
    return out, len(ia.keys() ^ ib.keys())


def table(pairs: dict, na: str, nb: str) -> list[str]:
    head = (f"| labels | arm | {na} per seed | {nb} per seed | {na} mean ± sd | {nb} mean ± sd | "
            f"{nb} − {na} per seed | mean ± sd | {nb} wins |")
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    for (init, arm, frac), cells in pairs.items():
        da, db = [c[1] for c in cells], [c[2] for c in cells]
        d = [y - x for x, y in zip(da, db)]
        label = f"{100 * frac:g}%" + ("" if init == "scratch" else f" ({init})")
        lines.append(f"| {label} | {arm} | {fmt(da, '.4f')} | {fmt(db, '.4f')} | {pm(da)} | {pm(db)} | "
                     f"{fmt(d, '+.3f')} | {pm(d, '+.3f')} | {sum(x > 0 for x in d)}/{len(d)} |")
    return lines


def per_bone(a: list[dict], b: list[dict], na: str, nb: str) -> list[str]:
    """Per bone and arm: B − A averaged over the paired seeds, bones of the largest |difference| first."""
    ia, ib = by_cell(a), by_cell(b)
    arms: dict = {}
    for k in ia.keys() & ib.keys():
        for bone, x in ia[k]["per_bone"].items():
            arms.setdefault(k[:3], {}).setdefault(bone, []).append(ib[k]["per_bone"][bone] - x)
    cols = sorted(arms, key=lambda t: (t[0], -t[2], t[1]))
    lines = ["| bone | " + " | ".join(f"{nb} − {na}, {m} {100 * f:g}%" for _, m, f in cols) + " |",
             "|---|" + "---|" * len(cols)]
    bones = sorted(arms[cols[0]], key=lambda bn: -max(abs(np.mean(arms[c][bn])) for c in cols))
    for bone in bones:
        lines.append(f"| {bone} | " + " | ".join(pm(arms[c][bone], "+.3f") for c in cols) + " |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--names", nargs=2, default=["A", "B"])
    ap.add_argument("--png", type=Path, help="validation curves of both studies, one panel per arm and fraction")
    ap.add_argument("--per-bone", action="store_true", help="also B − A per bone (mean ± sd over seeds)")
    args = ap.parse_args()
    ra, rb = load(args.a), load(args.b)
    pairs, unpaired = paired(ra, rb)
    if not pairs:
        raise SystemExit(f"{args.a} and {args.b}: no cell finished in both")
    print("\n".join(table(pairs, *args.names)))
    if args.per_bone:
        print()
        print("\n".join(per_bone(ra, rb, *args.names)))
    if unpaired:
        print(f"\n({unpaired} cells without a partner in the other study left out)")
    if args.png:
        # plot_curves draws one panel per "method" and names each line by "init fraction seed": relabel so a panel
        # holds one arm and fraction, and its lines say which study they come from.
        rows = [{**r, "method": f"{r['method']} {100 * r['fraction']:g}%", "init": name}
                for name, rs in zip(args.names, (ra, rb)) for r in rs]
        colour = dict(zip(args.names, ("tab:blue", "tab:red")))
        dash = ("-", "--", ":", "-.")
        path = plot_curves(rows, args.png, style=lambda r: {"color": colour[r["init"]],
                                                             "linestyle": dash[r["seed"] % len(dash)]})
        print(f"curves -> {path}" if path else "no cell logged a validation curve (loop.eval_every)")


if __name__ == "__main__":
    main()
