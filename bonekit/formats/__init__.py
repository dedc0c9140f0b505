"""Readers and writers of the data formats bonekit accepts.

:func:`discover` turns a path into records whatever the layout; :func:`load` reads one record's image and mask.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bonekit.errors import DataError
from bonekit.formats import coco, competition, maskdir
from bonekit.formats.competition import Record
from bonekit.formats.images import find_xrays, kind_of, read_raster_u8, read_xray

__all__ = ["Record", "coco", "competition", "discover", "load_image", "load_mask", "maskdir"]


def discover(root: str | Path, labels: str = "required") -> list[Record]:
    """Records under ``root``: a competition split (``DCM/``), a competition root (``train/DCM``), a COCO JSON,
    a mask folder (``images/`` + ``masks/``) or, with ``labels="ignore"``, any folder of raw X-rays."""
    root = Path(root)
    if not root.exists():
        raise DataError(root, "data path does not exist")
    if root.is_file() and root.suffix == ".json":
        return coco.scan(root)
    if (root / "DCM").is_dir():
        return competition.scan(root, labels)
    if (root / "train" / "DCM").is_dir():
        return competition.scan(root / "train", labels)
    if (root / "images").is_dir() and (root / "masks").is_dir() and labels != "ignore":
        return maskdir.scan(root)
    vols = sorted(p for p in root.glob("*.nii") if not p.name.endswith("_label.nii"))
    paired = bool(vols) and any(v.with_name(v.name[:-4] + "_label.nii").is_file() for v in vols)
    if labels == "ignore" and not paired:  # raw X-rays: radiographs (PNG/JPEG/TIFF/DICOM), volumes, recursively
        return [Record(p, None, person=p.parent.name, kind="volume" if kind_of(p) == "nifti" else "none")
                for p in find_xrays(root) if not p.name.endswith("_label.nii")]
    if vols:  # phantom-style volumes: <person>_<side>.nii + <person>_<side>_label.nii (class words)
        recs = []
        for v in vols:
            lab = v.with_name(v.name[:-4] + "_label.nii")
            if labels == "required" and not lab.is_file():
                raise DataError(v, f"volume has no label volume (expected {lab.name})")
            recs.append(Record(v, lab if lab.is_file() and labels != "ignore" else None,
                               person=v.stem.split("_")[0], side=v.stem.split("_")[-1], kind="volume"))
        return recs
    raise DataError(root, "no labelled layout found (competition DCM/ + outputs_json/, COCO .json, images/ + masks/)")


def load_image(rec: Record) -> np.ndarray:
    """``uint8 [H, W]`` for a radiograph record (PNG/JPEG/TIFF at 8 or 16 bits, or DICOM)."""
    if kind_of(rec.image) == "raster":
        return read_raster_u8(rec.image)
    img = read_xray(rec.image)
    if img.ndim != 2:
        raise DataError(rec.image, f"expected a 2D radiograph, got shape {img.shape}")
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def load_mask(rec: Record, height: int, width: int, classes: list[str]) -> np.ndarray | None:
    """``bool [K, H, W]`` or None for an unlabelled record."""
    if rec.label is None:
        return None
    if rec.kind == "competition":
        return competition.read_mask(rec.label, height, width, classes)
    if rec.kind == "coco":
        return coco.read_mask(rec.label, rec.extra["image_id"], height, width, classes)
    if rec.kind == "maskdir":
        return maskdir.read_mask(rec.label, height, width, classes)
    raise DataError(rec.label, f"unknown label kind {rec.kind!r}")
