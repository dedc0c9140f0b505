"""The training-resolution cache: decode and rasterise once, then read samples in about a millisecond.

Layout of one cache folder (``<cache_root>/<key>/``, the key hashes sources, sizes, mtimes, resolution, classes)::

    images.u8     uint8 memmap [F, R, R]            one frame per radiograph, D frames per volume
    masks.i32     int32 memmap [F, W, R, R]         class bits: bit k%32 of word k//32 is class k (W = ceil(K/32))
    index.json    frames: source file, person, side, native height/width, volume/slice, labelled, meta

Masks stay bit-packed until they reach the device (:func:`unpack`): a 1024² sample is 1 MB of image plus 4 MB of
mask words instead of 30 MB of bools, and geometric augmentation with nearest sampling works on the packed words
directly, one channel instead of K.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from bonekit.errors import DataError
from bonekit.formats import Record, load_image, load_mask
from bonekit.maskbits import pack
from bonekit.workers import pool

FORMAT_VERSION = 1


def default_root() -> Path:
    return Path(os.environ.get("BONEKIT_CACHE", Path.home() / ".cache" / "bonekit"))


def resize_nearest(a: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of the last two axes to ``size x size`` (exact for packed class words)."""
    h, w = a.shape[-2:]
    rows = np.minimum(((np.arange(size) + 0.5) * h / size).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(size) + 0.5) * w / size).astype(np.int64), w - 1)
    return a[..., rows[:, None], cols[None, :]]


def resize_image(img: np.ndarray, size: int) -> np.ndarray:
    import cv2

    if img.shape == (size, size):
        return img
    interp = cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(img, (size, size), interpolation=interp)


# ----------------------------------------------------------------------------------------------- the cache
@dataclass
class Cache:
    """An opened cache. ``frames[i]`` describes frame ``i``; ``images``/``masks`` are read-only memmaps."""

    root: Path
    resolution: int
    classes: list[str]
    frames: list[dict]
    images: np.ndarray  # uint8 [F, R, R]
    masks: np.ndarray | None  # int32 [F, W, R, R]

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def persons(self) -> list[str]:
        return [f["person"] for f in self.frames]

    def labelled(self) -> np.ndarray:
        return np.array([f["labelled"] for f in self.frames], dtype=bool)

    def stack(self, i: int, k: int = 0) -> np.ndarray:
        """``uint8 [2k+1, R, R]``: frame ``i`` and its k neighbours on each side, clamped inside its volume."""
        f = self.frames[i]
        lo, hi = i - f["slice"], i - f["slice"] + f["nslices"] - 1
        idx = np.clip(np.arange(i - k, i + k + 1), lo, hi)
        return self.images[idx]

    def read(self, i: int, k: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
        """(image ``uint8 [2k+1, R, R]``, mask words ``int32 [W, R, R]`` or None). Copies out of the memmap."""
        img = np.ascontiguousarray(self.stack(i, k))
        m = None
        if self.masks is not None and self.frames[i]["labelled"]:
            m = np.array(self.masks[i])
        return img, m

    @classmethod
    def open(cls, root: str | Path, resolution: int | None = None) -> Cache:
        root = Path(root)
        idx_path = root / "index.json"
        if not idx_path.is_file():
            raise DataError(root, "not a bonekit cache (no index.json); build it with bonekit.cache.build")
        try:
            meta = json.loads(idx_path.read_text())
            r, k, n = meta["resolution"], len(meta["classes"]), len(meta["frames"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise DataError(idx_path, f"damaged cache index ({type(e).__name__}: {e}); delete the folder "
                                      f"{root} and run again to rebuild it") from None
        if resolution is not None and resolution != r:
            raise DataError(root, f"cache holds images at {r}x{r}, asked for {resolution}x{resolution}")
        img_path = root / "images.u8"
        if not img_path.is_file() or img_path.stat().st_size != n * r * r:
            raise DataError(img_path, f"wrong size for {n} frames at {r}x{r}: the cache is damaged, delete it")
        images = np.memmap(img_path, dtype=np.uint8, mode="r", shape=(n, r, r))
        masks = None
        if meta["has_masks"]:
            w = math.ceil(k / 32)
            mpath = root / "masks.i32"
            if not mpath.is_file() or mpath.stat().st_size != n * w * r * r * 4:
                raise DataError(mpath, "wrong size: the cache is damaged, delete it")
            masks = np.memmap(mpath, dtype=np.int32, mode="r", shape=(n, w, r, r))
        return cls(root, r, meta["classes"], meta["frames"], images, masks)


def cache_key(records: list[Record], resolution: int, classes: list[str], skip_bad: bool = False) -> str:
    h = hashlib.sha1()
    # skip_bad is part of the key: a strict run must not reuse a cache that silently dropped bad files
    h.update(json.dumps([FORMAT_VERSION, resolution, classes] + (["skip_bad"] if skip_bad else [])).encode())
    for r in records:
        for p in (r.image, r.label):
            if p is None:
                h.update(b"-")
                continue
            st = Path(p).stat()
            h.update(f"{Path(p).resolve()}|{st.st_size}|{st.st_mtime_ns}|{r.kind}|{r.extra.get('image_id')}".encode())
    return h.hexdigest()[:16]


def _frames_of(rec: Record) -> int:
    if rec.kind == "volume":
        import nibabel as nib

        return int(nib.load(str(rec.image)).shape[-1])
    return 1


def _fill(job: tuple) -> tuple[int, str | None, tuple[int, int], list[int]]:
    """Worker: read one record, resize, write its frame(s) into the memmaps.

    Returns (record index, error or None, native (height, width), classes its label lacks)."""
    i, rec, start, root, n, r, classes, has_masks, skip_bad = job
    missing: list[int] = []
    try:
        images = np.memmap(root / "images.u8", dtype=np.uint8, mode="r+", shape=(n, r, r))
        w = math.ceil(len(classes) / 32)
        masks = np.memmap(root / "masks.i32", dtype=np.int32, mode="r+", shape=(n, w, r, r)) if has_masks else None
        if rec.kind == "volume":
            from bonekit.formats.volumes import read_volume

            vol, words = read_volume(rec.image, rec.label)  # uint8 [D, H, W], int32 [D, W, H, W] | None
            size = vol.shape[1:]
            if words is not None and tuple(words.shape[-2:]) != tuple(size):
                raise DataError(rec.label, f"label volume slices are {tuple(words.shape[-2:])}, the image's "
                                           f"{tuple(size)}: they must match")
            for d in range(vol.shape[0]):
                images[start + d] = resize_image(vol[d], r)
                if masks is not None and words is not None:
                    masks[start + d] = resize_nearest(words[d], r)
        else:
            img = load_image(rec)
            size = img.shape
            images[start] = resize_image(img, r)
            if masks is not None:
                m = load_mask(rec, img.shape[0], img.shape[1], classes)
                if m is not None:
                    masks[start] = resize_nearest(pack(m), r)
                    missing = [c for c in range(m.shape[0]) if not m[c].any()]
        images.flush()
        if masks is not None:
            masks.flush()
        return i, None, (int(size[0]), int(size[1])), missing
    except Exception as e:  # noqa: BLE001  any failure of one file is reported as that file's error
        err = e if isinstance(e, DataError) else DataError(rec.image, f"cannot read ({type(e).__name__}: {e})")
        if skip_bad:
            return i, str(err), (0, 0), []
        raise err from None


def build(records: list[Record], resolution: int, classes: list[str], cache_root: str | Path | None = None,
          workers: int = 2, skip_bad: bool = False, progress: bool = True) -> Cache:
    """Build (or reuse) the cache of ``records`` at ``resolution``; returns it opened.

    The cache is rebuilt when any source file, the resolution or the class list changes. With ``skip_bad``,
    unreadable records are dropped from the index and counted; otherwise the first one stops the build.
    """
    if not records:
        raise DataError(None, "no records to cache (empty data folder?)")
    key = cache_key(records, resolution, classes, skip_bad)
    root = Path(cache_root or default_root()) / f"cache-{resolution}-{key}"
    if (root / "index.json").is_file():
        return Cache.open(root, resolution)
    tmp = root.with_name(root.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        return _build_into(tmp, root, records, resolution, classes, workers, skip_bad, progress)
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)  # no half-built folder is left behind
        raise


def _build_into(tmp: Path, root: Path, records: list[Record], resolution: int, classes: list[str], workers: int,
                skip_bad: bool, progress: bool) -> Cache:
    counts = [_frames_of(r) for r in records]
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(int)
    n = int(starts[-1])
    has_masks = any(r.label is not None for r in records)
    np.memmap(tmp / "images.u8", dtype=np.uint8, mode="w+", shape=(n, resolution, resolution)).flush()
    if has_masks:
        w = math.ceil(len(classes) / 32)
        np.memmap(tmp / "masks.i32", dtype=np.int32, mode="w+", shape=(n, w, resolution, resolution)).flush()
    jobs = [(i, r, int(starts[i]), tmp, n, resolution, classes, has_masks, skip_bad) for i, r in enumerate(records)]
    bad: dict[int, str] = {}
    sizes: dict[int, tuple[int, int]] = {}
    lacking: dict[int, list[int]] = {}  # labelled images whose label lacks some classes
    bar = tqdm(total=len(jobs), desc=f"cache {resolution}px", unit="img", disable=not progress)
    if workers > 1 and len(jobs) > 1:
        from concurrent.futures.process import BrokenProcessPool

        ex = pool(workers)
        try:
            for i, err, hw, miss in ex.map(_fill, jobs, chunksize=max(1, len(jobs) // (8 * workers))):
                sizes[i] = hw
                if miss:
                    lacking[i] = miss
                if err:
                    bad[i] = err
                bar.update()
        except BrokenProcessPool:
            raise DataError(None, "a cache-building worker process died (out of memory or killed); run again, or "
                                  "with data.workers=1 to find the file") from None
        finally:
            # On an error the remaining jobs are dropped at once: no waiting for them, no orphan workers.
            ex.shutdown(wait=True, cancel_futures=True)
    else:
        for job in jobs:
            i, err, hw, miss = _fill(job)
            sizes[i] = hw
            if miss:
                lacking[i] = miss
            if err:
                bad[i] = err
            bar.update()
    bar.close()
    if bad and len(bad) == len(records):
        raise DataError(None, f"every one of the {len(records)} files failed to read (data.skip_bad=true skips "
                              f"bad files, but none is left); first: {next(iter(bad.values()))}")
    if lacking:  # not an error (a bone can be out of the field), but never silent: an empty mask is a claim
        i0, miss = next(iter(lacking.items()))
        print(f"[bonekit.cache] note: {len(lacking)} of {len(records)} labelled images lack some bones, which train "
              f"as 'no bone here' (first: {records[i0].label}: {[classes[c] for c in miss][:5]})")
    if bad:
        print(f"[bonekit.cache] skipped {len(bad)} unreadable file(s) (data.skip_bad=true):")
        for e in list(bad.values())[:20]:
            print("   ", e)
    frames = []
    for i, rec in enumerate(records):
        if i in bad:
            continue
        for d in range(counts[i]):
            frames.append({
                "frame": int(starts[i]) + d, "image": str(rec.image), "label": str(rec.label) if rec.label else None,
                "person": rec.person, "side": rec.side, "kind": rec.kind, "slice": d, "nslices": counts[i],
                "labelled": rec.label is not None, "meta": rec.extra.get("meta", {}),
                "height": sizes[i][0], "width": sizes[i][1],  # native size: evaluation goes back to it
            })
    if bad:  # compact: rewrite the memmaps without the bad records' frames
        keep = np.array([f["frame"] for f in frames], dtype=np.int64)
        _compact(tmp, keep, n, resolution, len(classes), has_masks)
    for f in frames:
        f.pop("frame")
    (tmp / "index.json").write_text(json.dumps({
        "version": FORMAT_VERSION, "resolution": resolution, "classes": classes, "has_masks": has_masks,
        "skipped": list(bad.values()), "frames": frames,
    }))
    try:
        tmp.rename(root)  # atomic: a half-built cache is never taken for a finished one
    except OSError:  # another process finished first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return Cache.open(root, resolution)


def _compact(root: Path, keep: np.ndarray, n: int, r: int, k: int, has_masks: bool) -> None:
    img = np.array(np.memmap(root / "images.u8", dtype=np.uint8, mode="r", shape=(n, r, r))[keep])
    img.tofile(root / "images.u8")
    if has_masks:
        w = math.ceil(k / 32)
        m = np.array(np.memmap(root / "masks.i32", dtype=np.int32, mode="r", shape=(n, w, r, r))[keep])
        m.tofile(root / "masks.i32")
