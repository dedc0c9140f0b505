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
from bonekit.metrics import counts, dice_from_counts
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
    agree = np.ones((len(pool), k), dtype=np.float64)
    for i in tqdm(range(0, len(pool), batch), desc="label pool", unit="batch", disable=not progress):
        fr = pool[i : i + batch]
        x = torch.from_numpy(np.stack([cache.stack(f, slices // 2) for f in fr])).to(device).float().div(255)
        t = teachers.predict(x, shards[i : i + batch] if shards else None, frames=fr)
        targets[i : i + len(fr)] = (t * 255).round().byte().cpu().numpy()
        if student is not None:
            tp, fp, fn = counts(torch.sigmoid(student(x).float()) > 0.5, t > 0.5)
            agree[i : i + len(fr)] = dice_from_counts(tp.double(), fp.double(), fn.double(), 1e-4).cpu().numpy()
    targets.flush()
    keep = np.ones((len(pool), k), dtype=bool)
    share = np.ones(k)
    if student is not None and len(pool):
        for c in range(k):
            share[c] = float(np.clip(agree[:, c].mean(), min_keep, 1.0))
            n_keep = int(np.ceil(share[c] * len(pool)))
            order = np.argsort(-agree[:, c], kind="stable")
            keep[:, c] = False
            keep[order[:n_keep], c] = True
    index = {"frames": pool, "classes": classes, "resolution": r, "shards": shards,
             "kept_share": dict(zip(classes, keep.mean(0).tolist() if len(pool) else [1.0] * k)),
             "mean_agreement": dict(zip(classes, agree.mean(0).tolist() if len(pool) else [1.0] * k)),
             "student": student_path}
    PoolTargets.finish(out_dir, index, keep)
    return index
