"""A figure of phantom samples with label outlines: ``python -m bonekit.phantom.figure DIR OUT.png``."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

from bonekit.classes import palette
from bonekit.formats import competition


def outlined(image: np.ndarray, mask: np.ndarray, thickness: int = 1) -> np.ndarray:
    """``uint8 [H, W]`` + ``bool [K, H, W]`` -> ``uint8 [H, W, 3]`` (RGB) with one coloured outline per class."""
    rgb = np.repeat(image[..., None], 3, -1).copy()
    for k, col in enumerate(palette(mask.shape[0])):
        cs, _ = cv2.findContours(mask[k].astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(rgb, cs, -1, col, thickness)
    return rgb


def sheet(split: str | Path, n: int = 8, cols: int = 4, tile: int = 384) -> np.ndarray:
    recs = competition.scan(split)[:n]
    tiles = []
    for r in recs:
        img = competition.read_image(r.image)
        m = competition.read_mask(r.label, *img.shape)
        t = outlined(img, m, max(1, img.shape[0] // 384))
        tiles.append(cv2.resize(t, (tile, tile), interpolation=cv2.INTER_AREA))
    while len(tiles) % cols:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[i : i + cols], 1) for i in range(0, len(tiles), cols)]
    return np.concatenate(rows, 0)


if __name__ == "__main__":
    split, out = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    cv2.imwrite(out, cv2.cvtColor(sheet(split, n, cols=8 if n > 8 else 4, tile=256 if n > 8 else 384), cv2.COLOR_RGB2BGR))
    print(f"wrote {out}")
