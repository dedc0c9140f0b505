"""How good are the targets a model gives the unlabelled pool? Scored against the pool's hidden labels (the phantom,
or labelled data run at a label fraction), with the kind of error they carry and what two shape-level denoisers
would do to them.

    python bench/pool_targets.py runs/study/lowlabel/scratch/bcp/f0.05/s0/student/round0/last.safetensors [...]

The pool is the checkpoint's own: its data config, ``labels.fraction`` and ``labels.seed``. Per checkpoint it prints
the targets' Dice (per image and bone, at the training resolution, threshold 0.5), the same after keeping only the
largest connected component of each bone, and after keeping one bone per pixel (the most probable); then where the
errors lie: false-positive pixels on background or on another bone, missed pixels left empty or given to another
bone. Mostly "another bone" means the targets confuse bone identity (which finger, which phalanx) more than shape.
Last, how many images the model reads as the mirrored hand: their index..little rays and forearm bones score higher
against the labels once read in mirror order (index <-> little, middle <-> ring, Radius <-> Ulna).
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np
import torch
from omegaconf import OmegaConf

from bonekit.accel import make_accelerator
from bonekit.classes import RAYS
from bonekit.config import DataConfig
from bonekit.maskbits import unpack
from bonekit.metrics import dice_numpy
from bonekit.models import load_model, read_model_meta
from bonekit.segdata import setup


def largest_component(m: np.ndarray) -> np.ndarray:
    """``bool [H, W]`` -> the largest 8-connected component of ``m`` (``m`` itself when it has at most one)."""
    n, lab, stats, _ = cv2.connectedComponentsWithStats(m.astype(np.uint8), connectivity=8)
    if n <= 2:
        return m
    return lab == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def target_quality(prob: np.ndarray, gt: np.ndarray, threshold: float = 0.5) -> tuple[dict, dict]:
    """Targets ``prob float [B, K, H, W]`` against labels ``gt bool [B, K, H, W]``: per-(image, bone) Dice of the
    raw targets and the two denoised ones (flat, image-major), and pixel counts of where the errors lie."""
    pred = prob > threshold
    top = (prob == prob.max(1, keepdims=True)) & pred  # one bone per pixel: the most probable
    lcc = np.array([[largest_component(p) if p.any() else p for p in img] for img in pred])
    dice = {name: dice_numpy(q, gt).ravel()
            for name, q in (("raw", pred), ("largest component", lcc), ("one bone per pixel", top))}
    bone = gt.any(1, keepdims=True)  # pixels of some bone
    other = (pred.sum(1, keepdims=True) - pred) > 0  # pixels some other bone's target claims
    fp, fn = pred & ~gt, gt & ~pred
    err = {"fp_background": int((fp & ~bone).sum()), "fp_other_bone": int((fp & bone).sum()),
           "fn_empty": int((fn & ~other).sum()), "fn_other_bone": int((fn & other).sum())}
    return dice, err


def mirror_order(classes: list[str]) -> tuple[list[int], list[int]] | None:
    """Channels of the four long rays and the forearm, in order and in mirror order (None: bones missing)."""
    names = [b for r in ("index", "middle", "ring", "little") for b in RAYS[r]] + ["Radius", "Ulna"]
    mirrored = [b for r in ("little", "ring", "middle", "index") for b in RAYS[r]] + ["Ulna", "Radius"]
    if not set(names) <= set(classes):
        return None
    return [classes.index(b) for b in names], [classes.index(b) for b in mirrored]


def read_mirrored(pred: np.ndarray, gt: np.ndarray, order: tuple[list[int], list[int]]) -> np.ndarray:
    """``[B]`` bool: images whose rays and forearm (``pred``, ``gt`` bool ``[B, K, H, W]``) match the labels
    better when read in mirror order, i.e. the model took the hand for its other side."""
    same, mirror = order
    return dice_numpy(pred[:, mirror], gt[:, same]).mean(1) > dice_numpy(pred[:, same], gt[:, same]).mean(1)


def score(ck: str, batch: int = 16, threshold: float = 0.5, flip: bool = False) -> dict:
    """Target quality of checkpoint ``ck`` on its own pool (see the module doc); ``flip``: the targets are the mean
    of the model's probabilities on the image and on its mirror image (mirrored back)."""
    meta = read_model_meta(ck)
    c = meta["config"]
    data = OmegaConf.merge(OmegaConf.structured(DataConfig), c["data"])
    sd = setup(data, make_accelerator("no"), c["labels"]["fraction"], c["labels"]["seed"], with_val=False)
    labelled = sd.cache.labelled()
    pool = np.array([i for i in sd.pool if labelled[i]], dtype=np.int64)
    if not len(pool):
        raise SystemExit(f"{ck}: its pool holds no image with a (hidden) label to score against")
    model, _ = load_model(ck)
    model.eval()
    k, half = len(sd.classes), data.slices // 2
    dice: dict = {}
    err: dict = {"mirrored": 0}
    order = mirror_order(list(sd.classes))
    with torch.no_grad():
        for j in range(0, len(pool), batch):
            idx = pool[j:j + batch]
            images, words = zip(*(sd.cache.read(i, half) for i in idx))
            x = torch.from_numpy(np.stack(images)).float().div_(255)
            prob = torch.sigmoid(model(x).float())
            if flip:
                prob = (prob + torch.sigmoid(model(x.flip(-1)).float()).flip(-1)) / 2
            prob = prob.numpy()
            gt = unpack(torch.from_numpy(np.stack(words)), k).numpy().astype(bool)
            d, e = target_quality(prob, gt, threshold)
            if order is not None:
                e["mirrored"] = int(read_mirrored(prob > threshold, gt, order).sum())
            for n, v in d.items():
                dice.setdefault(n, []).extend(v)
            for n, v in e.items():
                err[n] = err.get(n, 0) + v
    return {"pool": len(pool), "dice": {n: float(np.mean(v)) for n, v in dice.items()}, **err}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--flip", action="store_true", help="targets averaged with the mirrored image's (flip TTA)")
    a = ap.parse_args()
    torch.set_num_threads(1)  # a diagnostic beside training runs: one core
    print("| checkpoint | pool images | target Dice | largest component per bone | one bone per pixel | "
          "FP on another bone | FN given to another bone | read as the mirrored hand |")
    print("|---|---|---|---|---|---|---|---|")
    for ck in a.checkpoints:
        r = score(ck, flip=a.flip)
        d = r["dice"]
        fp = r["fp_background"] + r["fp_other_bone"]
        fn = r["fn_empty"] + r["fn_other_bone"]
        print(f"| {ck} | {r['pool']} | {d['raw']:.4f} | {d['largest component']:.4f} | {d['one bone per pixel']:.4f} | "
              f"{r['fp_other_bone'] / max(fp, 1):.1%} | {r['fn_other_bone'] / max(fn, 1):.1%} | "
              f"{r['mirrored']} of {r['pool']} |")


if __name__ == "__main__":
    main()
