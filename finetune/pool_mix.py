"""How pool images are viewed and mixed for the student in distillation (finetune/distill_task.py): the strong
view of a mean teacher's student, CutMix among pool samples, and BCP's bidirectional copy-paste between labelled
and pool samples. Every draw is keyed by the sample's augmentation key, so a resumed run mixes the same boxes."""

from __future__ import annotations

import numpy as np
import torch

from bonekit.seg_augment import SegAugConfig, augment


def strong_view(x: torch.Tensor, keys, p: float = 1.0) -> torch.Tensor:
    """Strong intensity for the student (the teacher keeps the weak view): a second gamma/contrast draw, noise,
    and a Cutout square. Same geometry as the weak view, so the teacher's targets stay aligned."""
    cfg = SegAugConfig(flip=0.0, rotation=0.0, scale=0.0, shift=0.0, gamma=0.5, contrast=0.4, blur_p=0.5, noise=0.05,
                       cutout_p=p, cutout_size=0.3)
    dummy = torch.zeros(x.shape[0], 1, *x.shape[-2:], device=x.device)
    out, _, _ = augment(x, dummy, [(*k, 99) for k in keys], cfg)
    return out


def cutmix_pool(x, y, ignore, keys):
    """CutMix among pool samples: a box of sample i+1 (image, targets and ignore mask) pasted into sample i."""
    b, _, h, w = x.shape
    if b < 2:
        return x, y, ignore
    x, y, ignore = x.clone(), y.clone(), ignore.clone()
    nxt = torch.roll(torch.arange(b, device=x.device), -1)
    for i, k in enumerate(keys):
        r = np.random.default_rng(np.random.SeedSequence([*k, 555]))
        bh, bw = int(h * r.uniform(0.2, 0.5)), int(w * r.uniform(0.2, 0.5))
        t, l = int(r.integers(0, h - bh + 1)), int(r.integers(0, w - bw + 1))
        j = int(nxt[i])
        x[i, :, t : t + bh, l : l + bw] = x[j, :, t : t + bh, l : l + bw]
        y[i, :, t : t + bh, l : l + bw] = y[j, :, t : t + bh, l : l + bw]
        ignore[i, :, t : t + bh, l : l + bw] = ignore[j, :, t : t + bh, l : l + bw]
    return x, y, ignore


def bcp_mix(x, y, ignore, labelled, keys, size: float):
    """Bidirectional copy-paste. Labelled sample ``a`` and pool sample ``b`` (paired in batch order; surplus
    samples stay as they are) swap a box of side ``size`` x H: ``a`` keeps its own image outside the box and gets
    ``b``'s inside, ``b`` the reverse. Targets and ignore masks move with their pixels.

    x ``[B, C, H, W]``, y / ignore ``[B, K, H, W]``, labelled ``[B]`` bool, keys one tuple per sample.
    Returns x, y, ignore and ``gt [B, 1, H, W]`` bool: True where a pixel's target is ground truth.
    """
    b, _, h, w = x.shape
    gt = labelled.view(-1, 1, 1, 1).expand(b, 1, h, w).clone()
    lab_i, pool_i = torch.nonzero(labelled).flatten().tolist(), torch.nonzero(~labelled).flatten().tolist()
    if not lab_i or not pool_i:
        return x, y, ignore, gt
    x, y, ignore = x.clone(), y.clone(), ignore.clone()
    bh, bw = max(1, round(size * h)), max(1, round(size * w))
    for a, p in zip(lab_i, pool_i):
        r = np.random.default_rng(np.random.SeedSequence([*keys[a], 777]))
        t, l = int(r.integers(0, h - bh + 1)), int(r.integers(0, w - bw + 1))
        box = (slice(None), slice(t, t + bh), slice(l, l + bw))
        for tensor in (x, y, ignore, gt):
            inner_a = tensor[a][box].clone()
            tensor[a][box] = tensor[p][box]
            tensor[p][box] = inner_a
    return x, y, ignore, gt
