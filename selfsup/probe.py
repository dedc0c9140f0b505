"""A quick probe of an encoder during pretraining: frozen features + a 1x1 head on a few labelled images -> Dice.

Rising probe Dice over pretraining says the features carry bone information; it is a yardstick, not a result.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from bonekit.cache import Cache
from bonekit.maskbits import unpack
from bonekit.metrics import counts_from_logits, dice_from_counts


def _features(encoder, x: torch.Tensor) -> torch.Tensor:
    """Deepest and a middle feature map, upsampled to the middle map's size and concatenated: ``[B, F, h, w]``."""
    feats = encoder(x)
    mid, deep = feats[-3], feats[-1]
    return torch.cat([mid, F.interpolate(deep, size=mid.shape[-2:], mode="bilinear", align_corners=False)], 1)


def probe(encoder, cache: Cache, train: list[int], test: list[int], k: int, device, steps: int = 60,
          slices: int = 1) -> float:
    """Mean Dice of a 1x1 head trained ``steps`` Adam steps on frozen features of ``train`` frames, on ``test``."""
    was_training = encoder.training
    encoder.eval()

    def batch(frames):
        x = torch.from_numpy(np.stack([cache.stack(f, slices // 2) for f in frames])).to(device).float().div(255)
        y = unpack(torch.from_numpy(np.stack([cache.masks[f] for f in frames])).to(device), k).float()
        return x, y

    with torch.no_grad():
        xt, yt = batch(train)
        ft = _features(encoder, xt).float()
        xe, ye = batch(test)
        fe = _features(encoder, xe).float()
    g = torch.Generator(device="cpu").manual_seed(0)
    with torch.random.fork_rng(devices=[]):  # the probe must not move the training run's random state
        head = torch.nn.Conv2d(ft.shape[1], k, 1).to(device)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=g).to(device) * 0.01)
        head.bias.fill_(-2.0)
    opt = torch.optim.Adam(head.parameters(), lr=5e-2)
    target = F.interpolate(yt, size=ft.shape[-2:], mode="nearest")
    # Bones are a few percent of the pixels: weigh positives so the head does not settle on "background".
    pos = target.mean((0, 2, 3)).clamp(min=1e-4)
    pos_weight = ((1 - pos) / pos).clamp(max=50.0).view(-1, 1, 1)
    for _ in range(steps):
        loss = F.binary_cross_entropy_with_logits(head(ft), target, pos_weight=pos_weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        tp, fp, fn = counts_from_logits(head(fe), ye.bool())
    encoder.train(was_training)
    return float(dice_from_counts(tp.double(), fp.double(), fn.double()).mean().item())
