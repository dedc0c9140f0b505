"""The study report: plots people would rather look at than read, in one self-contained HTML file."""

from __future__ import annotations

import base64
import html
from collections import defaultdict
from pathlib import Path

import numpy as np

from bonekit import metrics
from bonekit.metrics import format_per_class
from finetune.report_pretraining import plot_pretraining, pretraining_effect


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_dice_vs_fraction(rows, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4), dpi=110)
    groups = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["method"] != "ceiling":
            groups[(r["init"], r["method"])][r["fraction"]].append(r["mean_dice"])
    for (init, method), by_f in sorted(groups.items()):
        fs = sorted(by_f)
        mean = [np.mean(by_f[f]) for f in fs]
        sd = [_sd(by_f[f]) for f in fs]
        ax.errorbar([100 * f for f in fs], mean, yerr=sd, marker="o", capsize=3, label=f"{method} ({init})")
    ceilings = [r["mean_dice"] for r in rows if r["method"] == "ceiling"]
    if ceilings:
        ax.axhline(np.mean(ceilings), ls=":", color="grey", lw=1, label="ceiling (every label)")
    ax.set_xscale("log")
    ax.set_xlabel("labelled share of the training images (%)")
    ax.set_ylabel("mean Dice (validation fold)")
    ax.set_title("Dice vs label fraction (mean ± sd over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_heatmap(rows, path: Path) -> Path:
    agg = defaultdict(list)
    for r in rows:
        agg[f"{r['method']} / {r['init']} / {100 * r['fraction']:g}%"].append([r["per_bone"][n] for n in r["per_bone"]])
    labels = sorted(agg)
    m = np.array([np.mean(agg[k], 0) for k in labels])
    return _heatmap(m, labels, list(rows[0]["per_bone"]), path, "Dice per bone (mean over seeds)", "Dice")


def plot_gain_heatmap(rows, path: Path) -> Path | None:
    """Per bone, each method minus the labelled-only student of the same init, fraction and seed (mean over
    seeds): where a method's gain comes from. None when no method has its labelled-only row."""
    base = {(r["init"], r["fraction"], r["seed"]): r["per_bone"] for r in rows if r["method"] == "finetune"}
    agg = defaultdict(list)
    for r in rows:
        b = base.get((r["init"], r["fraction"], r["seed"]))
        if r["method"] not in ("finetune", "ceiling") and b is not None:
            agg[f"{r['method']} / {r['init']} / {100 * r['fraction']:g}%"].append(
                [r["per_bone"][n] - b[n] for n in r["per_bone"]])
    if not agg:
        return None
    labels = sorted(agg)
    m = np.array([np.mean(agg[k], 0) for k in labels])
    lim = max(0.05, float(np.abs(m).max()))
    return _heatmap(m, labels, list(rows[0]["per_bone"]), path,
                    "Dice per bone minus the labelled-only student's (same seed; mean over seeds)", "Δ Dice",
                    -lim, lim, "RdBu", signed=True)


def _heatmap(m, labels, names, path: Path, title: str, bar: str, vmin: float = 0.0, vmax: float = 1.0,
             cmap: str = "viridis", signed: bool = False) -> Path:
    """``m [len(labels), len(names)]`` drawn with its values written in the cells."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(11, 0.45 * len(labels) + 1.6), dpi=110)
    im = ax.imshow(m, vmin=vmin, vmax=vmax, cmap=cmap, aspect="auto")
    ax.set_yticks(range(len(labels)), labels, fontsize=10)
    ax.set_xticks(range(len(names)), names, rotation=70, fontsize=9)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            v = m[i, j]
            text = f"{100 * v:+.0f}" if signed else (f"{v:.2f}"[1:] if v < 1 else "1")
            dark = abs(v) > 0.6 * vmax if signed else v < 0.5
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
    fig.colorbar(im, ax=ax, label=bar + (" (cells: x100)" if signed else ""))
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_curves(rows, path: Path, style=None, panel=None, label=None) -> Path | None:
    """Validation Dice against step of every cell that logged it (``loop.eval_every``), one panel per method (or per
    ``panel(row)``, then on a shared y axis); ``style(row)`` may give each line its matplotlib keywords (colour, line
    style), ``label(row)`` its legend entry."""
    import csv as _csv

    series = defaultdict(list)
    for r in rows:
        m = Path(r["checkpoint"]).parent / "metrics.csv"
        if not m.is_file():
            continue
        with open(m) as f:
            pts = [(int(x["step"]), float(x["val_dice"])) for x in _csv.DictReader(f) if x.get("val_dice")]
        if len(pts) >= 2:
            name = label(r) if label else f"{r['init']} {100 * r['fraction']:g}% s{r['seed']}"
            series[panel(r) if panel else r["method"]].append((name, pts, style(r) if style else {}))
    if not series:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(series), figsize=(3.2 * len(series) + 1, 3.2), dpi=110, squeeze=False,
                             sharey=panel is not None)
    for ax, (title, runs) in zip(axes[0], sorted(series.items())):
        for name, pts, kw in runs:
            ax.plot(*zip(*pts), **{"marker": ".", **kw}, label=name)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("validation Dice")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_pgr(rows, path: Path) -> Path | None:
    with_pgr = [r for r in rows if r.get("pgr")]
    if not with_pgr:
        return None
    plt = _plt()
    names = list(with_pgr[0]["pgr"])
    agg = defaultdict(list)
    for r in with_pgr:
        agg[f"{r['method']} / {r['init']} / {100 * r['fraction']:g}%"].append(
            [np.nan if r["pgr"][n] is None else r["pgr"][n] for n in names])
    fig, ax = plt.subplots(figsize=(11, 3.6), dpi=110)
    w = 0.8 / len(agg)
    for i, (k, v) in enumerate(sorted(agg.items())):
        ax.bar(np.arange(len(names)) + i * w, np.nanmean(v, 0), width=w, label=k)
    ax.axhline(0, color="k", lw=0.8)
    ax.axhline(1, color="grey", lw=0.8, ls=":")
    ax.set_xticks(np.arange(len(names)) + 0.4 - w / 2, names, rotation=70, fontsize=7)
    ax.set_ylabel("PGR")
    ax.set_title("Performance gap recovered per bone: (student - teacher) / (ceiling - teacher)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _sd(v) -> float:
    """Sample sd over seeds (0 for one seed)."""
    return float(np.std(v, ddof=1)) if len(v) > 1 else 0.0


def _pm(v, fmt: str = ".4f") -> str:
    """``mean ± sd`` over seeds; the mean alone for one seed; "" for none."""
    v = [x for x in v if x is not None]
    if not v:
        return ""
    return f"{np.mean(v):{fmt}} ± {_sd(v):{fmt.replace('+', '')}}" if len(v) > 1 else f"{np.mean(v):{fmt}}"


def gap_recovered(rows: list[dict]) -> None:
    """Set ``gap`` = (method - labelled-only) / (ceiling - labelled-only) on every method row, from the
    ``finetune`` row of the same init, fraction and seed and the ceiling of the same init and seed."""
    ceil = {(r["init"], r["seed"]): r["mean_dice"] for r in rows if r["method"] == "ceiling"}
    base = {(r["init"], r["fraction"], r["seed"]): r["mean_dice"] for r in rows if r["method"] == "finetune"}
    for r in rows:
        c, b = ceil.get((r["init"], r["seed"])), base.get((r["init"], r["fraction"], r["seed"]))
        r["gap"] = None
        if r["method"] not in ("ceiling", "finetune") and c is not None and b is not None and c - b > 1e-6:
            r["gap"] = (r["mean_dice"] - b) / (c - b)


def plot_gap(rows, path: Path) -> Path | None:
    """Gap recovered per method (mean ± sd over seeds); None when no row has one."""
    agg = defaultdict(list)
    for r in rows:
        if r.get("gap") is not None:
            agg[f"{r['method']}\n{r['init']}, {100 * r['fraction']:g}%"].append(r["gap"])
    if not agg:
        return None
    plt = _plt()
    keys = sorted(agg)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(keys) + 1.5), 3.6), dpi=110)
    ax.bar(range(len(keys)), [np.mean(agg[k]) for k in keys], yerr=[_sd(agg[k]) for k in keys], capsize=4,
           color="#4c78a8")
    for i, k in enumerate(keys):
        ax.scatter([i] * len(agg[k]), agg[k], color="k", s=10, zorder=3)
    ax.axhline(0, color="k", lw=0.8)
    ax.axhline(1, color="grey", lw=0.8, ls=":")
    ax.set_xticks(range(len(keys)), keys, fontsize=8)
    ax.set_ylabel("gap recovered")
    ax.set_title("(method - labelled-only) / (ceiling - labelled-only); bars mean ± sd, dots seeds", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _img(path: Path, alt: str, width: str = "100%") -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" style="max-width:{width}" src="data:image/png;base64,{data}">'


def add_pgr(rows: list[dict]) -> None:
    """Set ``pgr_mean`` = (student - teacher) / (ceiling - teacher) on mean Dice (robust where per-bone gaps are
    tiny) and ``pgr`` per bone (where the ceiling beats the teacher by > 0.05), from the ceiling row of the same init
    and seed. Computed here from the rows, never in the cell: a cell may run in another process than its ceiling."""
    ceil = {(r["init"], r["seed"]): r for r in rows if r["method"] == "ceiling"}
    for r in rows:
        c = ceil.get((r["init"], r["seed"]))
        if r.get("teacher") and c is not None:
            r["pgr_mean"] = metrics.pgr_of_means(r["mean_dice"], float(np.mean(list(r["teacher"].values()))),
                                                 c["mean_dice"])
            names = [n for n in r["per_bone"] if n in r["teacher"] and n in c["per_bone"]]
            g = metrics.pgr([r["per_bone"][n] for n in names], [r["teacher"][n] for n in names],
                            [c["per_bone"][n] for n in names], min_gap=0.05)
            r["pgr"] = dict(zip(names, [None if np.isnan(v) else float(v) for v in g]))


def write_markdown(out: Path, rows: list[dict]) -> Path:
    """``summary.md``: per (fraction, init, method), mean ± sd over seeds of the mean Dice, the teacher's Dice,
    the PGR of the means and the gap recovered."""
    add_pgr(rows)
    gap_recovered(rows)
    groups = defaultdict(list)
    for r in rows:
        groups[(r["fraction"], r["init"], r["method"])].append(r)
    def paired(rs, reference: str, init, f) -> str:
        """'mean ± sd | wins' of each seed's Dice minus the ``reference`` arm's of the same seed; blank for itself."""
        ref = {r["seed"]: r["mean_dice"] for r in rows
               if (r["method"], r["init"], r["fraction"]) == (reference, init, f)}
        d = [] if rs[0]["method"] in ("ceiling", "finetune", reference) else [
            r["mean_dice"] - ref[r["seed"]] for r in rs if r["seed"] in ref]
        return f"{_pm(d, '+.4f')} | " + (f"{sum(x > 0 for x in d)}/{len(d)}" if d else "")

    lines = [("| labels | init | method | seeds | mean Dice | teacher Dice | PGR | gap recovered | "
              "− labelled-only (paired) | wins | − control (paired) | wins |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (f, init, method), rs in sorted(groups.items(), key=lambda t: (-t[0][0] if t[0][2] == "ceiling" else t[0][0], t[0][1], t[0][2])):
        t = [float(np.mean(list(r["teacher"].values()))) for r in rs if r.get("teacher")]
        lines.append(f"| {100 * f:g}% | {init} | {method} | {len(rs)} | {_pm([r['mean_dice'] for r in rs])} | "
                     f"{_pm(t)} | {_pm([r.get('pgr_mean') for r in rs], '.3f')} | "
                     f"{_pm([r.get('gap') for r in rs], '.3f')} | {paired(rs, 'finetune', init, f)} | "
                     f"{paired(rs, 'pooloff', init, f)} |")
    lines += ["", ("mean ± sd over seeds (sample sd). Gap recovered = (method - labelled-only) / (ceiling - "
              "labelled-only), per seed, then averaged. PGR = (student - teacher) / (ceiling - teacher) of the mean "
              "Dice; empty where undefined (no teacher, or the ceiling does not beat the teacher). − labelled-only: "
              "the per-seed difference to the labelled-only student of the same seed (same label subset), mean ± sd; "
              "wins: seeds where the method is ahead. − control: the same against `pooloff`, the distillation loop "
              "with no loss on the pool — like-for-like when every distilled arm starts from the labelled-only "
              "student (`warm_start=true`, as `bcp` always does), what the pool itself adds.")]
    effect = pretraining_effect(rows)
    if effect:
        lines += ["", "| labels | method | seeds | pretrained − scratch (paired) | wins |", "|---|---|---|---|---|"]
        lines += [f"| {100 * f:g}% | {m} | {len(d)} | {_pm(d, '+.4f')} | {sum(x > 0 for x in d)}/{len(d)} |"
                  for f, m, d in effect]
        lines += ["", ("pretrained − scratch: per seed, the same arm, label subset and schedule from the pretrained "
                       "encoder minus from scratch; a gain counts when its mean exceeds its sd.")]
    walls = defaultdict(float)
    for r in rows:
        walls[(r["init"], r["seed"])] += float(r.get("wall_s") or 0)
    if walls:
        lines += ["", "Wall time per seed (every cell of that seed, as run): "
                  + ", ".join(f"{init} s{seed} {w / 60:.1f} min" for (init, seed), w in sorted(walls.items())) + "."]
    # precision=bf16 runs fp32 on a CPU without hardware bf16 (bonekit/accel.py): say what the cells really ran in.
    used = sorted({str(r.get("precision", "not recorded")) for r in rows})
    lines += ["", "Mixed precision the cells ran in: " + ", ".join(used)
              + (" (differs between cells: they are not like-for-like)." if len(used) > 1 else ".")]
    path = out / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_report(out: Path, rows: list[dict], cfg) -> Path:
    if rows:
        write_markdown(out, rows)
    figs = out / "figures"
    figs.mkdir(exist_ok=True)
    parts = [f"<h1>bonekit study: {html.escape(str(cfg.name))}</h1>",
             f"<p>{len(rows)} cells; data: {html.escape(cfg.data.root or 'embedded phantom')}, "
             f"{cfg.data.resolution}px; student {html.escape(cfg.student.arch)}/{html.escape(cfg.student.encoder)}; "
             "steps " + ", ".join(f"{k} {v}" for k, v in cfg.steps.items()) + "; Dice of each cell's last checkpoint "
             "on the person-grouped validation fold at the labels' resolution (no TTA, one model per cell).</p>"]
    if rows:
        parts.append("<h2>Mean Dice vs label fraction</h2>" + _img(plot_dice_vs_fraction(rows, figs / "dice_vs_fraction.png"), "Dice vs label fraction", "720px"))
        head = ("<tr><th>fraction</th><th>init</th><th>method</th><th>seed</th><th>mean Dice</th><th>teacher Dice</th>"
                "<th>PGR</th><th>gap recovered</th><th>wall s</th></tr>")
        def pgr_cell(r):
            if r.get("pgr_mean") is not None:
                return f"{r['pgr_mean']:.3f}"
            return "undefined: ceiling ≤ teacher" if r.get("teacher") else ""

        def teacher_cell(r):
            return f"{np.mean(list(r['teacher'].values())):.4f}" if r.get("teacher") else ""

        def gap_cell(r):
            return "" if r.get("gap") is None else f"{r['gap']:.3f}"


        body = "".join(
            f"<tr><td>{100 * r['fraction']:g}%</td><td>{r['init']}</td><td>{r['method']}</td><td>{r['seed']}</td>"
            f"<td>{r['mean_dice']:.4f}</td><td>{teacher_cell(r)}</td><td>{pgr_cell(r)}</td><td>{gap_cell(r)}</td>"
            f"<td>{r['wall_s']}</td></tr>" for r in rows)
        parts.append(f"<h2>Results</h2><table>{head}{body}</table>")
        parts.append("<h2>Dice per bone</h2>" + _img(plot_heatmap(rows, figs / "per_bone_heatmap.png"), "per-bone heatmap"))
        gain = plot_gain_heatmap(rows, figs / "per_bone_gain.png")
        if gain:
            parts.append("<h2>Where the gain comes from</h2>" + _img(gain, "per-bone gain over the labelled-only student"))
        g = plot_gap(rows, figs / "gap_recovered.png")
        if g:
            parts.append("<h2>Gap recovered</h2>" + _img(g, "gap recovered"))
        p = plot_pgr(rows, figs / "pgr.png")
        if p:
            parts.append("<h2>PGR per bone</h2>" + _img(p, "PGR per bone"))
        elif any(r.get("teacher") for r in rows):
            parts.append("<h2>PGR per bone</h2><p>Not drawn: no bone has a ceiling that beats its teacher by more "
                         "than 0.05 Dice, so the gap a student could recover is undefined (PGR = (student - teacher) "
                         "/ (ceiling - teacher)).</p>")
        pre = plot_pretraining(out / "pretrain" / "metrics.csv", figs / "pretraining.png")
        effect = pretraining_effect(rows)
        if pre or effect:
            table = "".join(f"<tr><td>{100 * f:g}%</td><td>{m}</td><td>{len(d)}</td><td>{_pm(d, '+.4f')}</td>"
                            f"<td>{sum(x > 0 for x in d)}/{len(d)}</td></tr>" for f, m, d in effect)
            parts.append("<h2>Pretraining</h2><p>The study's pretraining run (its loss, and the encoder check: a light "
                         "decoder on the frozen encoder, fitted on a few labelled images and scored on other people) "
                         "and what it changed downstream, paired per seed.</p>"
                         + (_img(pre, "pretraining curves", "900px") if pre else "")
                         + (f"<table><tr><th>labels</th><th>method</th><th>seeds</th><th>pretrained − scratch</th>"
                            f"<th>wins</th></tr>{table}</table>" if effect else ""))
        curves = plot_curves(rows, figs / "val_curves.png")
        if curves:
            parts.append("<h2>Validation curves</h2><p>Mean Dice on the validation fold during training, for "
                         "reading whether each cell's schedule had flattened; never used to select a checkpoint.</p>"
                         + _img(curves, "validation curves"))
        best = max((r for r in rows if r["method"] != "ceiling"), key=lambda r: r["mean_dice"], default=rows[0])
        parts.append(f"<h2>Best model: {best['method']} / {best['init']} / {100 * best['fraction']:g}% / seed {best['seed']}</h2>")
        parts.append("<pre>" + html.escape(format_per_class(list(best["per_bone"]), list(best["per_bone"].values()))
                                           + f"\nmean : {best['mean_dice']:.4f}") + "</pre>")
        worst = sorted(Path(best["eval"], "worst").glob("*.png"))
        if worst:
            parts.append("<h3>Worst validation images of the best model (ground truth | prediction | errors)</h3>")
            parts += [f"<figure>{_img(w, w.name)}<figcaption>{html.escape(w.name)}</figcaption></figure>" for w in worst]
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}"
             "pre{background:#f5f5f5;padding:8px;font-size:12px}figure{margin:1em 0}")
    doc = f"<!doctype html><html><head><meta charset='utf-8'><title>bonekit study</title><style>{style}</style></head><body>{''.join(parts)}</body></html>"
    path = out / "report.html"
    path.write_text(doc)
    return path


def browser_check(html_path: Path, screenshot: Path, chromium: str = "/usr/bin/chromium") -> dict:
    """Open the report in headless Chromium: every image loaded? any console error? Saves a screenshot."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, headless=True,
                              args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                    "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = b.new_page(viewport={"width": 1200, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(Path(html_path).resolve().as_uri())
        page.wait_for_load_state("load")
        images = page.evaluate("Array.from(document.images).map(i => [i.alt, i.complete && i.naturalWidth > 0])")
        page.screenshot(path=str(screenshot), full_page=True)
        b.close()
    return {"images": len(images), "broken": [a for a, ok in images if not ok], "console_errors": errors,
            "screenshot": str(screenshot)}
