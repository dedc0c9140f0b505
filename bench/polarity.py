"""Which images show bones dark on a bright background (an inverted, MONOCHROME1-style display), where they fall
(the labelled subset, the pool, the validation fold), and how a study cell scores on each polarity.

    python bench/polarity.py runs/study/lowlabel/scratch/finetune/f0.05/s2/last.safetensors \\
        runs/study/lowlabel/scratch/finetune/f0.05/s2 [more cells of the same data ...]

The first argument is a checkpoint: its data config, ``labels.fraction`` and ``labels.seed`` give the split. An
image counts as inverted when its bone pixels (from the labels) are darker on average than the ring of pixels
around them. The cells' ``eval/per_image.csv`` give their validation Dice per image, split by polarity.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import cv2
import numpy as np
import torch
from pool_targets import checkpoint_split

from bonekit.maskbits import unpack


def inverted(image: np.ndarray, bone: np.ndarray, ring: int = 3) -> bool:
    """``image [H, W]`` and ``bone bool [H, W]`` -> True when the bones are darker than the pixels around them."""
    if not bone.any():
        return False
    k = np.ones((2 * ring + 1, 2 * ring + 1), np.uint8)
    around = cv2.dilate(bone.astype(np.uint8), k).astype(bool) & ~bone
    return bool(image[bone].mean() < image[around].mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("cells", nargs="*")
    a = ap.parse_args()
    torch.set_num_threads(1)
    sd, data = checkpoint_split(a.checkpoint)
    k, half = len(sd.classes), data.slices // 2

    def polarity(i: int) -> bool:
        image, words = sd.cache.read(i, half)
        return inverted(image[half], unpack(torch.from_numpy(words[None]), k)[0].numpy().any(0))

    val = {Path(sd.cache.frames[i]["image"]).name: polarity(int(i)) for i in sd.val_idx}  # keyed as per_image.csv
    lab = [polarity(int(i)) for i in sd.labelled]
    print(f"inverted: {sum(lab)} of {len(lab)} labelled images, {np.mean([polarity(int(i)) for i in sd.pool]):.0%} of "
          f"the pool, {sum(val.values())} of {len(val)} validation images")
    if a.cells:
        print("| cell | inverted images | normal images | all |")
        print("|---|---|---|---|")
    for cell in a.cells:
        with open(Path(cell) / "eval" / "per_image.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        dice = {flag: [float(r["mean_dice"]) for r in rows if val[r["image"]] == flag] for flag in (True, False)}
        every = dice[True] + dice[False]
        print(f"| {cell} | {np.mean(dice[True]):.3f} (n={len(dice[True])}) | {np.mean(dice[False]):.3f} "
              f"(n={len(dice[False])}) | {np.mean(every):.3f} |")


if __name__ == "__main__":
    main()
