"""Region crops for experts: a bone group's square box, cut at a higher resolution and pasted back.

The box comes from the labels on labelled images and from a coarse (whole-image) model on unlabelled ones. In the
competition a dedicated carpal-crop model raised an ensemble from 0.9745 to 0.9754: small bones gain pixels.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from bonekit.cache import Cache
from bonekit.maskbits import unpack


def square_box(mask: np.ndarray | torch.Tensor, margin: float) -> tuple[float, float, float] | None:
    """``mask [H, W]`` -> (top, left, size) of a square around its pixels, grown by ``margin``, as fractions of
    the image (so the box can be applied at any resolution); None for an empty mask."""
    m = torch.as_tensor(mask)
    h, w = m.shape
    rows = torch.nonzero(m.any(1)).flatten()
    cols = torch.nonzero(m.any(0)).flatten()
    if len(rows) == 0:
        return None
    t, b = rows[0].item() / h, (rows[-1].item() + 1) / h
    le, r = cols[0].item() / w, (cols[-1].item() + 1) / w
    size = min(1.0, max(b - t, r - le) * (1 + 2 * margin))
    cy, cx = (t + b) / 2, (le + r) / 2
    top = min(max(cy - size / 2, 0.0), 1.0 - size)
    left = min(max(cx - size / 2, 0.0), 1.0 - size)
    return top, left, size


def _pixels(box, n: int) -> tuple[int, int, int]:
    top, left, size = box
    s = max(1, int(round(size * n)))
    return min(int(round(top * n)), n - s), min(int(round(left * n)), n - s), s


def cut(img: torch.Tensor, box, out: int, mode: str = "bilinear") -> torch.Tensor:
    """``img [C, N, N]`` (float) -> the box resized to ``[C, out, out]``."""
    t, le, s = _pixels(box, img.shape[-1])
    patch = img[None, :, t : t + s, le : le + s].float()
    kw = {"align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(patch, size=(out, out), mode=mode, **kw)[0]


def paste(patch: torch.Tensor, box, n: int) -> torch.Tensor:
    """``patch [k, c, c]`` -> ``[k, n, n]`` with the patch resized into the box and zeros elsewhere."""
    t, le, s = _pixels(box, n)
    full = torch.zeros(patch.shape[0], n, n, device=patch.device, dtype=patch.dtype)
    full[:, t : t + s, le : le + s] = F.interpolate(patch[None], size=(s, s), mode="bilinear", align_corners=False)[0]
    return full


class CropFrames(Dataset):
    """Labelled crops for a crop expert: the box of ``classes`` from the ground truth, cut from ``source`` (a cache
    at a higher resolution than training) and resized to ``size``. Items look like CachedFrames items."""

    def __init__(self, source: Cache, frames: list[int], classes: list[int], n_classes: int, size: int,
                 margin: float, slices: int = 1):
        self.items = []
        for f in frames:
            img, words = source.read(int(f), slices // 2)
            m = unpack(torch.from_numpy(words)[None], n_classes)[0]
            box = square_box(m[classes].any(0), margin)
            if box is None:
                continue
            im = cut(torch.from_numpy(img).float(), box, size).round().clamp(0, 255).to(torch.uint8)
            # Words are cut with nearest sampling (exact bits); float64 holds int32 values exactly.
            w = cut(torch.from_numpy(words).double(), box, size, mode="nearest").to(torch.int32)
            self.items.append({"image": im, "words": w, "labelled": True, "index": int(f)})
        if not self.items:
            raise ValueError(f"no labelled image shows the bones {classes} to crop around")
        self.indices = np.array([it["index"] for it in self.items])

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


@torch.no_grad()
def crop_predict(coarse, fine, x: torch.Tensor, size: int, margin: float, sources: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Probabilities ``[B, k, R, R]`` of a crop expert: the coarse model finds the box on ``x [B, C, R, R]``, the
    fine model predicts the crop cut from ``sources[i]`` (a higher-resolution image ``[C, N, N]``, else ``x[i]``),
    pasted back. Where the coarse model finds nothing, its own prediction stands."""
    coarse_p = torch.sigmoid(coarse(x).float())
    out = torch.zeros_like(coarse_p)
    r = x.shape[-1]
    for i in range(x.shape[0]):
        box = square_box((coarse_p[i] > 0.5).any(0).cpu(), margin)
        if box is None:
            out[i] = coarse_p[i]
            continue
        src = sources[i] if sources is not None else x[i]
        patch = cut(src.float(), box, size)[None]
        out[i] = paste(torch.sigmoid(fine(patch.to(x.device)).float())[0], box, r)
    return out


def crop_sources(source: Cache, frames, k: int, device) -> list[torch.Tensor]:
    """The higher-resolution images ``[2k+1, N, N]`` (float in [0, 1]) of cache ``frames``, which a crop expert
    cuts its crops from: the same input it was trained on and labels the pool with."""
    return [torch.from_numpy(source.stack(int(f), k)).to(device).float().div(255) for f in frames]


class CropModule(torch.nn.Module):
    """coarse locator + crop expert as one model returning logits (for the shared validation code). With a
    ``source`` cache, ``forward(x, frames)`` cuts the crops from it (``takes_frames``: the validation loop passes
    the frame numbers), so the expert is scored on the input it labels with, not on an upsampled cut of ``x``."""

    takes_frames = True

    def __init__(self, coarse, fine, size: int, margin: float, source: Cache | None = None):
        super().__init__()
        self.coarse, self.fine, self.size, self.margin, self.source = coarse, fine, size, margin, source

    def forward(self, x, frames=None):
        sources = None
        if self.source is not None and frames is not None:
            sources = crop_sources(self.source, frames, x.shape[1] // 2, x.device)
        p = crop_predict(self.coarse, self.fine, x, self.size, self.margin, sources)
        return torch.logit(p.clamp(1e-6, 1 - 1e-6))
