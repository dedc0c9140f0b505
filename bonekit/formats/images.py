"""Reading raw X-rays: PNG/JPEG/TIFF at 8 or 16 bits, DICOM, NIfTI volumes.

Every reader returns ``float32`` in [0, 1]: ``[H, W]`` for a radiograph, ``[D, H, W]`` for a volume (slices first).
A file that cannot be read raises :class:`bonekit.errors.DataError` naming it.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from bonekit.errors import DataError

RASTER = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
DICOM = {".dcm", ".dicom"}
NIFTI = {".nii", ".gz"}  # .nii.gz ends in .gz


def kind_of(path: str | Path) -> str | None:
    """'raster', 'dicom', 'nifti' or None for a file that is not an X-ray."""
    name = str(path).lower()
    if name.endswith(".nii") or name.endswith(".nii.gz"):
        return "nifti"
    suf = Path(name).suffix
    if suf in RASTER:
        return "raster"
    if suf in DICOM:
        return "dicom"
    return None


def read_raster(path: str | Path) -> np.ndarray:
    """PNG/JPEG/TIFF (8 or 16 bit, grey or colour) -> ``float32 [H, W]`` in [0, 1]."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file does not exist")
    data = np.fromfile(str(path), dtype=np.uint8)
    if data.size == 0:
        raise DataError(path, "file is empty")
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DataError(path, "corrupt or truncated image (the decoder could not read it)")
    if img.ndim == 3:
        # Competition PNGs are grey stored as 3 equal channels; colour files are converted to luminance.
        img = img[..., 0] if img.shape[2] >= 3 and _equal_channels(img) else cv2.cvtColor(img[..., :3], cv2.COLOR_BGR2GRAY)
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    if img.dtype == np.uint16:
        return img.astype(np.float32) / 65535.0
    img = img.astype(np.float32)
    lo, hi = float(img.min()), float(img.max())
    return (img - lo) / max(hi - lo, 1e-12)


def _equal_channels(img: np.ndarray) -> bool:
    return bool((img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all())


def read_raster_u8(path: str | Path) -> np.ndarray:
    """Fast path for the cache: ``uint8 [H, W]`` (16-bit files are scaled down)."""
    img = read_raster(path)
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def read_dicom(path: str | Path, window: tuple[float, float] | None = None) -> np.ndarray:
    """DICOM -> ``float32 [H, W]`` in [0, 1], bones bright.

    Applies Rescale Slope/Intercept, then the window (``window=(center, width)``, else the file's own
    WindowCenter/WindowWidth, else min-max), then inverts MONOCHROME1 (where low values are bright).
    """
    import pydicom

    path = Path(path)
    try:
        ds = pydicom.dcmread(str(path))
        arr = ds.pixel_array.astype(np.float32)
    except Exception as e:  # pydicom raises many types for broken files
        raise DataError(path, f"cannot read DICOM ({type(e).__name__}: {e})") from None
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        arr = arr[..., :3].mean(-1)
    arr = arr * float(getattr(ds, "RescaleSlope", 1.0)) + float(getattr(ds, "RescaleIntercept", 0.0))
    if window is None and "WindowCenter" in ds and "WindowWidth" in ds:
        c, w = ds.WindowCenter, ds.WindowWidth
        c = float(c[0] if isinstance(c, pydicom.multival.MultiValue) else c)
        w = float(w[0] if isinstance(w, pydicom.multival.MultiValue) else w)
        window = (c, w)
    if window is not None:
        c, w = window
        lo, hi = c - w / 2.0, c + w / 2.0
    else:
        lo, hi = float(arr.min()), float(arr.max())
    arr = np.clip((arr - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    if str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper() == "MONOCHROME1":
        arr = 1.0 - arr
    return arr.astype(np.float32)


def read_nifti(path: str | Path) -> np.ndarray:
    """NIfTI volume -> ``float32 [D, H, W]`` in [0, 1] (min-max), slices along the file's last axis."""
    import nibabel as nib

    path = Path(path)
    try:
        vol = np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)
    except Exception as e:
        raise DataError(path, f"cannot read NIfTI ({type(e).__name__}: {e})") from None
    if vol.ndim == 2:
        vol = vol[..., None]
    if vol.ndim != 3:
        raise DataError(path, f"expected a 3D volume, got shape {vol.shape}")
    vol = np.moveaxis(vol, -1, 0)
    lo, hi = float(vol.min()), float(vol.max())
    return (vol - lo) / max(hi - lo, 1e-12)


def read_xray(path: str | Path) -> np.ndarray:
    """Any supported file -> ``float32 [H, W]`` (radiograph) or ``[D, H, W]`` (volume) in [0, 1]."""
    kind = kind_of(path)
    if kind == "raster":
        return read_raster(path)
    if kind == "dicom":
        return read_dicom(path)
    if kind == "nifti":
        return read_nifti(path)
    raise DataError(path, "not an X-ray file this toolkit reads (PNG/JPEG/TIFF/DICOM/NIfTI)")


def find_xrays(root: str | Path) -> list[Path]:
    """All X-ray files below ``root`` (recursive, sorted); an empty folder is an error."""
    root = Path(root)
    if not root.exists():
        raise DataError(root, "folder does not exist")
    if root.is_file():
        return [root]
    files = sorted(p for p in root.rglob("*") if p.is_file() and kind_of(p) is not None)
    if not files:
        raise DataError(root, "no X-ray files found (searched recursively for PNG/JPEG/TIFF/DICOM/NIfTI)")
    return files
