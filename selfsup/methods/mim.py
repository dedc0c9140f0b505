"""Masked image modelling for CNN encoders (SparK / SimMIM style): hide a random share (``method.mask_ratio``,
default 60%) of a view's ``method.mask_patch``-pixel patches, let the encoder see the rest, and reconstruct the
hidden pixels with a light decoder over the encoder's feature pyramid.

Why it is here: OpenMind/nnssl and a nine-method CT benchmark found masked modelling stronger than contrastive
methods for segmentation, most at few labels; grey radiographs give contrastive views little to tell apart, while
reconstructing a hidden patch asks for the local shape every bone boundary needs.

How it differs from SparK, so nobody mistakes one for the other: the encoder runs its ordinary dense convolutions
on the masked image (hidden patches hold a learnt value per channel, as SimMIM's mask token) instead of sparse
convolutions, and the decoder is a light FPN-like sum of the stride-4..32 levels, not SparK's UNet. Targets are
normalised per patch (MAE / SparK), so the loss rewards structure rather than brightness, and only hidden patches
are scored. Masks are drawn from a hash of each view's affine map, a pure function of the sample's key: a resumed
run and a run in several processes hide exactly the patches one process would.
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F
from lightly.models.utils import patchify
from torch import nn

from selfsup.methods.base import Method, register

LEVELS = (-4, -3, -2, -1)  # stride 4, 8, 16, 32 of a depth-5 encoder


def patch_masks(thetas: torch.Tensor, n: int, ratio: float) -> torch.Tensor:
    """``thetas [B, 2, 3]`` (the views' affine maps) -> ``bool [B, n]``: round(ratio * n) hidden patches per view,
    drawn from a generator seeded by the bytes of that view's map (same view, same mask, on any process)."""
    k = min(n - 1, max(1, round(ratio * n)))  # at least one patch hidden and one visible
    out = torch.zeros(thetas.shape[0], n, dtype=torch.bool)
    for i, th in enumerate(thetas.detach().double().cpu()):
        seed = int.from_bytes(hashlib.blake2b(th.numpy().tobytes(), digest_size=8).digest(), "little") >> 1
        out[i, torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k]] = True
    return out.to(thetas.device)


@register("mim")
class MIM(Method):
    def __init__(self, encoder, feat_dim, cfg, width: int = 64):
        super().__init__(encoder, feat_dim, cfg)
        self.patch = int(getattr(cfg, "mask_patch", 16))
        self.ratio = float(getattr(cfg, "mask_ratio", 0.6))
        self.mask_value = nn.Parameter(torch.zeros(encoder.out_channels[0]))
        self.build_decoder(encoder.out_channels, cfg, width)

    def build_decoder(self, chans: list[int], cfg, width: int) -> None:
        """The reconstructor over the encoder's pyramid ``chans`` ([C_in, stride 2, 4, 8, 16, 32])."""
        c = chans[0]
        self.proj = nn.ModuleList(nn.Conv2d(chans[lv], width, 1) for lv in LEVELS)
        self.fuse = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.head = nn.Conv2d(width, c * 16, 1)  # the stride-4 map -> pixels by a x4 pixel shuffle

    def decode(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """The encoder's pyramid -> the reconstructed image ``[B, C, S, S]``."""
        size = feats[LEVELS[0]].shape[-2:]
        y = sum(F.interpolate(p(feats[lv]), size=size, mode="bilinear", align_corners=False)
                for p, lv in zip(self.proj, LEVELS))
        return F.pixel_shuffle(self.head(self.fuse(y)), 4)

    def reconstruct(self, x: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """``x [B, C, S, S]``, ``hidden bool [B, 1, S, S]`` -> the decoder's image ``[B, C, S, S]``."""
        xin = torch.where(hidden, self.mask_value.view(1, -1, 1, 1).to(x.dtype), x)
        return self.decode(self.encoder(xin))

    def _one(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        p = self.patch
        if h % p or w % p or h % 32:
            raise ValueError(f"mim: views of {h}x{w} px need a side divisible by method.mask_patch={p} and by 32")
        m = patch_masks(theta, (h // p) * (w // p), self.ratio)  # [B, N], row-major as patchify
        hidden = m.view(b, 1, h // p, w // p).repeat_interleave(p, 2).repeat_interleave(p, 3)
        pred = patchify(self.reconstruct(x, hidden).float(), p)  # [B, N, p*p*C]
        tgt = patchify(x.float(), p)
        tgt = (tgt - tgt.mean(-1, keepdim=True)) / (tgt.var(-1, keepdim=True) + 1e-6).sqrt()
        per_patch = (pred - tgt).pow(2).mean(-1)  # [B, N]
        return (per_patch * m).sum() / m.sum()

    def forward(self, views, thetas):
        # Both views are used (two masked reconstructions per image per step, the compute of a two-view method).
        return sum(self._one(v, t) for v, t in zip(views, thetas)) / len(views)
