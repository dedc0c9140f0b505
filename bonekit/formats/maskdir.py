"""A folder of per-class mask PNGs::

    <root>/images/<name>.png
    <root>/masks/<name>/<class>.png      # non-zero = bone; a missing class file = empty channel
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from bonekit.errors import DataError
from bonekit.formats.competition import Record, side_of


def scan(root: str | Path) -> list[Record]:
    root = Path(root)
    imgs = sorted((root / "images").glob("*.png"))
    if not imgs:
        raise DataError(root / "images", "empty data folder: no PNG images")
    recs = []
    for img in imgs:
        mdir = root / "masks" / img.stem
        if not mdir.is_dir():
            raise DataError(img, f"image has no mask folder (expected {mdir})")
        recs.append(Record(img, mdir, person=img.stem.split("_")[0], side=side_of(img.name), kind="maskdir"))
    return recs


def read_mask(mask_dir: str | Path, height: int, width: int, classes: list[str]) -> np.ndarray:
    mask_dir = Path(mask_dir)
    known = set(classes)
    for f in mask_dir.glob("*.png"):
        if f.stem not in known:
            raise DataError(f, f"unknown label {f.stem!r} (known: {', '.join(classes)})")
    out = np.zeros((len(classes), height, width), bool)
    for k, c in enumerate(classes):
        f = mask_dir / f"{c}.png"
        if f.is_file():
            m = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
            if m is None:
                raise DataError(f, "corrupt or truncated mask PNG")
            if m.shape != (height, width):
                raise DataError(f, f"mask is {m.shape[0]}x{m.shape[1]}, image is {height}x{width}")
            out[k] = m > 0
    return out


def write(root: str | Path, name: str, image: np.ndarray, mask: np.ndarray, classes: list[str]) -> None:
    """Write ``image: uint8 [H, W]`` and ``mask: bool [K, H, W]`` in this layout."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / "images" / f"{name}.png"), image)
    mdir = root / "masks" / name
    mdir.mkdir(parents=True, exist_ok=True)
    for k, c in enumerate(classes):
        if mask[k].any():
            cv2.imwrite(str(mdir / f"{c}.png"), mask[k].astype(np.uint8) * 255)
