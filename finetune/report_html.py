"""The study report: plots people would rather look at than read, in one self-contained HTML file."""

from __future__ import annotations

import base64
import html
from collections import defaultdict
from pathlib import Path

import numpy as np

from bonekit import metrics
from bonekit.metrics import format_per_class


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
        lo = [np.mean(by_f[f]) - np.min(by_f[f]) for f in fs]
        hi = [np.max(by_f[f]) - np.mean(by_f[f]) for f in fs]
        ax.errorbar([100 * f for f in fs], mean, yerr=[lo, hi], marker="o", capsize=3, label=f"{method} ({init})")
    for r in rows:
        if r["method"] == "ceiling":
            ax.axhline(r["mean_dice"], ls=":", color="grey", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("labelled share of the training images (%)")
    ax.set_ylabel("mean Dice (validation fold)")
    ax.set_title("Dice vs label fraction (bars: seed min-max; dotted: all labels)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_heatmap(rows, path: Path) -> Path:
    plt = _plt()
    agg = defaultdict(list)
    for r in rows:
        agg[f"{r['method']} / {r['init']} / {100 * r['fraction']:g}%"].append([r["per_bone"][n] for n in r["per_bone"]])
    names = list(rows[0]["per_bone"])
    labels = sorted(agg)
    m = np.array([np.mean(agg[k], 0) for k in labels])
    fig, ax = plt.subplots(figsize=(11, 0.45 * len(labels) + 1.6), dpi=110)
    im = ax.imshow(m, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=70, fontsize=7)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, f"{m[i, j]:.2f}"[1:] if m[i, j] < 1 else "1", ha="center", va="center", fontsize=5,
                    color="white" if m[i, j] < 0.5 else "black")
    fig.colorbar(im, ax=ax, label="Dice")
    ax.set_title("Dice per bone (mean over seeds)")
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


def _img(path: Path, alt: str, width: str = "100%") -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" style="max-width:{width}" src="data:image/png;base64,{data}">'


def pgr_of_means(rows: list[dict]) -> None:
    """Set ``pgr_mean`` = (student - teacher) / (ceiling - teacher) on mean Dice, from the ceiling row of the same
    init and seed (robust where per-bone gaps are tiny)."""
    ceil = {(r["init"], r["seed"]): r["mean_dice"] for r in rows if r["method"] == "ceiling"}
    for r in rows:
        c = ceil.get((r["init"], r["seed"]))
        if r.get("teacher") and c is not None:
            r["pgr_mean"] = metrics.pgr_of_means(r["mean_dice"], float(np.mean(list(r["teacher"].values()))), c)


def write_markdown(out: Path, rows: list[dict]) -> Path:
    """``summary.md``: mean Dice (and PGR of the mean) per (fraction, init, method), over seeds with min-max."""
    pgr_of_means(rows)
    groups = defaultdict(list)
    for r in rows:
        groups[(r["fraction"], r["init"], r["method"])].append(r)
    lines = ["| labels | init | method | seeds | mean Dice | min-max | teacher Dice | PGR |", "|---|---|---|---|---|---|---|---|"]
    for (f, init, method), rs in sorted(groups.items(), key=lambda t: (-t[0][0] if t[0][2] == "ceiling" else t[0][0], t[0][1], t[0][2])):
        d = [r["mean_dice"] for r in rs]
        t = [float(np.mean(list(r["teacher"].values()))) for r in rs if r.get("teacher")]
        p = [r["pgr_mean"] for r in rs if r.get("pgr_mean") is not None]
        lines.append(f"| {100 * f:g}% | {init} | {method} | {len(rs)} | {np.mean(d):.4f} | {min(d):.4f}-{max(d):.4f} | "
                     f"{f'{np.mean(t):.4f}' if t else ''} | {f'{np.mean(p):.3f}' if p else ''} |")
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
             f"steps {dict(cfg.steps)}; Dice on the person-grouped validation fold at the labels' resolution.</p>"]
    if rows:
        parts.append("<h2>Mean Dice vs label fraction</h2>" + _img(plot_dice_vs_fraction(rows, figs / "dice_vs_fraction.png"), "Dice vs label fraction", "720px"))
        head = "<tr><th>fraction</th><th>init</th><th>method</th><th>seed</th><th>mean Dice</th><th>PGR</th><th>wall s</th></tr>"
        def pgr_cell(r):
            return "" if r.get("pgr_mean") is None else f"{r['pgr_mean']:.3f}"

        body = "".join(
            f"<tr><td>{100 * r['fraction']:g}%</td><td>{r['init']}</td><td>{r['method']}</td><td>{r['seed']}</td>"
            f"<td>{r['mean_dice']:.4f}</td><td>{pgr_cell(r)}</td><td>{r['wall_s']}</td></tr>" for r in rows)
        parts.append(f"<h2>Results</h2><table>{head}{body}</table>")
        parts.append("<h2>Dice per bone</h2>" + _img(plot_heatmap(rows, figs / "per_bone_heatmap.png"), "per-bone heatmap"))
        p = plot_pgr(rows, figs / "pgr.png")
        if p:
            parts.append("<h2>PGR per bone</h2>" + _img(p, "PGR per bone"))
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
