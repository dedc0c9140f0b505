"""Raw X-ray readers: 16-bit PNG, DICOM (MONOCHROME1, rescale, window), NIfTI, corrupt files, skip_bad."""

import cv2
import numpy as np
import pytest

from bonekit.errors import DataError
from bonekit.formats.images import find_xrays, read_dicom, read_raster, read_xray


def _dicom(path, arr, photometric="MONOCHROME2", slope=1.0, intercept=0.0, window=None):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import (
        ExplicitVRLittleEndian,
        SecondaryCaptureImageStorage,
        generate_uid,
    )

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.Modality = "DX"
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = arr.astype(np.uint16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path


def test_png16(tmp_path):
    a = np.linspace(0, 65535, 64, dtype=np.uint16).reshape(8, 8)
    cv2.imwrite(str(tmp_path / "a.png"), a)
    x = read_raster(tmp_path / "a.png")
    assert x.dtype == np.float32 and abs(x.max() - 1) < 1e-6 and abs(x[0, 1] - a[0, 1] / 65535) < 1e-6


def test_dicom_monochrome1_rescale_window(tmp_path):
    a = np.arange(16, dtype=np.uint16).reshape(4, 4) * 256  # 12-bit range 0..3840
    m2 = read_dicom(_dicom(tmp_path / "m2.dcm", a))
    m1 = read_dicom(_dicom(tmp_path / "m1.dcm", a, "MONOCHROME1"))
    assert m2[0, 0] == 0 and m2[3, 3] == 1 and np.allclose(m1, 1 - m2)  # MONOCHROME1: low values are bright
    w = read_dicom(_dicom(tmp_path / "w.dcm", a, slope=2.0, intercept=-100, window=(1000, 2000)))
    # value v -> 2v - 100, window [0, 2000] -> clip((2v - 100) / 2000)
    assert np.allclose(w, np.clip((2.0 * a - 100) / 2000, 0, 1), atol=1e-6)
    assert read_xray(tmp_path / "m2.dcm").shape == (4, 4)


def test_corrupt_files_and_empty_folder(tmp_path):
    (tmp_path / "bad.dcm").write_bytes(b"not a dicom at all")
    with pytest.raises(DataError, match="bad.dcm: cannot read DICOM"):
        read_dicom(tmp_path / "bad.dcm")
    (tmp_path / "e").mkdir()
    with pytest.raises(DataError, match="no X-ray files found"):
        find_xrays(tmp_path / "e")


def test_skip_bad_in_cache(tmp_path):
    from bonekit import cache
    from bonekit.formats import discover

    for i in range(3):
        cv2.imwrite(str(tmp_path / f"x{i}.png"), np.full((16, 16), 40 * i, np.uint8))
    (tmp_path / "x1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    recs = discover(tmp_path, labels="ignore")
    with pytest.raises(DataError, match="x1.png"):
        cache.build(recs, 8, ["a"], tmp_path / "c", workers=1, progress=False)
    c = cache.build(recs, 8, ["a"], tmp_path / "c", workers=1, skip_bad=True, progress=False)
    assert len(c) == 2


def test_raw_folder_mixes_png_dicom_and_nifti_in_the_cache(tmp_path):
    """Pretraining input: a folder of mixed raw X-rays goes through the cache (labels ignored)."""
    import nibabel as nib

    from bonekit import cache
    from bonekit.formats import discover

    raw = tmp_path / "raw"
    (raw / "a").mkdir(parents=True)
    cv2.imwrite(str(raw / "a" / "x.png"), np.full((16, 16), 200, np.uint8))
    _dicom(raw / "a" / "y.dcm", np.arange(256, dtype=np.uint16).reshape(16, 16) * 16, "MONOCHROME1")
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((16, 16, 5)).astype(np.float32), np.eye(4)), str(raw / "v.nii"))
    recs = discover(raw, labels="ignore")
    assert sorted(r.kind for r in recs) == ["none", "none", "volume"]
    c = cache.build(recs, 8, ["a"], tmp_path / "c", workers=1, progress=False)
    assert len(c) == 1 + 1 + 5 and c.masks is None
    dcm = [i for i, f in enumerate(c.frames) if f["image"].endswith("y.dcm")][0]
    assert c.images[dcm][0, 0] > c.images[dcm][-1, -1]  # MONOCHROME1: low raw values are bright
