"""Batched segmentation augmentation on the device that keeps images and masks aligned.

Per-sample parameters come from generators keyed by ``(seed, epoch, frame)`` (see :mod:`bonekit.augment`), so
a resumed or multi-process run augments every sample exactly as an unbroken single-process run.

Geometry (flip, small rotation, scale, shift, optional elastic field) is one sampling grid applied to the image
(bilinear) and to the masks (nearest). Aimed at the weak small bones: Cutout, Mixup, and copy-paste of small
bones (fingertips, Pisiform, Trapezoid) from another image of the batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from bonekit.augment import _blur, _gen
from bonekit.classes import SMALL_BONES


@dataclass
class SegAugConfig:
    """Segmentation augmentation: the ``aug.*`` keys of every segmentation stage, and what :func:`augment` reads."""

    flip: float = 0.5  # probability of a horizontal flip (right and left hands are mirror images)
    rotation: float = 10.0  # degrees, +-
    scale: float = 0.1  # +- relative zoom
    shift: float = 0.05  # +- share of the image
    elastic_p: float = 0.0  # probability of a smooth elastic displacement field
    elastic_alpha: float = 0.03  # displacement amplitude (share of the image)
    gamma: float = 0.2  # log-uniform +- of the gamma curve
    contrast: float = 0.15  # +- relative contrast around the image mean
    blur_p: float = 0.2  # probability of a Gaussian blur
    noise: float = 0.02  # sd of additive Gaussian noise
    clahe_p: float = 0.0  # probability of CLAHE (OpenCV, on the CPU) before the rest
    cutout_p: float = 0.0  # probability of blanking a square of the image (not of the masks)
    cutout_size: float = 0.15  # the square's side, share of the image
    mixup_p: float = 0.0  # probability of mixing with the next image of the batch (soft targets)
    copy_paste_p: float = 0.0  # probability of pasting small bones from the next image of the batch
    copy_paste_classes: list[str] = field(default_factory=lambda: list(SMALL_BONES))  # bones that copy-paste moves
    invert_p: float = 0.0  # probability of showing the image inverted (MONOCHROME1: bones dark on bright)


def paste_indices(cfg: SegAugConfig, classes: Sequence[str]) -> tuple[int, ...]:
    """Positions in ``classes`` of the bones ``cfg.copy_paste_classes`` names (names absent from the data drop)."""
    lookup = {c: i for i, c in enumerate(classes)}
    return tuple(lookup[c] for c in cfg.copy_paste_classes if c in lookup)


def _params(keys: list[tuple[int, ...]], cfg: SegAugConfig) -> dict[str, torch.Tensor]:
    names = ["flip", "rot", "scale", "tx", "ty", "elastic", "gamma", "contrast", "blur", "cut", "cx", "cy", "mix",
             "lam", "paste", "px", "py", "seed", "invert"]
    cols: dict[str, list[float]] = {k: [] for k in names}
    for key in keys:
        r = np.random.default_rng(np.random.SeedSequence([*key, 4242]))
        cols["flip"].append(-1.0 if r.random() < cfg.flip else 1.0)
        cols["rot"].append(math.radians(r.uniform(-cfg.rotation, cfg.rotation)))
        cols["scale"].append(1.0 + r.uniform(-cfg.scale, cfg.scale))
        cols["tx"].append(r.uniform(-cfg.shift, cfg.shift) * 2)
        cols["ty"].append(r.uniform(-cfg.shift, cfg.shift) * 2)
        cols["elastic"].append(float(r.random() < cfg.elastic_p))
        cols["gamma"].append(math.exp(r.uniform(-cfg.gamma, cfg.gamma)))
        cols["contrast"].append(1.0 + r.uniform(-cfg.contrast, cfg.contrast))
        cols["blur"].append(r.uniform(0.3, 1.2) if r.random() < cfg.blur_p else 0.0)
        cols["cut"].append(float(r.random() < cfg.cutout_p))
        cols["cx"].append(r.uniform(0, 1))
        cols["cy"].append(r.uniform(0, 1))
        cols["mix"].append(float(r.random() < cfg.mixup_p))
        cols["lam"].append(r.beta(0.4, 0.4))
        cols["paste"].append(float(r.random() < cfg.copy_paste_p))
        cols["px"].append(r.uniform(-0.15, 0.15))
        cols["py"].append(r.uniform(-0.15, 0.15))
        cols["seed"].append(float(r.integers(0, 2**31 - 1)))
        cols["invert"].append(float(r.random() < cfg.invert_p))  # drawn last: the earlier draws stay as they were
    return {k: torch.tensor(v, dtype=torch.float64 if k == "seed" else torch.float32) for k, v in cols.items()}


def augment(x: torch.Tensor, y: torch.Tensor, keys: list[tuple[int, ...]], cfg: SegAugConfig,
            ignore: torch.Tensor | None = None, paste: Sequence[int] = ()
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``x [B, C, H, W]`` in [0, 1], ``y [B, K, H, W]`` float targets (hard or soft), optional ``ignore``
    ``[B, K, H, W]`` -> augmented (x, y, ignore). Mixup and copy-paste pair sample i with sample i+1 (cyclic);
    ``paste`` holds the channels of ``y`` that copy-paste moves (:func:`paste_indices`)."""
    b, _, h, w = x.shape
    dev = x.device
    p = _params(keys, cfg)
    c, s = torch.cos(p["rot"]), torch.sin(p["rot"])
    sc = 1.0 / p["scale"]
    th = torch.stack([torch.stack([c * sc * p["flip"], -s * sc, p["tx"]], 1),
                      torch.stack([s * sc * p["flip"], c * sc, p["ty"]], 1)], 1).to(dev, x.dtype)
    grid = F.affine_grid(th, [b, 1, h, w], align_corners=False)
    if bool((p["elastic"] > 0).any()):
        coarse = torch.stack([torch.randn(2, 6, 6, generator=_gen(dev, int(sd) + 1), device=dev) for sd in p["seed"].tolist()])
        field = rearrange(F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False),
                          "b xy h w -> b h w xy")  # the (x, y) displacement per pixel, grid_sample's layout
        grid = grid + field * (cfg.elastic_alpha * 2) * p["elastic"].to(dev).view(b, 1, 1, 1)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    y = F.grid_sample(y, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    if ignore is not None:
        ignore = F.grid_sample(ignore.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False) > 0.5
    # Intensity: polarity (exports of MONOCHROME1 images show bones dark), gamma, contrast, blur, noise.
    shape = (-1, 1, 1, 1)
    if bool((p["invert"] > 0).any()):
        inv = p["invert"].to(dev, x.dtype).view(shape)
        x = inv * (1 - x) + (1 - inv) * x
    x = x.clamp(0, 1) ** p["gamma"].to(dev).view(shape)
    m = x.mean((1, 2, 3), keepdim=True)
    x = ((x - m) * p["contrast"].to(dev).view(shape) + m).clamp(0, 1)
    if bool((p["blur"] > 0).any()):
        x = _blur(x, p["blur"].to(dev))
    if cfg.noise > 0:
        n = torch.stack([torch.randn(x.shape[1:], generator=_gen(dev, int(sd)), device=dev) for sd in p["seed"].tolist()])
        x = (x + n.to(x.dtype) * cfg.noise).clamp(0, 1)
    # Copy-paste: the chosen small bones of the next image, shifted, pasted with their pixels.
    if paste and bool((p["paste"] > 0).any()):
        cls = list(paste)
        nxt = torch.roll(torch.arange(b, device=dev), -1)
        for i in torch.nonzero(p["paste"] > 0).flatten().tolist():
            j = int(nxt[i])
            src = y[j, cls] > 0.5  # [n, H, W]
            dy, dx = int(p["py"][i] * h), int(p["px"][i] * w)
            moved = torch.roll(src, shifts=(dy, dx), dims=(1, 2))
            region = moved.any(0)
            x[i, :, region] = torch.roll(x[j], shifts=(dy, dx), dims=(1, 2))[:, region]
            y[i, cls] = torch.maximum(y[i, cls], moved.to(y.dtype))
    # Mixup: soft targets.
    if bool((p["mix"] > 0).any()):
        lam = torch.where(p["mix"] > 0, p["lam"], torch.ones_like(p["lam"])).to(dev).view(shape)
        nxt = torch.roll(torch.arange(b, device=dev), -1)
        x = lam * x + (1 - lam) * x[nxt]
        y = lam * y + (1 - lam) * y[nxt]
    # Cutout: a blank square in the image only (the bones are still there: the model must infer them).
    if bool((p["cut"] > 0).any()):
        yy = torch.arange(h, device=dev).view(1, h, 1) / h
        xx = torch.arange(w, device=dev).view(1, 1, w) / w
        half = cfg.cutout_size / 2
        box = ((yy - p["cy"].to(dev).view(-1, 1, 1)).abs() < half) & ((xx - p["cx"].to(dev).view(-1, 1, 1)).abs() < half)
        box = box & (p["cut"].to(dev).view(-1, 1, 1) > 0)
        x = x.masked_fill(box[:, None], 0.0)
    return x, y, ignore
