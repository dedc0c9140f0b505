"""Dice per (image, class), exactly as the competition computes it (formats.md).

Dice = (2|P∩G| + eps) / (|P| + |G| + eps), eps = 1e-4, on binary masks; mean over images per class, then mean
over classes. Counts are computed on the device where the tensors live: only ``[N, K]`` integers ever move to the
host, never a 2048² float map.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

EPS = 1e-4


@torch.no_grad()
def counts(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``pred, target: bool [N, K, H, W]`` -> ``tp, fp, fn: int64 [N, K]`` (on pred's device)."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    p = rearrange(pred, "n k ... -> n k (...)")
    g = rearrange(target, "n k ... -> n k (...)")
    tp = (p & g).sum(-1)
    ps = p.sum(-1)
    gs = g.sum(-1)
    return tp, ps - tp, gs - tp


@torch.no_grad()
def counts_from_logits(
    logits: torch.Tensor,
    target: torch.Tensor,
    threshold: float | torch.Tensor = 0.5,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits ``[N, K, h, w]`` at any resolution vs ``target: bool [N, K, H, W]`` at the label's resolution.

    Logits are upsampled bilinearly to ``H, W`` (as the competition baseline does), then ``sigmoid > threshold``
    (strict). ``threshold`` may be a ``[K]`` tensor of per-class thresholds.
    """
    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(logits.float(), size=target.shape[-2:], mode="bilinear", align_corners=False)
    thr = torch.as_tensor(threshold, device=logits.device, dtype=torch.float32)
    if thr.ndim == 1:
        thr = thr.view(1, -1, 1, 1)
    pred = torch.sigmoid(logits.float()) > thr
    return counts(pred, target.bool())


def dice_from_counts(tp, fp, fn, eps: float = EPS):
    """Per-(image, class) Dice from counts (torch or numpy, any shape)."""
    return (2 * tp + eps) / (2 * tp + fp + fn + eps)


def volume_dice(frame_counts: np.ndarray, volume_of: list[str], eps: float = EPS) -> tuple[np.ndarray, list[str]]:
    """3D Dice per (volume, class): ``frame_counts [N, 3, K]`` (tp, fp, fn of each slice) summed over the slices of
    each volume (``volume_of[i]``: the volume of slice ``i``) -> (Dice ``[V, K]``, volume names in first-seen order).

    Why not the mean over slices: most classes are absent from most slices of a volume, and the per-slice Dice
    scores an absent class 1 when nothing is predicted and 0 for one stray pixel, so it measures emptiness more
    than bones (predicting nothing at all scored 0.83 on the phantom's volumes)."""
    order = list(dict.fromkeys(volume_of))
    pos = {v: j for j, v in enumerate(order)}
    total = np.zeros((len(order), *np.asarray(frame_counts).shape[1:]), dtype=np.float64)
    for c, v in zip(np.asarray(frame_counts, dtype=np.float64), volume_of):
        total[pos[v]] += c
    return dice_from_counts(total[:, 0], total[:, 1], total[:, 2], eps), order


def summarise(dice: np.ndarray) -> tuple[np.ndarray, float]:
    """``dice: [N, K]`` per (image, class) -> (per-class mean over images ``[K]``, mean over classes)."""
    per_class = np.asarray(dice, dtype=np.float64).mean(axis=0)
    return per_class, float(per_class.mean())


def dice_numpy(pred: np.ndarray, target: np.ndarray, eps: float = EPS) -> np.ndarray:
    """Plain numpy reference: ``bool [N, K, H, W]`` pair -> Dice ``[N, K]``."""
    p = pred.reshape(pred.shape[0], pred.shape[1], -1).astype(np.float64)
    g = target.reshape(target.shape[0], target.shape[1], -1).astype(np.float64)
    inter = (p * g).sum(-1)
    return (2 * inter + eps) / (p.sum(-1) + g.sum(-1) + eps)


class DiceTable:
    """Accumulates per-(image, class) counts over batches (and processes, via ``gather``)."""

    def __init__(self):
        self.rows: list[np.ndarray] = []  # each [n, 3, K] int64

    def add(self, tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> None:
        # Small [n, K] tensors: this is the only device -> host copy of evaluation.
        self.rows.append(torch.stack([tp, fp, fn], 1).cpu().numpy())

    def counts(self) -> np.ndarray:
        """(tp, fp, fn) ``[N, 3, K]`` of everything added so far."""
        if not self.rows:
            raise ValueError("no images were evaluated")
        return np.concatenate(self.rows, 0).astype(np.float64)

    def dice(self) -> np.ndarray:
        """Dice ``[N, K]`` of everything added so far."""
        c = self.counts()
        return dice_from_counts(c[:, 0], c[:, 1], c[:, 2])


def format_per_class(names: list[str], per_class) -> str:
    """The validation print style: one ``name : 0.9431`` line per class."""
    return "\n".join(f"{n} : {float(d):.4f}" for n, d in zip(names, per_class))


def pgr(student, teacher, ceiling, min_gap: float = 1e-6):
    """Performance gap recovered (Burns et al., 2023): (student - teacher) / (ceiling - teacher), per class;
    NaN where the ceiling does not beat the teacher by more than ``min_gap`` (nothing to recover: a tiny gap turns
    noise into huge ratios, so reports use ``min_gap=0.05`` per bone and also give the PGR of the mean Dice)."""
    s, t, c = (np.asarray(v, dtype=np.float64) for v in (student, teacher, ceiling))
    gap = c - t
    out = np.full_like(gap, np.nan)
    ok = gap > min_gap
    out[ok] = (s[ok] - t[ok]) / gap[ok]
    return out


def pgr_of_means(student: float, teacher: float, ceiling: float, min_gap: float = 1e-6) -> float | None:
    """PGR of the mean Dice (robust where per-bone gaps are tiny); None where the ceiling does not beat the teacher
    by more than ``min_gap``. The one implementation that distill's report, the study and its report call."""
    v = float(pgr([student], [teacher], [ceiling], min_gap)[0])
    return None if np.isnan(v) else v


def per_bone_markdown(rows: dict[str, np.ndarray | list[float]], classes: list[str], digits: int = 4) -> list[str]:
    """The one per-bone table: a markdown row per model (name, mean over bones, Dice per bone; NaN left empty).
    One model is written transposed (a row per bone), which reads better."""
    def cell(x):
        return "" if x is None or np.isnan(x) else f"{x:.{digits}f}"

    if len(rows) == 1:
        (name, v), = rows.items()
        v = np.asarray(v, dtype=np.float64)
        return (["| bone | Dice |", "|---|---|"] + [f"| {c} | {cell(x)} |" for c, x in zip(classes, v)]
                + [f"| **mean** | **{np.nanmean(v):.{digits}f}** |"])
    out = ["| model | mean | " + " | ".join(classes) + " |", "|---" * (len(classes) + 2) + "|"]
    for name, v in rows.items():
        v = np.asarray(v, dtype=np.float64)
        out.append(f"| {name} | {np.nanmean(v):.{digits}f} | " + " | ".join(cell(x) for x in v) + " |")
    return out
