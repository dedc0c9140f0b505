"""Reader of bonekit's NIfTI volume pairs (``<stem>.nii`` image, ``<stem>_label.nii`` class words), as the
phantom writes them (:func:`bonekit.phantom.volume.write_volume`) and 2.5D data uses them."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def read_volume(image_path: str | Path, label_path: str | Path | None) -> tuple[np.ndarray, np.ndarray | None]:
    """-> (``uint8 [D, H, W]``, class words ``int32 [D, 1, H, W]`` or None)."""
    import nibabel as nib

    from bonekit.formats.images import read_nifti

    vol = np.clip(np.rint(read_nifti(image_path) * 255), 0, 255).astype(np.uint8)
    if label_path is None:
        return vol, None
    words = np.asarray(nib.load(str(label_path)).dataobj).astype(np.int32)
    return vol, np.moveaxis(words, -1, 0)[:, None]
