"""Batched X-ray augmentation on the accelerator's device.

Random parameters are drawn per sample from a generator keyed by ``(seed, epoch, sample index)``, so a sample gets
the same views whichever process, batch split or resumed run handles it. The heavy work (warping, blur, noise)
runs batched on the device, so a GPU is never starved by the CPU.

Geometry is an affine map per sample (``theta: [B, 2, 3]`` for ``F.affine_grid``), from output coordinates in
[-1, 1] to input coordinates: random resized crop, rotation, horizontal flip. No colour jitter: X-rays are grey.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class ViewConfig:
    """Views for label-free pretraining: the ``views.*`` keys of selfsup/pretrain.py, and what
    :func:`make_views` reads (pass ``OmegaConf.to_object(cfg.views)``: plain attributes, read per sample)."""

    size: int = 96  # output side in pixels
    scale: list[float] = field(default_factory=lambda: [0.3, 1.0])  # crop area as a share of the image
    ratio: list[float] = field(default_factory=lambda: [3 / 4, 4 / 3])  # crop aspect ratio range
    rotation: float = 15.0  # degrees, +-
    flip: float = 0.5  # probability of a horizontal flip
    gamma: list[float] = field(default_factory=lambda: [0.7, 1.4])  # gamma curve range (log-uniform)
    contrast: list[float] = field(default_factory=lambda: [0.7, 1.3])  # contrast factor range
    brightness: float = 0.1  # +- additive brightness
    noise: list[float] = field(default_factory=lambda: [0.0, 0.04])  # sd range of additive Gaussian noise
    blur_p: float = 0.4  # probability of a Gaussian blur
    blur_sigma: list[float] = field(default_factory=lambda: [0.3, 1.5])  # its sigma range, pixels


def sample_params(keys: list[tuple[int, ...]], cfg: ViewConfig) -> dict[str, torch.Tensor]:
    """Per-sample random parameters (CPU, a handful of numbers each). ``keys`` identify the samples."""
    cols: dict[str, list[float]] = {k: [] for k in ("cx", "cy", "sx", "sy", "rot", "flip", "gamma", "contrast",
                                                   "bright", "noise", "blur", "seed")}
    for key in keys:
        r = np.random.default_rng(np.random.SeedSequence(list(key)))
        area = r.uniform(*cfg.scale)
        ratio = math.exp(r.uniform(math.log(cfg.ratio[0]), math.log(cfg.ratio[1])))
        sx = min(1.0, math.sqrt(area * ratio))  # half-widths in normalised coordinates ([-1, 1] spans 2)
        sy = min(1.0, math.sqrt(area / ratio))
        cols["cx"].append(r.uniform(-(1 - sx), 1 - sx))
        cols["cy"].append(r.uniform(-(1 - sy), 1 - sy))
        cols["sx"].append(sx)
        cols["sy"].append(sy)
        cols["rot"].append(math.radians(r.uniform(-cfg.rotation, cfg.rotation)))
        cols["flip"].append(-1.0 if r.random() < cfg.flip else 1.0)
        cols["gamma"].append(math.exp(r.uniform(math.log(cfg.gamma[0]), math.log(cfg.gamma[1]))))
        cols["contrast"].append(r.uniform(*cfg.contrast))
        cols["bright"].append(r.uniform(-cfg.brightness, cfg.brightness))
        cols["noise"].append(r.uniform(*cfg.noise))
        cols["blur"].append(r.uniform(*cfg.blur_sigma) if r.random() < cfg.blur_p else 0.0)
        cols["seed"].append(float(r.integers(0, 2**31 - 1)))
    return {k: torch.tensor(v, dtype=torch.float64 if k == "seed" else torch.float32) for k, v in cols.items()}


def theta(p: dict[str, torch.Tensor]) -> torch.Tensor:
    """``[B, 2, 3]``: output (u, v) in [-1, 1] -> input (x, y) = R(rot) diag(flip*sx, sy) (u, v) + (cx, cy)."""
    c, s = torch.cos(p["rot"]), torch.sin(p["rot"])
    a = p["flip"] * p["sx"]
    b = p["sy"]
    row0 = torch.stack([c * a, -s * b, p["cx"]], 1)
    row1 = torch.stack([s * a, c * b, p["cy"]], 1)
    return torch.stack([row0, row1], 1)


def warp(x: torch.Tensor, th: torch.Tensor, size: int, mode: str = "bilinear") -> torch.Tensor:
    """``x: [B, C, H, W]`` -> ``[B, C, size, size]`` sampled through ``th`` (zeros outside)."""
    grid = F.affine_grid(th.to(x.device, x.dtype), [x.shape[0], x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)


def feature_grid(th: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Input-image coordinates ``[B, h, w, 2]`` of the centres of an ``h x w`` feature map of a warped view."""
    return F.affine_grid(th, [th.shape[0], 1, h, w], align_corners=False)


def photometric(x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """Gamma, contrast, brightness, Gaussian blur and noise on ``x: [B, C, H, W]`` in [0, 1]."""
    dev = x.device
    shape = (-1, 1, 1, 1)
    x = x.clamp(0, 1) ** p["gamma"].to(dev).view(shape)
    mean = x.mean((1, 2, 3), keepdim=True)
    x = (x - mean) * p["contrast"].to(dev).view(shape) + mean + p["bright"].to(dev).view(shape)
    sig = p["blur"].to(dev)
    if bool((sig > 0).any()):
        x = _blur(x, sig)
    noise = torch.stack([torch.randn(x.shape[1:], generator=_gen(dev, int(s)), device=dev) for s in p["seed"].tolist()])
    x = x + noise.to(x.dtype) * p["noise"].to(dev).view(shape)
    return x.clamp(0, 1)


def _gen(device: torch.device, seed: int) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def _blur(x: torch.Tensor, sigma: torch.Tensor, radius: int = 3) -> torch.Tensor:
    """Separable Gaussian blur with a per-sample sigma (sigma 0 = identity)."""
    b, c, h, w = x.shape
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    s = sigma.clamp(min=1e-3).to(x.dtype).view(b, 1)
    k = torch.exp(-(t.view(1, -1) ** 2) / (2 * s * s))
    k = torch.where(sigma.view(b, 1) > 0, k, (t.view(1, -1) == 0).to(x.dtype))
    k = k / k.sum(1, keepdim=True)  # [B, 2r+1]
    kk = k.repeat_interleave(c, 0)  # [B*C, 2r+1]
    y = x.reshape(1, b * c, h, w)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="replicate"), kk.view(b * c, 1, 1, -1), groups=b * c)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="replicate"), kk.view(b * c, 1, -1, 1), groups=b * c)
    return y.view(b, c, h, w)


def make_views(images: torch.Tensor, keys: list[tuple[int, ...]], cfg: ViewConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """One augmented view per image: ``images: [B, C, H, W]`` float in [0, 1] on the device ->
    (view ``[B, C, size, size]``, theta ``[B, 2, 3]`` for locating feature cells in the input)."""
    p = sample_params(keys, cfg)
    th = theta(p)
    v = warp(images, th, cfg.size)
    return photometric(v, p), th.to(images.device)
