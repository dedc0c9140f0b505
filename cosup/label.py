"""The experts label the unlabelled pool; teachers are assigned and noisy labels filtered.

    accelerate launch cosup/label.py experts=runs/experts/<run> [student=runs/distill/<run>/round0/best.safetensors]

Targets are stored compactly at the training resolution: uint8 probabilities in a memmap ``targets.u8``
``[N, K, R, R]`` (not float32 arrays), ``keep.npy`` ``[N, K]`` (False = ignore that bone of that image), and
``targets.json`` (frame numbers, classes, kept share per bone). With a student: shard experts are re-assigned by
the student's embedding, and per (image, bone) the agreement (Dice) between teacher and student decides what is
kept: for each bone the most-agreeing share, the share itself set from the measured mean agreement (clipped to
``[min_keep, 1]``), the rest becomes ignore. Without a student, every target is kept.
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from bonekit import config
from bonekit.cache import Cache
from bonekit.models import load_model, pick_device
from cosup import partition as P
from cosup.teachers import Teachers, read_manifest


@dataclass
class LabelConfig:
    experts: str = ""  # experts run folder (or its experts.json)
    student: str = ""  # current student checkpoint: re-assignment and denoising ("" = keep everything)
    out_dir: str = ""  # default: <experts run>/targets
    min_keep: float = 0.5
    batch: int = 8
    device: str = "auto"


def shard_centroids(student, cache: Cache, manifest: dict, k: int, device) -> np.ndarray:
    """Shard centroids in the *student's* embedding space, from the training images of each shard."""
    shard_of = {int(f): s for f, s in manifest["shards"]["shard_of"].items()}
    frames = sorted(shard_of)
    x = torch.from_numpy(np.stack([cache.stack(f, k) for f in frames]))
    z = P.embed(student.encoder, x, device)
    n = len(manifest["experts"])
    return P.centroids(z, np.array([shard_of[f] for f in frames]), n)


@torch.no_grad()
def make_targets(manifest: dict, out_dir: Path, student_path: str = "", min_keep: float = 0.5, batch: int = 8,
                 device=None, progress: bool = True) -> dict:
    """Write targets for the manifest's pool; returns the written index (also ``targets.json``)."""
    device = device or torch.device("cpu")
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = Cache.open(manifest["cache"])
    classes = manifest["classes"]
    k = len(classes)
    slices = manifest["data"].get("slices", 1)
    pool = [int(f) for f in manifest["pool"]]
    r = cache.resolution
    teachers = Teachers(manifest, device)
    student = None
    if student_path:
        student, _ = load_model(student_path, classes, slices)
        student = student.to(device).eval()
    shards = None
    if manifest["partition"] == "shards":
        if student is not None:  # re-assigned every round by the current student
            cents = shard_centroids(student, cache, manifest, slices // 2, device)
            x = torch.from_numpy(np.stack([cache.stack(f, slices // 2) for f in pool]))
            shards = P.assign(P.embed(student.encoder, x, device), cents).tolist()
        else:
            shard_of = {int(f): s for f, s in manifest["shards"]["shard_of"].items()}
            shards = [shard_of[f] for f in pool]
    targets = np.memmap(out_dir / "targets.u8", dtype=np.uint8, mode="w+", shape=(len(pool), k, r, r))
    agree = np.ones((len(pool), k), dtype=np.float64)
    for i in tqdm(range(0, len(pool), batch), desc="label pool", unit="batch", disable=not progress):
        fr = pool[i : i + batch]
        x = torch.from_numpy(np.stack([cache.stack(f, slices // 2) for f in fr])).to(device).float().div(255)
        t = teachers.predict(x, shards[i : i + batch] if shards else None, frames=fr)
        targets[i : i + len(fr)] = (t * 255).round().byte().cpu().numpy()
        if student is not None:
            s = torch.sigmoid(student(x).float()) > 0.5
            th = t > 0.5
            inter = (s & th).sum((2, 3)).double()
            den = s.sum((2, 3)).double() + th.sum((2, 3)).double()
            agree[i : i + len(fr)] = ((2 * inter + 1e-4) / (den + 1e-4)).cpu().numpy()
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
    np.save(out_dir / "keep.npy", keep)
    index = {"frames": pool, "classes": classes, "resolution": r, "shards": shards,
             "kept_share": dict(zip(classes, keep.mean(0).tolist() if len(pool) else [1.0] * k)),
             "mean_agreement": dict(zip(classes, agree.mean(0).tolist() if len(pool) else [1.0] * k)),
             "student": student_path}
    (out_dir / "targets.json").write_text(json.dumps(index, indent=1))
    with open(out_dir / "kept_share.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["class", "mean_agreement", "kept_share"])
        for c in classes:
            w.writerow([c, f"{index['mean_agreement'][c]:.4f}", f"{index['kept_share'][c]:.4f}"])
    return index


def open_targets(out_dir: Path) -> tuple[dict, np.ndarray, np.ndarray]:
    index = json.loads((out_dir / "targets.json").read_text())
    n, k, r = len(index["frames"]), len(index["classes"]), index["resolution"]
    t = np.memmap(out_dir / "targets.u8", dtype=np.uint8, mode="r", shape=(n, k, r, r))
    return index, t, np.load(out_dir / "keep.npy")


def main(argv: list[str] | None = None) -> Path:
    cfg = config.load(LabelConfig, sys.argv[1:] if argv is None else argv)
    manifest, mpath = read_manifest(cfg.experts)
    device = pick_device(cfg.device)
    out = Path(cfg.out_dir) if cfg.out_dir else mpath.parent / "targets"
    index = make_targets(manifest, out, cfg.student, cfg.min_keep, cfg.batch, device)
    print("kept share per bone: " + ", ".join(f"{c} {v:.2f}" for c, v in index["kept_share"].items()))
    print(f"targets for {len(index['frames'])} pool images -> {out}")
    return out


if __name__ == "__main__":
    main()
