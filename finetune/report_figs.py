"""Figures of evaluation: overlays of ground truth vs prediction with errors, per-bone Dice bars."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from bonekit.classes import palette


def overlay(image: np.ndarray, gt: np.ndarray, pred: np.ndarray, title: str = "") -> np.ndarray:
    """``image uint8 [H, W]``, ``gt, pred bool [K, H, W]`` -> RGB ``[H, 3W, 3]``: ground truth outlines | prediction
    outlines (per-bone colours) | errors (red: missed bone, cyan: false positive on background, yellow: wrong bone)."""
    cols = palette(gt.shape[0])
    if image.shape[0] < 384:  # small phantoms: enlarge (nearest) so outlines stay readable
        f = -(-384 // image.shape[0])
        image = np.kron(image, np.ones((f, f), image.dtype))
        gt = gt.repeat(f, 1).repeat(f, 2)
        pred = pred.repeat(f, 1).repeat(f, 2)
    t = max(1, image.shape[0] // 300)

    def outlines(m):
        rgb = np.repeat(image[..., None], 3, -1).copy()
        for k in range(m.shape[0]):
            cs, _ = cv2.findContours(m[k].astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(rgb, cs, -1, cols[k], t)
        return rgb

    err = np.repeat((image[..., None] * 0.6).astype(np.uint8), 3, -1)
    g_any, p_any = gt.any(0), pred.any(0)
    # Wrong bone: predicted as a bone the truth does not have there, while a true bone there was not predicted
    # (neighbours taken for each other). A pixel right for one of two overlapping bones is not "wrong".
    wrong = (pred & ~gt).any(0) & (gt & ~pred).any(0)
    err[g_any & ~p_any] = (255, 40, 40)
    err[p_any & ~g_any] = (40, 230, 255)
    err[wrong] = (255, 220, 0)
    panels = [outlines(gt), outlines(pred), err]
    for p, name in zip(panels, ["ground truth", "prediction", "missed (red) / false positive (cyan) / wrong bone (yellow)"]):
        cv2.putText(p, name, (8, 8 + 12 * t), cv2.FONT_HERSHEY_SIMPLEX, 0.35 * t, (255, 255, 255), max(1, t // 2), cv2.LINE_AA)
    out = np.concatenate(panels, 1)
    if title:
        cv2.putText(out, title, (8, out.shape[0] - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.35 * t, (255, 255, 0), max(1, t // 2), cv2.LINE_AA)
    return out


def save_rgb(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def dice_bars(names: list[str], values, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 3.4), dpi=110)
    v = np.asarray(values)
    ax.bar(range(len(names)), v, color=[np.array(c) / 255 for c in palette(len(names))])
    ax.set_xticks(range(len(names)), names, rotation=70, fontsize=7)
    ax.set_ylim(0, 1)
    ax.axhline(v.mean(), color="k", lw=0.8, ls="--")  # the mean, named in the title (a legend hid bars)
    ax.set_ylabel("Dice")
    ax.set_title(f"{title}; dashed: mean {v.mean():.4f}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
