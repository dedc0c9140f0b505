"""Pool targets: the experts label the unlabelled pool; teachers are assigned and noisy labels filtered.

Targets are stored compactly at the training resolution through :class:`cosup.manifest.PoolTargets`. With a
student: shard experts are re-assigned by the student's embedding, and per (image, bone) the agreement (Dice)
between teacher and student decides what is kept: for each bone the most-agreeing share, the share itself set
from the measured mean agreement (clipped to ``[min_keep, 1]``), the rest becomes ignore. Without a student,
every target is kept.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from bonekit.cache import Cache
from bonekit.metrics import counts
from bonekit.models import load_model
from cosup import partition as P
from cosup.manifest import Manifest, PoolTargets
from cosup.teachers import Teachers


def shard_centroids(student, cache: Cache, manifest: Manifest, k: int, device) -> np.ndarray:
    """Shard centroids in the *student's* embedding space, from the training images of each shard."""
    shard_of = manifest.shard_of()
    frames = sorted(shard_of)
    x = torch.from_numpy(np.stack([cache.stack(f, k) for f in frames]))
    z = P.embed(student.encoder, x, device)
    n = len(manifest.experts)
    return P.centroids(z, np.array([shard_of[f] for f in frames]), n)


@torch.no_grad()
def make_targets(manifest: Manifest, out_dir: Path, student_path: str = "", min_keep: float = 0.5, batch: int = 8,
                 device=None, progress: bool = True) -> dict:
    """Write targets for the manifest's pool; returns the written index (also ``targets.json``)."""
    device = device or torch.device("cpu")
    cache = Cache.open(manifest.cache)
    classes = manifest.classes
    k = len(classes)
    slices = manifest.slices
    pool = [int(f) for f in manifest.pool]
    r = cache.resolution
    teachers = Teachers(manifest, device)
    student = None
    if student_path:
        student, _ = load_model(student_path, classes, slices)
        student = student.to(device).eval()
    shards = None
    if manifest.partition == "shards":
        if student is not None:  # re-assigned every round by the current student
            cents = shard_centroids(student, cache, manifest, slices // 2, device)
            x = torch.from_numpy(np.stack([cache.stack(f, slices // 2) for f in pool]))
            shards = P.assign(P.embed(student.encoder, x, device), cents).tolist()
        else:
            shard_of = manifest.shard_of()
            shards = [shard_of[f] for f in pool]
    targets = PoolTargets.create(out_dir, len(pool), k, r)
    agree = np.zeros((len(pool), k), dtype=np.float64)
    loss = np.zeros((len(pool), k), dtype=np.float64)
    empty = np.zeros((len(pool), k), dtype=bool)
    for i in tqdm(range(0, len(pool), batch), desc="label pool", unit="batch", disable=not progress):
        fr = pool[i : i + batch]
        x = torch.from_numpy(np.stack([cache.stack(f, slices // 2) for f in fr])).to(device).float().div(255)
        t = teachers.predict(x, shards[i : i + batch] if shards else None, frames=fr)
        t = t.half().float()  # what is stored: every decision below sees the same values as the student will
        targets[i : i + len(fr)] = t.half().cpu().numpy()
        empty[i : i + len(fr)] = (t.amax((2, 3)) < 0.5).cpu().numpy()
        if student is not None:
            s_logits = student(x).float()
            agree[i : i + len(fr)] = agreement(s_logits, t).cpu().numpy()
            loss[i : i + len(fr)] = plausibility_loss(s_logits, t).cpu().numpy()
    targets.flush()
    keep = ~empty  # every bone is in every hand radiograph: an empty teacher channel is a miss
    if student is not None and len(pool):
        keep = select_targets(loss, agree, empty, min_keep)
    index = {"frames": pool, "classes": classes, "resolution": r, "shards": shards,
             "kept_share": dict(zip(classes, keep.mean(0).tolist() if len(pool) else [1.0] * k)),
             "mean_agreement": dict(zip(classes, agree.mean(0).tolist() if len(pool) and student is not None
                                        else [float("nan")] * k)),
             "empty_share": dict(zip(classes, empty.mean(0).tolist() if len(pool) else [0.0] * k)),
             "student": student_path}
    PoolTargets.finish(out_dir, index, keep)
    return index


@torch.no_grad()
def agreement(student_logits: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Dice ``[B, K]`` between the student's and the teacher's masks (p > 0.5); 0 where both are empty (a joint
    miss is not agreement on a bone that every hand has)."""
    tp, fp, fn = counts(torch.sigmoid(student_logits.float()) > 0.5, teacher > 0.5)
    den = (2 * tp + fp + fn).double()
    return torch.where(den > 0, 2 * tp.double() / den.clamp(min=1), torch.zeros_like(den))


@torch.no_grad()
def plausibility_loss(student_logits: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """The student's loss against each target, ``[B, K]``: pixel BCE + (1 - soft Dice). Low = the target agrees
    with what the student learnt; targets are kept in this order (small-loss selection)."""
    x, t = student_logits.float(), teacher.float()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(x, t, reduction="none").mean((2, 3))
    p = torch.sigmoid(x)
    dice = 1 - (2 * (p * t).sum((2, 3)) + 1) / (p.sum((2, 3)) + t.sum((2, 3)) + 1)
    return bce + dice


def select_targets(loss: np.ndarray, agree: np.ndarray, empty: np.ndarray, min_keep: float) -> np.ndarray:
    """Keep ``[N, K]``: per bone, the targets with the smallest student loss, as many as the bone's mean agreement
    says (at least ``min_keep`` of the non-empty ones); empty teacher channels are never kept."""
    n, k = loss.shape
    keep = np.zeros((n, k), bool)
    for c in range(k):
        ok = np.flatnonzero(~empty[:, c])
        if not len(ok):
            continue
        share = float(np.clip(agree[ok, c].mean(), min_keep, 1.0))
        n_keep = int(np.ceil(share * len(ok)))
        keep[ok[np.argsort(loss[ok, c], kind="stable")[:n_keep]], c] = True
    return keep
