"""How good are the targets a model gives the unlabelled pool? Scored against the pool's hidden labels (the phantom,
or labelled data run at a label fraction), with the kind of error they carry and what three denoisers (two of shape,
one of anatomical order) would do to them.

    python bench/pool_targets.py runs/study/lowlabel/scratch/bcp/f0.05/s0/student/round0/last.safetensors [...]

The pool is the checkpoint's own: its data config, ``labels.fraction`` and ``labels.seed``. Per checkpoint it prints
the targets' Dice (per image and bone, at the training resolution, threshold 0.5), the same after keeping only the
largest connected component of each bone, after keeping one bone per pixel (the most probable), and after imposing
anatomy's order (the long rays re-assigned by distance from the thumb, the Radius on the thumb's side); then where the
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


def centroid(p: np.ndarray) -> np.ndarray | None:
    """``float [H, W]`` probability mass -> its centre (y, x), None when there is almost none."""
    m = p.sum()
    if m < 5:
        return None
    yy, xx = np.mgrid[: p.shape[0], : p.shape[1]]
    return np.array([(yy * p).sum() / m, (xx * p).sum() / m])


def ordered_from_thumb(prob: np.ndarray, rays: dict[str, list[int]]) -> np.ndarray:
    """``float [K, H, W]`` -> the same targets with anatomy's order imposed: the four long rays re-assigned by
    their distance from the thumb (index nearest, little farthest) and the Radius on the thumb's side of the Ulna.
    ``rays``: channels per ray ("thumb", "index" .. "little") and of "forearm" (Radius, Ulna)."""
    out = prob.copy()
    thumb = centroid(prob[rays["thumb"]].sum(0))
    if thumb is None:
        return out
    long = [rays[r] for r in ("index", "middle", "ring", "little")]
    centres = [centroid(prob[r].sum(0)) for r in long]
    if all(c is not None for c in centres):
        for new, old in enumerate(np.argsort([np.linalg.norm(c - thumb) for c in centres])):
            out[long[new]] = prob[long[old]]
    radius, ulna = rays["forearm"]
    cr, cu = centroid(prob[radius]), centroid(prob[ulna])
    if cr is not None and cu is not None and np.linalg.norm(cu - thumb) < np.linalg.norm(cr - thumb):
        out[radius], out[ulna] = prob[ulna], prob[radius]
    return out


def target_quality(prob: np.ndarray, gt: np.ndarray, threshold: float = 0.5,
                   rays: dict[str, list[int]] | None = None) -> tuple[dict, dict]:
    """Targets ``prob float [B, K, H, W]`` against labels ``gt bool [B, K, H, W]``: per-(image, bone) Dice of the
    raw targets and the denoised ones (flat, image-major; "rays ordered from the thumb" when ``rays`` is given),
    and pixel counts of where the errors lie."""
    pred = prob > threshold
    top = (prob == prob.max(1, keepdims=True)) & pred  # one bone per pixel: the most probable
    lcc = np.array([[largest_component(p) if p.any() else p for p in img] for img in pred])
    variants = [("raw", pred), ("largest component", lcc), ("one bone per pixel", top)]
    if rays is not None:
        variants.append(("rays ordered from the thumb",
                         np.stack([ordered_from_thumb(p, rays) for p in prob]) > threshold))
    dice = {name: dice_numpy(q, gt).ravel() for name, q in variants}
    bone = gt.any(1, keepdims=True)  # pixels of some bone
    other = (pred.sum(1, keepdims=True) - pred) > 0  # pixels some other bone's target claims
    fp, fn = pred & ~gt, gt & ~pred
    err = {"fp_background": int((fp & ~bone).sum()), "fp_other_bone": int((fp & bone).sum()),
           "fn_empty": int((fn & ~other).sum()), "fn_other_bone": int((fn & other).sum())}
    return dice, err


def ray_channels(classes: list[str]) -> dict[str, list[int]] | None:
    """Channels of each ray and of the forearm (Radius, Ulna) in ``classes``; None when a bone is missing."""
    groups = {**RAYS, "forearm": ["Radius", "Ulna"]}
    if not {b for g in groups.values() for b in g} <= set(classes):
        return None
    return {g: [classes.index(b) for b in bones] for g, bones in groups.items()}


def mirror_order(classes: list[str]) -> tuple[list[int], list[int]] | None:
    """Channels of the four long rays and the forearm, in order and in mirror order (None: bones missing)."""
    rays = ray_channels(classes)
    if rays is None:
        return None
    long = ("index", "middle", "ring", "little")
    same = [c for r in long for c in rays[r]] + rays["forearm"]
    mirror = [c for r in reversed(long) for c in rays[r]] + rays["forearm"][::-1]
    return same, mirror


def read_mirrored(pred: np.ndarray, gt: np.ndarray, order: tuple[list[int], list[int]]) -> np.ndarray:
    """``[B]`` bool: images whose rays and forearm (``pred``, ``gt`` bool ``[B, K, H, W]``) match the labels
    better when read in mirror order, i.e. the model took the hand for its other side."""
    same, mirror = order
    return dice_numpy(pred[:, mirror], gt[:, same]).mean(1) > dice_numpy(pred[:, same], gt[:, same]).mean(1)


def checkpoint_split(ck: str):
    """The data of checkpoint ``ck`` split as it was trained: its data config, label fraction and label seed ->
    (``SegData``, the data config)."""
    c = read_model_meta(ck)["config"]
    data = OmegaConf.merge(OmegaConf.structured(DataConfig), c["data"])
    return setup(data, make_accelerator("no"), c["labels"], with_val=False), data


def score(ck: str, batch: int = 16, threshold: float = 0.5, flip: bool = False) -> dict:
    """Target quality of checkpoint ``ck`` on its own pool (see the module doc); ``flip``: the targets are the mean
    of the model's probabilities on the image and on its mirror image (mirrored back)."""
    sd, data = checkpoint_split(ck)
    labelled = sd.cache.labelled()
    pool = np.array([i for i in sd.pool if labelled[i]], dtype=np.int64)
    if not len(pool):
        raise SystemExit(f"{ck}: its pool holds no image with a (hidden) label to score against")
    model, _ = load_model(ck)
    model.eval()
    k, half = len(sd.classes), data.slices // 2
    dice: dict = {}
    err: dict = {}
    order, rays = mirror_order(list(sd.classes)), ray_channels(list(sd.classes))
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
            d, e = target_quality(prob, gt, threshold, rays)
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
          "rays ordered from the thumb | FP on another bone | FN given to another bone | read as the mirrored hand |")
    print("|---|---|---|---|---|---|---|---|---|")
    for ck in a.checkpoints:
        r = score(ck, flip=a.flip)
        d = r["dice"]
        fp = r["fp_background"] + r["fp_other_bone"]
        fn = r["fn_empty"] + r["fn_other_bone"]
        mirrored = f"{r['mirrored']} of {r['pool']}" if "mirrored" in r else "–"  # "–": not a hand's 29 bones
        print(f"| {ck} | {r['pool']} | {d['raw']:.4f} | {d['largest component']:.4f} | {d['one bone per pixel']:.4f} | "
              f"{d.get('rays ordered from the thumb', float('nan')):.4f} | "
              f"{r['fp_other_bone'] / max(fp, 1):.1%} | {r['fn_other_bone'] / max(fn, 1):.1%} | "
              f"{mirrored} |")


if __name__ == "__main__":
    main()
