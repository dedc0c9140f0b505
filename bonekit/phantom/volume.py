"""CT-like volumes of the phantom: the same solids voxelised, with per-voxel multi-label class words.

Files (NIfTI, slices along the last axis, as :func:`bonekit.formats.images.read_nifti` expects)::

    <name>.nii          uint8 [H, W, D]   attenuation, bone bright
    <name>_label.nii    int32 [H, W, D]   class bits (bit k = class k), so overlapping bones keep both labels
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bonekit.maskbits import pack
from bonekit.phantom.anatomy import MU, Hand
from bonekit.phantom.geometry import inside
from bonekit.phantom.render import View


def voxelise(hand: Hand, view: View, n_classes: int, z_range: tuple[float, float] = (-3.2, 3.2)) -> tuple[np.ndarray, np.ndarray]:
    """-> (attenuation ``float32 [D, S, S]``, labels ``bool [K, D, S, S]``); voxels are cubes of ``view.pix``."""
    s = view.size
    zs = np.arange(z_range[0] + view.pix / 2, z_range[1], view.pix)
    d = len(zs)
    mu = np.zeros((d, s, s), np.float32)
    labels = np.zeros((n_classes, d, s, s), bool)
    z = zs[:, None, None]
    tissue = np.zeros((d, s, s), bool)
    for e in hand.tissue:
        reg = view.region([e])
        if reg is None:
            continue
        rs, cs, x, y = reg
        tissue[:, rs, cs] |= inside(e, x[None], y[None], z)
    mu[tissue] = MU["tissue"]
    for bone in hand.bones:
        reg = view.region(bone.outer)
        if reg is None:
            continue
        rs, cs, x, y = reg
        x, y = x[None], y[None]
        outer = np.zeros((d, rs.stop - rs.start, cs.stop - cs.start), bool)
        for e in bone.outer:
            outer |= inside(e, x, y, z)
        marrow = np.zeros_like(outer)
        for e in bone.inner:
            marrow |= inside(e, x, y, z)
        region = mu[:, rs, cs]
        region[outer] = MU["cortex"]
        region[marrow & outer] = MU["marrow"]
        labels[bone.label, :, rs, cs] |= outer
    return mu, labels


def write_volume(path_stem: str | Path, mu: np.ndarray, labels: np.ndarray, spacing_mm: float) -> tuple[Path, Path]:
    import nibabel as nib

    path_stem = Path(path_stem)
    path_stem.parent.mkdir(parents=True, exist_ok=True)
    img = np.clip(np.rint(mu / MU["cortex"] * 255), 0, 255).astype(np.uint8)
    words = pack(labels.reshape(labels.shape[0], -1, labels.shape[-1])).reshape((1,) + labels.shape[1:])[0]
    aff = np.diag([spacing_mm, spacing_mm, spacing_mm, 1.0])
    ip, lp = Path(f"{path_stem}.nii"), Path(f"{path_stem}_label.nii")
    nib.save(nib.Nifti1Image(np.moveaxis(img, 0, -1), aff), str(ip))
    nib.save(nib.Nifti1Image(np.moveaxis(words, 0, -1).astype(np.int32), aff), str(lp))
    return ip, lp
