"""What cosup writes and what later stages read, in one place: the experts manifest (``experts.json``) and the
pool targets (``targets.f16`` memmap + ``keep.npy`` + ``targets.json``).

A typed :class:`Manifest` rather than a raw dict read by key in several files: a renamed or missing field fails
here, once, naming the file.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bonekit.errors import DataError


@dataclass
class Expert:
    name: str
    classes: list[str]  # the bones it owns, in its output order
    checkpoint: str  # best.safetensors / last.safetensors of its run
    val_dice: float = float("nan")  # validation Dice on its own bones
    val_per_class: list[float] = field(default_factory=list)
    shard: int | None = None  # data shard it owns (partition=shards)
    crop: dict | None = None  # region-crop expert: {"coarse", "source_cache", "size", "margin"}


@dataclass
class Manifest:
    partition: str  # bones | shards
    classes: list[str]  # the data's classes
    experts: list[Expert]
    labelled: list[int]  # cache frames with labels (the label subset)
    pool: list[int]  # cache frames whose labels are hidden: what the experts label
    val: list[int]  # the validation fold
    train: list[int]  # the training folds (labelled + pool)
    cache: str  # the training-resolution cache folder
    data: dict  # the experts' resolved data config (the student must see the same data)
    labels: dict  # labels.fraction and labels.seed
    shards: dict = field(default_factory=dict)  # method, shard_of {frame: shard}, names / embed_encoder
    gate: dict = field(default_factory=dict)  # cosup/gate.py: {"use": {bone: bool}, "fallback": checkpoint} ({} = none)

    @property
    def slices(self) -> int:
        return int(self.data.get("slices", 1))

    def shard_of(self) -> dict[int, int]:
        return {int(f): int(s) for f, s in self.shards["shard_of"].items()}

    def save(self, path: Path) -> Path:
        path.write_text(json.dumps(dataclasses.asdict(self), indent=1))
        return path

    @classmethod
    def read(cls, path: str | Path) -> tuple[Manifest, Path]:
        """``experts.json`` (or the experts run folder holding it) -> (manifest, its path)."""
        p = Path(path)
        if p.is_dir():
            p = p / "experts.json"
        if not p.is_file():
            raise DataError(p, "no experts manifest: run cosup/experts.py first (experts=<its run folder>)")
        try:
            doc = json.loads(p.read_text())
            doc["experts"] = [Expert(**e) for e in doc["experts"]]
            return cls(**doc), p
        except (json.JSONDecodeError, TypeError, KeyError) as e:
            raise DataError(p, f"not a valid experts manifest ({e})") from None


# ------------------------------------------------------------------------------------------------ pool targets
@dataclass
class PoolTargets:
    """Teacher probabilities for the pool: ``targets [N, K, R, R]`` float16 (uint8 codes would turn a tempered
    teacher's small probabilities into a staircase: at T=2, 0, 1/255, 2/255 -> 0.001, 0.059, 0.082),
    ``keep [N, K]`` bool (False: ignore that bone of that image), and the index (frames, classes, kept share)."""

    index: dict
    targets: np.ndarray
    keep: np.ndarray

    @staticmethod
    def create(out_dir: Path, n: int, k: int, r: int) -> np.ndarray:
        """A writable ``[n, k, r, r]`` float16 memmap in ``out_dir``."""
        out_dir.mkdir(parents=True, exist_ok=True)
        return np.memmap(out_dir / "targets.f16", dtype=np.float16, mode="w+", shape=(n, k, r, r))

    @staticmethod
    def finish(out_dir: Path, index: dict, keep: np.ndarray) -> None:
        """Write ``keep.npy``, ``targets.json`` and ``kept_share.csv`` beside the memmap (last: the marker)."""
        np.save(out_dir / "keep.npy", keep)
        with open(out_dir / "kept_share.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["class", "mean_agreement", "kept_share"])
            for c in index["classes"]:
                w.writerow([c, f"{index['mean_agreement'][c]:.4f}", f"{index['kept_share'][c]:.4f}"])
        (out_dir / "targets.json").write_text(json.dumps(index, indent=1))

    @classmethod
    def open(cls, out_dir: Path) -> PoolTargets:
        p = out_dir / "targets.json"
        if not p.is_file():
            raise DataError(p, "no pool targets here: run cosup/label.py (or distill) first")
        index = json.loads(p.read_text())
        n, k, r = len(index["frames"]), len(index["classes"]), index["resolution"]
        t = np.memmap(out_dir / "targets.f16", dtype=np.float16, mode="r", shape=(n, k, r, r))
        return cls(index, t, np.load(out_dir / "keep.npy"))
