"""The hand-bone competition layout (formats.md), read and written with every quirk.

```
<split>/DCM/ID001/image1661130828152_R.png      # grey PNG stored with 3 equal channels
<split>/outputs_json/ID001/image1661130828152_R.json
<root>/meta_data.xlsx
```
Annotation JSON: ``annotations`` of ``{"id", "type": "poly_seg", "attributes", "points": [[x, y], ...], "label"}``;
``filename`` says ``.jpg`` and ``metadata`` says 3060x3060, both wrong: trust the PNG's own size.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from bonekit.classes import HAND29
from bonekit.errors import DataError

ID_RE = re.compile(r"^ID(\d+)$")


@dataclass
class Record:
    """One image of a labelled (or unlabelled) set; ``label`` is None when there is none."""

    image: Path
    label: Path | None
    person: str  # "ID001"; both hands of a person share it (splits group on it)
    side: str = ""  # "R", "L" or "" (unknown)
    kind: str = "competition"  # how ``label`` is read: competition | coco | maskdir | none
    extra: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.image.name


def side_of(name: str) -> str:
    """``image1661130828152_R.png`` -> "R"; names without a suffix give ""."""
    stem = Path(name).stem
    if stem.endswith("_R"):
        return "R"
    if stem.endswith("_L"):
        return "L"
    return ""


def scan(split: str | Path, labels: str = "required") -> list[Record]:
    """Records of a competition split folder (the one holding ``DCM/``), sorted by relative path.

    ``labels``: "required" (train: every image needs its JSON and every JSON its image), "optional" (test
    folders with or without ``outputs_json/``), or "ignore".
    """
    split = Path(split)
    dcm = split / "DCM"
    if not dcm.is_dir():
        raise DataError(split, "no DCM/ folder: not a competition split (expected DCM/IDxxx/*.png)")
    images = sorted(p for p in dcm.rglob("*") if p.suffix.lower() == ".png" and p.is_file())  # .png and .PNG
    if not images:
        raise DataError(dcm, "empty data folder: no PNG images under DCM/")
    jroot = split / "outputs_json"
    records = []
    for img in images:
        rel = img.relative_to(dcm)
        person = rel.parts[0] if len(rel.parts) > 1 else img.stem
        js = jroot / rel.with_suffix(".json")
        if not js.is_file() and (jroot / rel.with_suffix(".JSON")).is_file():
            js = jroot / rel.with_suffix(".JSON")
        label: Path | None = js if js.is_file() else None
        if label is None and labels == "required":
            raise DataError(img, f"image has no annotation JSON (expected {js})")
        records.append(Record(img, label if labels != "ignore" else None, person, side_of(img.name)))
    for meta_path in (split / "meta_data.xlsx", split.parent / "meta_data.xlsx"):
        if meta_path.is_file():
            meta = read_meta(meta_path)
            for r in records:
                r.extra["meta"] = meta.get(r.person, {})
            break
    if labels != "ignore" and jroot.is_dir():
        have = {r.image.relative_to(dcm).with_suffix("") for r in records}
        for js in sorted(jroot.rglob("*.json")):
            if js.relative_to(jroot).with_suffix("") not in have:
                raise DataError(js, "annotation JSON has no image (expected a PNG with the same name under DCM/)")
    return records


def read_image(path: str | Path) -> np.ndarray:
    """Competition PNG -> ``uint8 [H, W]`` (the three equal channels collapsed)."""
    from bonekit.formats.images import read_raster_u8

    return read_raster_u8(path)


def read_annotations(json_path: str | Path, classes: list[str] = HAND29) -> list[tuple[int, np.ndarray]]:
    """``[(class index, int32 points [n, 2] as (x=col, y=row))]``; bad JSON is an error naming the file."""
    json_path = Path(json_path)
    try:
        doc = json.loads(json_path.read_text())
    except FileNotFoundError:
        raise DataError(json_path, "annotation JSON does not exist") from None
    except json.JSONDecodeError as e:
        raise DataError(json_path, f"not valid JSON ({e})") from None
    if not isinstance(doc, dict) or "annotations" not in doc:
        raise DataError(json_path, "JSON has no 'annotations' key")
    lookup = {c: i for i, c in enumerate(classes)}
    if not isinstance(doc["annotations"], list):
        raise DataError(json_path, "'annotations' is not a list")
    out = []
    seen: set[str] = set()
    for i, ann in enumerate(doc["annotations"]):
        if not isinstance(ann, dict):
            raise DataError(json_path, f"annotation {i} is a {type(ann).__name__}, not an object with label and points")
        label = ann.get("label")
        if label not in lookup:
            raise DataError(json_path, f"annotation {i}: unknown label {label!r} (known: {', '.join(classes)})")
        if label in seen:  # two polygons for one bone would be merged silently
            raise DataError(json_path, f"annotation {i}: label {label!r} appears twice in one image")
        seen.add(label)
        try:
            pts = np.asarray(ann.get("points", []), dtype=np.float64)
        except (ValueError, TypeError):
            raise DataError(json_path, f"annotation {i} ({label}): points are not a list of numeric [x, y] pairs "
                                       "(ragged or non-numeric)") from None
        if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 3:
            raise DataError(json_path, f"annotation {i} ({label}): polygon needs at least 3 [x, y] points, got {pts.shape}")
        if not np.isfinite(pts).all():
            raise DataError(json_path, f"annotation {i} ({label}): points hold NaN or infinity")
        out.append((lookup[label], np.rint(pts).astype(np.int32)))
    return out


def read_mask(json_path: str | Path, height: int, width: int, classes: list[str] = HAND29) -> np.ndarray:
    """``bool [K, H, W]``: each polygon filled into its own channel, as the competition baseline does
    (``cv2.fillPoly`` into a fresh single-channel array), so overlapping bones keep both labels."""
    mask = np.zeros((len(classes), height, width), dtype=bool)
    anns = read_annotations(json_path, classes)
    if anns and height >= 64 and width >= 64:
        hi = np.max([p.max(0) for _, p in anns], 0)  # (max x, max y) over every polygon
        if hi[0] < width / 2 and hi[1] < height / 2:
            raise DataError(json_path, f"every polygon lies in the top-left quarter of the {height}x{width} image "
                                       f"(max x {hi[0]}, max y {hi[1]}): the image is larger than the one annotated")
    for c, pts in anns:
        if (pts[:, 0] >= width + 1).any() or (pts[:, 1] >= height + 1).any() or (pts < -1).any():
            raise DataError(json_path, f"polygon of {classes[c]} lies outside the {height}x{width} image")
        layer = np.zeros((height, width), dtype=np.uint8)
        cv2.fillPoly(layer, [pts], 1)
        mask[c] |= layer.astype(bool)
    return mask


# ----------------------------------------------------------------------------------------------- writing
def annotation_json(image_name: str, polygons: dict[str, np.ndarray], person: str) -> dict:
    """The annotation document with every quirk of the real files (``.jpg`` name, 3060x3060 metadata)."""
    anns = [
        {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{person}/{image_name}/{label}")),  # stable across runs
            "type": "poly_seg",
            "attributes": {},
            "points": np.asarray(pts).astype(int).tolist(),
            "label": label,
        }
        for label, pts in polygons.items()
    ]
    return {
        "annotations": anns,
        "attributes": {},
        "file_id": Path(image_name).stem,
        "filename": Path(image_name).stem + ".jpg",
        "parent_path": f"/{person}",
        "last_modifier_id": "bonekit",
        "metadata": {"height": 3060, "width": 3060},
        "last_workers": {},
    }


def write_sample(split: str | Path, person: str, image_name: str, image: np.ndarray,
                 polygons: dict[str, np.ndarray] | None) -> tuple[Path, Path | None]:
    """Write ``image: uint8 [H, W]`` as a 3-channel grey PNG and its polygons as annotation JSON."""
    split = Path(split)
    img_path = split / "DCM" / person / image_name
    img_path.parent.mkdir(parents=True, exist_ok=True)
    # Low zlib level: several times faster to write, files ~15% larger.
    if not cv2.imwrite(str(img_path), cv2.merge([image, image, image]), [cv2.IMWRITE_PNG_COMPRESSION, 1]):
        raise DataError(img_path, "could not write PNG")
    js_path = None
    if polygons is not None:
        js_path = split / "outputs_json" / person / (Path(image_name).stem + ".json")
        js_path.parent.mkdir(parents=True, exist_ok=True)
        js_path.write_text(json.dumps(annotation_json(image_name, polygons, person)))
    return img_path, js_path


def mask_to_polygon(mask: np.ndarray) -> np.ndarray:
    """``bool [H, W]`` -> dense ``int32 [n, 2]`` (x, y) boundary of the largest component (one vertex per
    boundary pixel, like the real annotations); filled back with fillPoly it reproduces the mask."""
    cs, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not cs:
        return np.zeros((0, 2), np.int32)
    c = max(cs, key=cv2.contourArea)
    return c[:, 0, :].astype(np.int32)


# ----------------------------------------------------------------------------------------------- meta
SEX_PREFIX = "_x0008_"  # the real sheet stores sex with a literal backspace escape: "_x0008_여"


def write_meta(path: str | Path, rows: list[dict]) -> Path:
    """``meta_data.xlsx`` with the real columns: ID (int), 나이, 성별 (with the backspace escape), 체중(몸무게), 키(신장).

    Written byte-reproducibly: fixed document dates and zip entry times, so the same rows give the same file.
    """
    import datetime
    import io
    import zipfile

    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.append(["ID", "나이", "성별", "체중(몸무게)", "키(신장)"])
    for r in rows:
        ws.append([int(ID_RE.match(r["person"]).group(1)), r["age"], SEX_PREFIX + ("여" if r["sex"] == "F" else "남"),
                   r["weight"], r["height"]])
    fixed = datetime.datetime(2022, 8, 22)
    wb.properties.created = wb.properties.modified = fixed
    buf = io.BytesIO()
    wb.save(buf)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zin, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            info = zipfile.ZipInfo(item.filename, date_time=(2022, 8, 22, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            data = zin.read(item.filename)
            if item.filename == "docProps/core.xml":  # openpyxl stamps the save time here: pin it
                data = re.sub(rb"(<dcterms:(?:created|modified)[^>]*>)[^<]*", rb"\g<1>2022-08-22T00:00:00Z", data)
            zout.writestr(info, data)
    return path


def read_meta(path: str | Path) -> dict[str, dict]:
    """``meta_data.xlsx`` -> ``{"ID001": {"age", "sex" ("F"/"M"), "weight", "height"}}``.

    Strips the backspace escape from 성별 in either spelling and ignores stray ``Unnamed: n`` columns.
    """
    import pandas as pd

    path = Path(path)
    try:
        df = pd.read_excel(path)
    except Exception as e:
        raise DataError(path, f"cannot read meta sheet ({type(e).__name__}: {e})") from None
    need = ["ID", "나이", "성별", "체중(몸무게)", "키(신장)"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise DataError(path, f"meta sheet lacks columns {missing} (has {list(df.columns)})")
    out = {}
    for _, r in df.iterrows():
        sex = str(r["성별"]).replace(SEX_PREFIX, "").replace("\x08", "").strip()
        out[f"ID{int(r['ID']):03d}"] = {
            "age": float(r["나이"]),
            "sex": {"여": "F", "남": "M"}.get(sex, sex),
            "weight": float(r["체중(몸무게)"]),
            "height": float(r["키(신장)"]),
        }
    return out
