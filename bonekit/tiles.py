"""Crops for training at high resolution and sliding-window inference over the whole image.

``random_crop``: one window per sample, its corner keyed by (seed, epoch, frame) like every augmentation.
``sliding_window``: overlapping tiles, logits averaged with a smooth (Hann) weight so tile borders do not show.
"""

from __future__ import annotations

import numpy as np
import torch


def random_crop(x: torch.Tensor, y: torch.Tensor, keys, size: int, ignore: torch.Tensor | None = None):
    """``x [B, C, H, W]``, ``y [B, K, H, W]`` -> the same window of each, ``size x size``."""
    h, w = x.shape[-2:]
    if size <= 0 or size >= min(h, w):
        return x, y, ignore
    xs, ys, igs = [], [], []
    for i, key in enumerate(keys):
        r = np.random.default_rng(np.random.SeedSequence([*key, 31337]))
        top, left = int(r.integers(0, h - size + 1)), int(r.integers(0, w - size + 1))
        xs.append(x[i, :, top : top + size, left : left + size])
        ys.append(y[i, :, top : top + size, left : left + size])
        if ignore is not None:
            igs.append(ignore[i, :, top : top + size, left : left + size])
    return torch.stack(xs), torch.stack(ys), (torch.stack(igs) if ignore is not None else None)


def _starts(n: int, tile: int, stride: int) -> list[int]:
    s = list(range(0, max(n - tile, 0) + 1, stride))
    if s[-1] + tile < n:
        s.append(n - tile)
    return s


@torch.no_grad()
def sliding_window(model, x: torch.Tensor, tile: int, overlap: float = 0.25) -> torch.Tensor:
    """``model(x [B, C, t, t]) -> [B, K, t, t]`` applied over ``x [B, C, H, W]`` in overlapping tiles -> logits
    ``[B, K, H, W]``. Images no larger than a tile go through in one piece."""
    b, _, h, w = x.shape
    if tile <= 0 or (h <= tile and w <= tile):
        return model(x)
    stride = max(1, int(tile * (1 - overlap)))
    win = torch.hann_window(tile, periodic=False, device=x.device).clamp(min=1e-3)
    weight = (win[:, None] * win[None, :])[None, None]
    out = None
    norm = torch.zeros(1, 1, h, w, device=x.device)
    for top in _starts(h, tile, stride):
        for left in _starts(w, tile, stride):
            lg = model(x[:, :, top : top + tile, left : left + tile]).float()
            if out is None:
                out = torch.zeros(b, lg.shape[1], h, w, device=x.device)
            out[:, :, top : top + tile, left : left + tile] += lg * weight
            norm[:, :, top : top + tile, left : left + tile] += weight
    return out / norm
