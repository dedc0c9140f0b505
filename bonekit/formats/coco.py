"""COCO instance annotations (polygons, uncompressed RLE, compressed RLE) -> multi-label masks.

Category names must be in the class list; several instances of one class are OR-ed into its channel.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import cv2
import numpy as np

from bonekit.errors import DataError
from bonekit.formats.competition import Record


def _decode_counts_string(s: str) -> list[int]:
    """COCO's compressed RLE string (6 bits a char, continuation bit, delta-coded after the 3rd run)."""
    counts: list[int] = []
    i = 0
    while i < len(s):
        x, k, more = 0, 0, True
        while more:
            c = ord(s[i]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            i += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def rle_to_mask(segm: dict, height: int, width: int) -> np.ndarray:
    """COCO RLE (column-major runs starting with zeros) -> ``bool [H, W]``."""
    counts = segm["counts"]
    if isinstance(counts, str):
        counts = _decode_counts_string(counts)
    flat = np.zeros(height * width, dtype=bool)
    pos, val = 0, False
    for n in counts:
        if val:
            flat[pos : pos + n] = True
        pos += n
        val = not val
    return flat.reshape(width, height).T


def ann_mask(ann: dict, height: int, width: int) -> np.ndarray:
    seg = ann["segmentation"]
    if isinstance(seg, dict):
        return rle_to_mask(seg, height, width)
    layer = np.zeros((height, width), np.uint8)
    for poly in seg:
        pts = np.round(np.asarray(poly, dtype=np.float64).reshape(-1, 2)).astype(np.int32)
        if len(pts) >= 3:
            cv2.fillPoly(layer, [pts], 1)
    return layer.astype(bool)


def scan(json_path: str | Path, image_root: str | Path | None = None) -> list[Record]:
    """One record per COCO image; ``image_root`` defaults to the JSON's folder."""
    json_path = Path(json_path)
    try:
        doc = json.loads(json_path.read_text())
    except Exception as e:
        raise DataError(json_path, f"cannot read COCO JSON ({e})") from None
    for key in ("images", "annotations", "categories"):
        if key not in doc:
            raise DataError(json_path, f"COCO JSON has no {key!r} key")
    root = Path(image_root) if image_root else json_path.parent
    recs = []
    for im in sorted(doc["images"], key=lambda d: d["file_name"]):
        path = root / im["file_name"]
        if not path.is_file():
            raise DataError(path, f"image listed in {json_path.name} does not exist")
        recs.append(Record(path, json_path, person=str(im.get("person", Path(im["file_name"]).stem)),
                           kind="coco", extra={"image_id": im["id"]}))
    return recs


@functools.lru_cache(maxsize=4)
def _load(path: str, mtime_ns: int) -> dict:
    """The parsed COCO file (keyed by modification time, so an edited file is read again)."""
    return json.loads(Path(path).read_text())


def read_mask(json_path: str | Path, image_id, height: int, width: int, classes: list[str]) -> np.ndarray:
    """``bool [K, H, W]`` for one image of a COCO file."""
    doc = _load(str(json_path), Path(json_path).stat().st_mtime_ns)
    cats = {c["id"]: c["name"] for c in doc["categories"]}
    lookup = {c: i for i, c in enumerate(classes)}
    mask = np.zeros((len(classes), height, width), bool)
    for ann in doc["annotations"]:
        if ann["image_id"] != image_id:
            continue
        name = cats.get(ann["category_id"])
        if name not in lookup:
            raise DataError(json_path, f"annotation {ann.get('id')}: unknown category {name!r} (known: {classes})")
        mask[lookup[name]] |= ann_mask(ann, height, width)
    return mask
