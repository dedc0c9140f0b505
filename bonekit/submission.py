"""Submission CSVs: ``image_name,class,rle``, image by image (sorted by relative path), K rows each in class order."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from bonekit.classes import HAND29
from bonekit.errors import DataError
from bonekit.rle import decode, encode_many


class SubmissionWriter:
    """Streams rows so that a whole test set never sits in memory::

        with SubmissionWriter("out.csv") as w:
            w.add("DCM/ID040/image1661319116107.png", masks)   # masks: bool [K, H, W]
    """

    def __init__(self, path: str | Path, classes: list[str] = HAND29):
        self.path = Path(path)
        self.classes = classes
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Written to a temporary file and renamed only when complete: a failing run never replaces an existing
        # submission with a partial one that looks valid.
        self._tmp = self.path.with_name(f".{self.path.name}.partial")
        self._f = open(self._tmp, "w", newline="")
        self._w = csv.writer(self._f)
        self._w.writerow(["image_name", "class", "rle"])
        self.n = 0

    def add(self, image_path: str | Path, masks: np.ndarray) -> None:
        if masks.shape[0] != len(self.classes):
            raise ValueError(f"{image_path}: {masks.shape[0]} mask channels for {len(self.classes)} classes")
        name = Path(image_path).name  # basenames, _R/_L kept
        for c, rle in zip(self.classes, encode_many(masks)):
            self._w.writerow([name, c, rle])
        self.n += 1

    def close(self) -> None:
        self._f.close()
        self._tmp.replace(self.path)  # atomic on one file system

    def abort(self) -> None:
        self._f.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write(path: str | Path, items: Iterable[tuple[str, np.ndarray]], classes: list[str] = HAND29) -> Path:
    """Write ``(image_path, bool [K, H, W])`` items, sorted by image path."""
    with SubmissionWriter(path, classes) as w:
        for p, m in sorted(items, key=lambda t: str(t[0])):
            w.add(p, m)
    return Path(path)


def read(path: str | Path, height: int, width: int, classes: list[str] = HAND29) -> dict[str, np.ndarray]:
    """``{image_name: bool [K, H, W]}``; every image must have exactly one row per class."""
    import pandas as pd

    path = Path(path)
    df = pd.read_csv(path)  # empty RLE strings come back as NaN: decode() takes them
    if list(df.columns) != ["image_name", "class", "rle"]:
        raise DataError(path, f"header must be image_name,class,rle, got {','.join(df.columns)}")
    lookup = {c: i for i, c in enumerate(classes)}
    out: dict[str, np.ndarray] = {}
    for name, grp in df.groupby("image_name", sort=False):
        m = np.zeros((len(classes), height, width), bool)
        seen = set()
        for c, rle in zip(grp["class"], grp["rle"]):
            if c not in lookup:
                raise DataError(path, f"{name}: unknown class {c!r}")
            seen.add(c)
            m[lookup[c]] = decode(rle, height, width)
        if len(seen) != len(classes):
            raise DataError(path, f"{name}: {len(seen)} classes, expected {len(classes)}")
        out[str(name)] = m
    return out
