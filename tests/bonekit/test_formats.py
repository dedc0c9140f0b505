import json

import cv2
import numpy as np
import pytest
from tests_helpers import baseline_label  # noqa: F401  (see conftest: the competition baseline rasteriser)

from bonekit.classes import HAND29
from bonekit.errors import DataError
from bonekit.formats import coco, competition, discover, maskdir


def test_scan_quirks(comp_dir):
    recs = competition.scan(comp_dir)
    assert len(recs) == 6
    assert [r.image.name for r in recs][:2] == sorted(r.image.name for r in recs[:2])
    assert recs[0].side == "R" and recs[1].side == "L" and recs[2].side == ""
    assert recs[0].person == "ID001"
    assert recs[0].extra["meta"]["sex"] == "F" and recs[1].extra["meta"]["age"] == 31.0
    doc = json.loads(recs[0].label.read_text())
    assert doc["filename"].endswith(".jpg") and doc["metadata"] == {"height": 3060, "width": 3060}
    assert set(doc) == {"annotations", "attributes", "file_id", "filename", "parent_path", "last_modifier_id",
                        "metadata", "last_workers"}
    img = cv2.imread(str(recs[0].image))
    assert img.ndim == 3 and (img[..., 0] == img[..., 2]).all()  # 3 equal channels


def test_read_mask_equals_baseline(comp_dir):
    rec = competition.scan(comp_dir)[0]
    m = competition.read_mask(rec.label, 64, 64)
    assert m.shape == (29, 64, 64) and m.dtype == bool
    assert (m == baseline_label(rec.label, 64, 64)).all()
    assert m[0, 63].any()  # the border-touching polygon survives


def test_overlaps_survive(tmp_path):
    sq = np.array([[2, 2], [10, 2], [10, 10], [2, 10]])
    competition.write_sample(tmp_path, "ID001", "image1.png", np.zeros((16, 16), np.uint8),
                             {"Pisiform": sq, "Triquetrum": sq + 3})
    m = competition.read_mask(tmp_path / "outputs_json/ID001/image1.json", 16, 16)
    p, t = HAND29.index("Pisiform"), HAND29.index("Triquetrum")
    assert (m[p] & m[t]).sum() > 0


def _write_json(path, anns):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(anns))


@pytest.mark.parametrize("doc, match", [
    ({"foo": []}, "no 'annotations'"),
    ({"annotations": [{"label": "finger-99", "points": [[0, 0], [1, 1], [1, 0]]}]}, "unknown label 'finger-99'"),
    ({"annotations": [{"label": "Ulna", "points": [[0, 0], [1, 1]]}]}, "at least 3"),
])
def test_bad_json(tmp_path, doc, match):
    p = tmp_path / "a.json"
    _write_json(p, doc)
    with pytest.raises(DataError, match=match) as e:
        competition.read_mask(p, 8, 8)
    assert "a.json" in str(e.value)


def test_invalid_json_and_outside_polygon(tmp_path):
    p = tmp_path / "b.json"
    p.write_text("{not json")
    with pytest.raises(DataError, match="b.json: not valid JSON"):
        competition.read_annotations(p)
    _write_json(p, {"annotations": [{"label": "Ulna", "points": [[0, 0], [90, 0], [90, 90]]}]})
    with pytest.raises(DataError, match="outside"):
        competition.read_mask(p, 8, 8)


def test_missing_pairs_and_empty(comp_dir, tmp_path):
    js = next((comp_dir / "outputs_json").rglob("*.json"))
    moved = tmp_path / js.name
    js.rename(moved)
    with pytest.raises(DataError, match="has no annotation JSON"):
        competition.scan(comp_dir)
    moved.rename(js)
    img = next((comp_dir / "DCM").rglob("*.png"))
    img.rename(tmp_path / img.name)
    with pytest.raises(DataError, match="annotation JSON has no image"):
        competition.scan(comp_dir)
    (tmp_path / "empty" / "DCM").mkdir(parents=True)
    with pytest.raises(DataError, match="empty data folder"):
        discover(tmp_path / "empty")


def test_corrupt_png(comp_dir):
    from bonekit.formats.images import read_raster

    img = next((comp_dir / "DCM").rglob("*.png"))
    data = img.read_bytes()
    img.write_bytes(data[: len(data) // 3])
    with pytest.raises(DataError, match="corrupt or truncated") as e:
        read_raster(img)
    assert img.name in str(e.value)


def test_meta_backspace_forms(tmp_path):
    import pandas as pd

    df = pd.DataFrame({"ID": [1, 2], "나이": [20, 30], "성별": ["_x0008_여", "\x08남"], "체중(몸무게)": [50, 70],
                       "키(신장)": [160, 180], "Unnamed: 5": [None, None]})
    df["성별"] = df["성별"].str.replace("\x08", "_x0008_")  # openpyxl cannot store a raw backspace
    df.to_excel(tmp_path / "m.xlsx", index=False)
    meta = competition.read_meta(tmp_path / "m.xlsx")
    assert meta["ID001"]["sex"] == "F" and meta["ID002"]["sex"] == "M" and meta["ID002"]["age"] == 30


def test_coco_polygon_and_rle(tmp_path):
    img = np.zeros((6, 5), np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), img)
    # Column-major runs: 7 zeros, 3 ones, rest zeros -> pixels (1,1),(2,1),(3,1) in a 6x5 image.
    # Compressed string for counts [7, 3, 20] (computed by hand: small values encode as chr(48 + v)).
    doc = {"images": [{"id": 1, "file_name": "a.png", "height": 6, "width": 5}],
           "categories": [{"id": 1, "name": "Ulna"}, {"id": 2, "name": "Radius"}],
           "annotations": [
               {"id": 1, "image_id": 1, "category_id": 1, "segmentation": {"counts": [7, 3, 20], "size": [6, 5]}},
               {"id": 2, "image_id": 1, "category_id": 2, "segmentation": {"counts": "73D", "size": [6, 5]}},
               {"id": 3, "image_id": 1, "category_id": 1, "segmentation": [[3, 0, 4, 0, 4, 1, 3, 1]]}]}
    (tmp_path / "c.json").write_text(json.dumps(doc))
    recs = discover(tmp_path / "c.json")
    m = coco.read_mask(recs[0].label, 1, 6, 5, ["Radius", "Ulna"])
    assert m[1, 1:4, 1].all() and m[1, 0:2, 3:5].all()
    assert (m[0] == m[1] & ~np.pad(np.ones((2, 2), bool), ((0, 4), (3, 0)))).all()


def test_maskdir_roundtrip_and_unknown(tmp_path):
    rng = np.random.default_rng(0)
    m = rng.random((3, 8, 8)) > 0.5
    maskdir.write(tmp_path, "p1_a", np.zeros((8, 8), np.uint8), m, ["A", "B", "C"])
    recs = discover(tmp_path)
    assert (maskdir.read_mask(recs[0].label, 8, 8, ["A", "B", "C"]) == m).all()
    cv2.imwrite(str(tmp_path / "masks/p1_a/Z.png"), np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match="unknown label 'Z'"):
        maskdir.read_mask(recs[0].label, 8, 8, ["A", "B", "C"])
