"""Radiographs of the phantom: Beer-Lambert line integrals of exact chord lengths, labels as projections.

Attenuation along a ray = mu_tissue * L_tissue + sum over bones of
(mu_cortex - mu_tissue) * L_outer - (mu_cortex - mu_marrow) * L_inner, where L_* are exact chord lengths
through unions of ellipsoids. A bone's label is the set of pixels whose ray meets it (L_outer > 0), so
overlapping labels (Pisiform/Triquetrum, Trapezium/Trapezoid) come from the anatomy, not from painting.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from bonekit.phantom.anatomy import MU, Hand
from bonekit.phantom.geometry import Ellipsoid, chord_interval, union_length


@dataclass
class View:
    """Maps world cm to pixels: ``col = (x - x0) / pix``, ``row = (y0 - y) / pix`` for an ``size x size`` image."""

    size: int
    x0: float  # world x of column 0's left edge
    y0: float  # world y of row 0's top edge
    pix: float  # cm per pixel

    def at(self, size: int) -> View:
        """The same field of view sampled by ``size x size`` pixels."""
        return View(size=size, x0=self.x0, y0=self.y0, pix=self.pix * self.size / size)

    def grid(self, r0: int, r1: int, c0: int, c1: int) -> tuple[np.ndarray, np.ndarray]:
        """World (x, y) of pixel centres in rows [r0, r1) x cols [c0, c1): ``[1, w]``, ``[h, 1]``."""
        x = self.x0 + (np.arange(c0, c1) + 0.5) * self.pix
        y = self.y0 - (np.arange(r0, r1) + 0.5) * self.pix
        # float32 halves memory traffic; chords of a few cm keep ~1e-6 relative precision.
        return x[None, :], y[:, None]

    def region(self, prims: list[Ellipsoid]):
        """(rows slice, cols slice, x, y) of the pixels the projections of ``prims`` can touch; None if none."""
        b = self.box(prims)
        if b is None:
            return None
        r0, r1, c0, c1 = b
        x, y = self.grid(r0, r1, c0, c1)
        return slice(r0, r1), slice(c0, c1), x, y

    def box(self, prims: list[Ellipsoid]) -> tuple[int, int, int, int] | None:
        """Pixel bounding box (r0, r1, c0, c1) of the projections of ``prims``, clipped; None if outside."""
        lo = np.min([e.center - e.half_extent() for e in prims], 0)
        hi = np.max([e.center + e.half_extent() for e in prims], 0)
        c0 = int(np.floor((lo[0] - self.x0) / self.pix)) - 1
        c1 = int(np.ceil((hi[0] - self.x0) / self.pix)) + 1
        r0 = int(np.floor((self.y0 - hi[1]) / self.pix)) - 1
        r1 = int(np.ceil((self.y0 - lo[1]) / self.pix)) + 1
        r0, c0 = max(r0, 0), max(c0, 0)
        r1, c1 = min(r1, self.size), min(c1, self.size)
        if r0 >= r1 or c0 >= c1:
            return None
        return r0, r1, c0, c1


def _union_chord(prims: list[Ellipsoid], x, y) -> np.ndarray:
    ivals = [chord_interval(e, x, y) for e in prims]
    los = np.stack([np.broadcast_to(lo, np.broadcast(x, y).shape) for lo, _ in ivals])
    his = np.stack([np.broadcast_to(hi, np.broadcast(x, y).shape) for _, hi in ivals])
    return union_length(los, his)


def project(hand: Hand, view: View, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """-> (attenuation line integral ``float32 [S, S]``, labels ``bool [K, S, S]``)."""
    s = view.size
    att = np.zeros((s, s), np.float64)
    labels = np.zeros((n_classes, s, s), bool)
    # Soft tissue: the envelope pieces overlap little; their chords are combined by maximum, not summed.
    tissue = np.zeros((s, s))
    for e in hand.tissue:
        reg = view.region([e])
        if reg is None:
            continue
        rs, cs, x, y = reg
        lo, hi = chord_interval(e, x, y)
        np.maximum(tissue[rs, cs], hi - lo, out=tissue[rs, cs])
    att += MU["tissue"] * tissue
    for bone in hand.bones:
        reg = view.region(bone.outer)
        if reg is None:
            continue
        rs, cs, x, y = reg
        outer = _union_chord(bone.outer, x, y)
        inner = _union_chord(bone.inner, x, y) if bone.inner else 0.0
        extra = (MU["cortex"] - MU["tissue"]) * outer - (MU["cortex"] - MU["marrow"]) * inner
        for p in bone.plates:  # open growth plates: cartilage, close to soft tissue
            lo, hi = chord_interval(p, x, y)
            extra -= 0.6 * (MU["marrow"] - MU["tissue"]) * (hi - lo)
        att[rs, cs] += np.maximum(extra, 0.0)
        labels[bone.label, rs, cs] |= outer > 0
    for outer_e, inner_e, mu in hand.metal:  # rings, watches, casts, plates: shells (outer - inner) or solids
        reg = view.region([outer_e])
        if reg is None:
            continue
        rs, cs, x, y = reg
        lo, hi = chord_interval(outer_e, x, y)
        li, hi2 = chord_interval(inner_e, x, y) if inner_e is not None else (0.0, 0.0)
        att[rs, cs] += mu * np.maximum((hi - lo) - (hi2 - li), 0)
    return att.astype(np.float32), labels


@dataclass
class Exposure:
    """Display and acquisition variation of one image (seeded)."""

    gain: float
    gamma: float
    offset: float
    noise: float
    blur: float  # pixels at 512; scaled with size
    collimation: tuple[float, float, float, float] | None  # fractions (top, bottom, left, right) cut off
    marker_corner: int  # 0..3
    invert: bool = False  # displayed as MONOCHROME1 (bones dark on a bright background)
    heel: float = 0.0  # anode heel effect: brightness gradient across the image, +-
    window: float = 0.0  # contrast-curve steepness of the display's sigmoid window (0: the plain curve)
    text: str = ""  # burnt-in annotation (dates, names, technician marks)

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Exposure:
        col = None
        if rng.random() < 0.35:
            col = tuple(float(v) for v in rng.uniform(0.0, 0.07, 4))
        return cls(gain=rng.uniform(0.92, 1.05), gamma=rng.uniform(1.0, 1.35), offset=rng.uniform(0.015, 0.05),
                   noise=rng.uniform(0.006, 0.02), blur=rng.uniform(0.4, 1.1), collimation=col,
                   marker_corner=int(rng.integers(0, 4)))

    @classmethod
    def sample_wide(cls, rng: np.random.Generator) -> Exposure:
        """``variation=wide``: under- to over-exposed, soft to hard contrast curves, low to high noise and blur,
        collimation on most images, some inverted displays, heel gradients and burnt-in text."""
        col = tuple(float(v) for v in rng.uniform(0.0, 0.15, 4)) if rng.random() < 0.6 else None
        text = ""
        if rng.random() < 0.5:
            text = rng.choice(["PA", "AP", "OBL", "L", "R", "ER", "WRIST", "HAND"]) + f" {int(rng.integers(1, 99)):02d}"
        return cls(gain=rng.uniform(0.6, 1.1), gamma=rng.uniform(0.6, 2.0), offset=rng.uniform(0.0, 0.15),
                   noise=rng.uniform(0.004, 0.05), blur=rng.uniform(0.3, 2.0), collimation=col,
                   marker_corner=int(rng.integers(0, 4)), invert=bool(rng.random() < 0.12),
                   heel=rng.uniform(-0.08, 0.08), window=rng.uniform(0.0, 6.0) if rng.random() < 0.4 else 0.0,
                   text=str(text))


def display(att: np.ndarray, exp: Exposure, rng: np.random.Generator, side: str) -> np.ndarray:
    """Attenuation -> ``uint8 [S, S]`` radiograph, bones bright on a dark background."""
    s = att.shape[0]
    img = exp.offset + exp.gain * (1.0 - np.exp(-att)) ** exp.gamma
    if exp.window > 0:  # a sigmoid display window around the image's median: harder or softer contrast
        m = float(np.median(img))
        img = 1.0 / (1.0 + np.exp(-exp.window * (img - m) / max(float(img.std()), 1e-3))) * (img.max() - img.min()) + img.min()
    if exp.heel:
        img = np.clip(img + exp.heel * np.linspace(-1.0, 1.0, s)[:, None], 0.0, None)
    sigma = exp.blur * s / 512
    if sigma > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    # Quantum noise grows with the signal; a small floor of electronic noise everywhere.
    img = img.astype(np.float32)
    img = img + rng.standard_normal(img.shape, dtype=np.float32) * (exp.noise * np.sqrt(img + 0.02))
    if exp.collimation is not None:
        t, b, l, r = (int(f * s) for f in exp.collimation)
        band = np.zeros((s, s), bool)
        band[:t] = band[s - b :] = True
        band[:, :l] = band[:, s - r :] = True
        img[band] = img[band] * 0.4 + 0.22  # unexposed border: a lighter flat band with a sharp edge
    img = np.clip(img, 0.0, 1.0)
    if exp.invert:
        img = 1.0 - img
    out = np.rint(img * 255).astype(np.uint8)
    # Burnt-in side marker, as on real radiographs.
    scale = s / 512
    corner = exp.marker_corner
    x = int((0.06 if corner in (0, 2) else 0.86) * s)
    y = int((0.1 if corner in (0, 1) else 0.95) * s)
    cv2.putText(out, side or "R", (x, y), cv2.FONT_HERSHEY_SIMPLEX, 1.2 * scale, 235, max(1, int(2 * scale)), cv2.LINE_AA)
    if exp.text:  # burnt into the opposite corner's column
        tx = int((0.6 if corner in (0, 2) else 0.04) * s)
        cv2.putText(out, exp.text, (tx, y), cv2.FONT_HERSHEY_SIMPLEX, 0.8 * scale, 245, max(1, int(2 * scale)), cv2.LINE_AA)
    return out
