"""The encoder check: how much bone segmentation a frozen encoder's features support, from a few labelled images.

A light decoder (per level a 1x1 projection to ``width`` channels, summed at stride 4, one 3x3 conv, a 1x1 head)
is trained on the frozen stride-4/8/16/32 features (each channel standardised) of ``train`` images and scored
(Dice, as everywhere) on ``test`` images of other people. The stride-2 map is left out: a random network's first
layer already detects edges, and what pretraining must add lives deeper.

It replaces a 1x1 linear probe on two levels that scored 0.040 for a DenseCL encoder and 0.039 for a random one:
on its floor, unable to rank encoders. At the benchmark's scale this check gives a random resnet18 ~0.01 and the
encoder of a supervised model 0.05 (5 labelled images) to 0.16 (every label) (``bench/encoder_check.py``,
docs/results.md). It is a yardstick during pretraining (``probe.every``), not a result: the low-label benchmark
(``grid.inits=[scratch,pretrained]``) is.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bonekit.cache import Cache, build
from bonekit.data import resolve_root
from bonekit.errors import ConfigError
from bonekit.formats import discover
from bonekit.losses import segmentation_loss
from bonekit.maskbits import unpack
from bonekit.metrics import counts_from_logits, dice_from_counts

LEVELS = (-4, -3, -2, -1)  # strides 4, 8, 16, 32 of a 5-level encoder


class LightDecoder(nn.Module):
    """Features ``[B, C_l, H/s_l, W/s_l]`` of :data:`LEVELS` -> logits ``[B, K, H/4, W/4]``."""

    def __init__(self, channels: list[int], k: int, width: int = 64):
        super().__init__()
        self.proj = nn.ModuleList(nn.Conv2d(c, width, 1) for c in channels)
        self.mix = nn.Sequential(nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(width, k, 1)
        nn.init.constant_(self.head.bias, -2.0)  # start near "no bone": bones are a few percent of the pixels

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        size = feats[0].shape[-2:]
        x = sum(F.interpolate(p(f), size=size, mode="bilinear", align_corners=False) if f.shape[-2:] != size
                else p(f) for p, f in zip(self.proj, feats))
        return self.head(self.mix(x))


def _features(encoder, x: torch.Tensor) -> list[torch.Tensor]:
    feats = encoder(x)
    return [feats[i].float() for i in LEVELS]


def probe(encoder, cache: Cache, train: list[int], test: list[int], k: int, device, steps: int = 300,
          slices: int = 1, lr: float = 1e-2) -> float:
    """Mean Dice on ``test`` frames of a :class:`LightDecoder` trained ``steps`` Adam steps on the frozen
    features of ``train`` frames (full batch; the encoder is left as it was, train/eval mode included)."""
    was_training = encoder.training
    encoder.eval()

    def batch(frames):
        x = torch.from_numpy(np.stack([cache.stack(f, slices // 2) for f in frames])).to(device).float().div(255)
        y = unpack(torch.from_numpy(np.stack([cache.masks[f] for f in frames])).to(device), k).float()
        return x, y

    with torch.no_grad():
        xt, yt = batch(train)
        ft = _features(encoder, xt)
        xe, ye = batch(test)
        fe = _features(encoder, xe)
        # Each channel standardised with the training images' statistics: encoders differ in feature scale by
        # orders of magnitude (a random one vs a trained one), and the check should rate content, not scale.
        stats = [(f.mean((0, 2, 3), keepdim=True), f.std((0, 2, 3), keepdim=True).clamp(min=1e-6)) for f in ft]
        ft = [(f - m) / s for f, (m, s) in zip(ft, stats)]
        fe = [(f - m) / s for f, (m, s) in zip(fe, stats)]
    # The check must not move the training run's random state, and must give the same number for the same encoder.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        dec = LightDecoder([f.shape[1] for f in ft], k).to(device)
    opt = torch.optim.Adam(dec.parameters(), lr=lr)
    loss_fn = segmentation_loss("bce_dice")
    target = F.interpolate(yt, size=ft[0].shape[-2:], mode="area")  # soft targets at stride 4
    with torch.enable_grad():
        for _ in range(steps):
            logits = dec(ft)
            loss = loss_fn(logits, target)
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        tp, fp, fn = counts_from_logits(dec(fe), ye.bool())
    encoder.train(was_training)
    return float(dice_from_counts(tp.double(), fp.double(), fn.double()).mean().item())


def split_people(persons: list[str], n: int) -> tuple[list[int], list[int]]:
    """Indices of up to ``n`` training and ``n`` test images with no person on both sides (both hands of a
    person go to one side), the people taken in a fixed order."""
    order: dict[str, list[int]] = {}
    for i, p in enumerate(persons):
        order.setdefault(p, []).append(i)
    train: list[int] = []
    test: list[int] = []
    for idx in order.values():
        side = train if len(train) <= len(test) else test  # the smaller side takes the next person...
        if len(side) >= n:
            side = test if side is train else train  # ...unless it is full
        if len(side) >= n:
            break
        side.extend(idx[: n - len(side)])
    return train, test


def check_images(data, images: int) -> tuple[Cache, list[int], list[int]]:
    """The check's labelled images from ``data`` (a DataConfig): a cache of up to ``images`` training and as many
    test images (other people), and their frame indices in it."""
    recs = discover(resolve_root(data, "train"), labels="required")
    train, test = split_people([r.person for r in recs], images)
    if not train or not test:
        raise ConfigError(f"the encoder check (probe.*) needs labelled images of at least two people; "
                          f"{len(recs)} labelled image(s) found")
    recs = [recs[i] for i in train + test]
    cache = build(recs, data.resolution, list(data.classes), data.cache_dir or None, workers=data.workers,
                  progress=False)
    return cache, list(range(len(train))), list(range(len(train), len(recs)))
