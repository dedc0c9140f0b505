"""Evaluate one checkpoint or an ensemble: Dice per bone and per image at the label's resolution, the worst images
as overlays, error-case impact, confusion between neighbouring bones, tuned per-class thresholds, flip TTA.

    accelerate launch finetune/evaluate.py checkpoint=runs/train/<run>/best.safetensors
    accelerate launch finetune/evaluate.py checkpoints=[a.safetensors,b.safetensors] weights=[2,1] vote=soft tta=hflip
    accelerate launch finetune/evaluate.py checkpoint=... thresholds=tune          # writes thresholds.json

The data defaults to the checkpoint's own data config (its validation fold); ``split=test`` scores the test split
(the phantom writes its labels beside it). Images are streamed one at a time.
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from bonekit import config
from bonekit.cache import build
from bonekit.cli import run
from bonekit.config import DataConfig
from bonekit.data import resolve_root
from bonekit.datasets import PairedFrames, volume_name
from bonekit.formats import discover
from bonekit.maskbits import unpack
from bonekit.metrics import (
    counts,
    dice_from_counts,
    format_per_class,
    per_bone_markdown,
    volume_dice,
)
from bonekit.models import pick_device
from bonekit.segdata import setup
from finetune.infer import Predictor, load_config
from finetune.report_figs import dice_bars, overlay, save_rgb

THRESHOLD_GRID = [0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7]


@dataclass
class EvaluateConfig:
    data: DataConfig = field(default_factory=DataConfig)
    checkpoint: str = ""
    checkpoints: list[str] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)  # soft-voting weights, one per checkpoint
    vote: str = "soft"  # soft | hard
    min_votes: int = 0  # hard voting: pixels with >= n votes (0: a majority)
    tta: str = "none"  # none | hflip
    thresholds: str = ""  # "" (0.5) | thresholds.json | tune (search per class on this split, save)
    split: str = "val"  # val (the checkpoint's validation fold) | test
    worst_k: int = 6
    eval_resolution: int = 0  # 0: each label's own resolution
    out_dir: str = ""
    device: str = "auto"


def eval_items(cfg, resolution: int, accelerator_like):
    """PairedFrames of the chosen split: inputs at the model's resolution, labels at their own resolution."""
    if cfg.split == "val":
        # data.pool_root never reaches the validation fold: not cached for evaluation.
        d = setup(OmegaConf.merge(cfg.data, {"resolution": resolution, "pool_root": ""}), accelerator_like, None,
                  cfg.eval_resolution)
        if d.val is None:
            raise ValueError("the validation fold is empty")
        return d.val
    if cfg.split != "test":
        raise ValueError(f"split={cfg.split!r}: val | test")
    classes = list(cfg.data.classes)
    recs = discover(resolve_root(cfg.data, "test"), labels="required")
    inputs = build(recs, resolution, classes, cfg.data.cache_dir or None, workers=cfg.data.workers)
    sizes = {(f["height"], f["width"]) for f in inputs.frames}
    res = cfg.eval_resolution or next(iter(sizes))[0]
    labels = build(recs, res, classes, cfg.data.cache_dir or None, workers=cfg.data.workers)
    idx = np.arange(len(inputs))
    return PairedFrames(inputs, labels, idx, idx, cfg.data.slices)


class _Local:
    """Stands in for an Accelerator where evaluation runs in one process."""

    is_main_process = True

    @staticmethod
    def print(*args, **kwargs):
        print(*args, **kwargs)

    def main_process_first(self):
        import contextlib

        return contextlib.nullcontext()


def main(argv: list[str] | None = None) -> Path:
    argv = sys.argv[1:] if argv is None else argv
    cfg, cks = load_config(EvaluateConfig, argv)
    config.check_choices(cfg, {"tta": ["none", "hflip"], "vote": ["soft", "hard"], "split": ["val", "test"]})
    device = pick_device(cfg.device)
    tune = cfg.thresholds == "tune"
    pred = Predictor(cks, device, list(cfg.weights) or None, cfg.tta, cfg.vote, cfg.min_votes,
                     None if tune else (cfg.thresholds or None), list(cfg.data.classes), cfg.data.slices)
    out = Path(cfg.out_dir or Path("runs") / "evaluate" / datetime.now().strftime("%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    config.save(cfg, out / "config.yaml")
    items = eval_items(cfg, pred.resolution(), _Local())
    names = pred.classes
    k = len(names)
    per_image, grid_dice, names_img, frame_counts, volume_of = [], [], [], [], []
    confusion = torch.zeros(k, k, dtype=torch.float64)
    pred_area = torch.zeros(k, dtype=torch.float64)
    for i in tqdm(range(len(items)), desc="evaluate", unit="img"):
        it = items[i]
        x = it["image"][None].float().div(255)
        gt = unpack(it["words"][None].to(device), k)[0]
        probs = pred.probs(x, gt.shape[-2:])
        if tune:
            row = []
            for t in THRESHOLD_GRID:
                m = pred.combine(probs, torch.full((k,), t))
                row.append(dice_from_counts(*[c.double() for c in counts(m[None], gt[None])])[0].cpu().numpy())
            grid_dice.append(np.stack(row))
        m = pred.combine(probs)
        tp, fp, fn = counts(m[None], gt[None])
        per_image.append(dice_from_counts(tp.double(), fp.double(), fn.double())[0].cpu().numpy())
        frame_counts.append(torch.stack([tp[0], fp[0], fn[0]]).cpu().numpy())  # [3, K]
        frame = items.labels.frames[int(items.label_indices[i])]
        names_img.append(frame_name(frame))
        volume_of.append(volume_name(frame))
        # Confusion: predicted A where the truth is B and not A (neighbouring bones taken for each other).
        wrong = rearrange(m & ~gt, "k h w -> k (h w)").float()
        confusion += (wrong @ rearrange(gt, "k h w -> (h w) k").float()).double().cpu()  # [K pred, K truth]
        pred_area += rearrange(m, "k h w -> k (h w)").sum(1).double().cpu()
        del probs
    dice = np.stack(per_image)  # [N, K]
    thresholds = None
    if tune:
        g = np.stack(grid_dice).mean(0)  # [T, K]
        best = g.argmax(0)
        thresholds = {n: THRESHOLD_GRID[b] for n, b in zip(names, best)}
        (out / "thresholds.json").write_text(json.dumps(thresholds, indent=1))
        # The scores below use the tuned thresholds (on the data they were tuned on: optimistic, say so).
        dice = np.stack(grid_dice)[:, best, np.arange(k)]
    frame_dice, units, names_unit = dice, "images", names_img
    if not tune and any(volume_of):  # slices of volumes: score each volume in 3D
        dice, names_unit = volume_dice(np.stack(frame_counts), volume_of)
        units = f"volumes (3D Dice over {len(names_img)} slices)"
    per_class = dice.mean(0)
    mean = float(per_class.mean())
    print(format_per_class(names, per_class))
    print(f"mean Dice: {mean:.4f} over {len(dice)} {units} ({cfg.split}{', tuned thresholds' if tune else ''})")
    write_tables(out, names, per_class, dice, names_unit)
    write_impact(out, names, dice, names_unit, cfg.worst_k)
    write_confusion(out, names, confusion.numpy(), pred_area.numpy())
    what = (Path(cks[0]).parent.name + "/" + Path(cks[0]).name if len(cks) == 1
            else f"ensemble of {len(cks)} ({cfg.vote} vote)")
    extras = ", ".join(x for x in (f"TTA {cfg.tta}" if cfg.tta != "none" else "",
                                   f"thresholds {cfg.thresholds}" if cfg.thresholds else "") if x)
    dice_bars(names, per_class, out / "per_bone.png",
              f"Dice per bone: {what}{', ' + extras if extras else ''} ({cfg.split}, {len(dice)} {units.split(' (')[0]})")
    # Overlays of the worst images: predicted again, one at a time.
    worst = np.argsort(frame_dice.mean(1))[: cfg.worst_k]  # images, or slices of volumes
    thr = torch.tensor([thresholds[n] for n in names]) if thresholds else None
    for rank, i in enumerate(worst):
        it = items[int(i)]
        gt = unpack(it["words"][None].to(device), k)[0]
        m = pred.combine(pred.probs(it["image"][None].float().div(255), gt.shape[-2:]), thr)
        img = items.labels.images[int(items.label_indices[i])]
        base, _, z = names_img[i].partition(":")  # "ID001_L.nii:z012" -> 00_ID001_L_z012.png (cv2 writes PNG only)
        save_rgb(out / "worst" / f"{rank:02d}_{Path(base).stem}{'_' + z if z else ''}.png",
                 overlay(np.asarray(img), gt.cpu().numpy(), m.cpu().numpy(), f"{names_img[i]}  Dice {frame_dice[i].mean():.4f}"))
    print(f"evaluation -> {out}")
    return out


def frame_name(frame: dict) -> str:
    """A frame's name in tables and overlays: the file name, and ``:z<slice>`` for a slice of a volume (every
    slice of a volume is its own frame, so the file name alone would repeat)."""
    name = Path(frame["image"]).name
    return f"{name}:z{frame['slice']:03d}" if frame.get("kind") == "volume" else name


def write_tables(out: Path, names, per_class, dice, names_img) -> None:
    with open(out / "per_bone.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["class", "dice"])
        w.writerows([[n, f"{d:.6f}"] for n, d in zip(names, per_class)])
    md = per_bone_markdown({"model": per_class}, list(names))
    (out / "per_bone.md").write_text("\n".join(md) + "\n")
    with open(out / "per_image.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "mean_dice"] + list(names))
        for n, row in zip(names_img, dice):
            w.writerow([n, f"{row.mean():.6f}"] + [f"{v:.6f}" for v in row])


def write_impact(out: Path, names, dice, names_img, worst_k: int) -> None:
    """How much the mean Dice (mean over classes of the mean over images) would rise if an error were fixed.

    Fixing bone k of image i sets Dice[i, k] to 1: the mean rises by (1 - Dice[i, k]) / (N * K). Fixing bone k
    everywhere raises it by (1 - mean_i Dice[i, k]) / K. Sorted, largest first.
    """
    n, k = dice.shape
    rows = []
    for i in np.argsort(dice.mean(1))[:worst_k]:
        for c in range(k):
            rows.append(("image-bone", names_img[i], names[c], float(dice[i, c]), (1 - dice[i, c]) / (n * k)))
    for c in range(k):
        rows.append(("bone", "all images", names[c], float(dice[:, c].mean()), (1 - dice[:, c].mean()) / k))
    rows.sort(key=lambda r: -r[4])
    with open(out / "error_impact.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["scope", "image", "bone", "dice", "mean_dice_gain_if_fixed"])
        w.writerows([[a, b, c, f"{d:.6f}", f"{g:.6f}"] for a, b, c, d, g in rows])
    top = ["| scope | image | bone | Dice | gain if fixed |", "|---|---|---|---|---|"]
    top += [f"| {a} | {b} | {c} | {d:.4f} | +{g:.4f} |" for a, b, c, d, g in rows[:20]]
    (out / "error_impact.md").write_text("\n".join(top) + "\n")


def write_confusion(out: Path, names, conf: np.ndarray, area: np.ndarray) -> None:
    """Pairs (predicted A, true B): pixels predicted as A that are B and not A, as a share of A's prediction."""
    rows = []
    for a in range(len(names)):
        for b in range(len(names)):
            if a != b and conf[a, b] > 0:
                rows.append((names[a], names[b], int(conf[a, b]), conf[a, b] / max(area[a], 1)))
    rows.sort(key=lambda r: -r[3])
    with open(out / "confusion.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["predicted", "true", "pixels", "share_of_predicted"])
        w.writerows([[a, b, p, f"{s:.6f}"] for a, b, p, s in rows])


if __name__ == "__main__":
    run(main)
