import filecmp

import cv2
import numpy as np
import pytest

from bonekit import cache
from bonekit.classes import HAND29
from bonekit.formats import competition, discover
from bonekit.phantom import Spec, generate
from bonekit.phantom.__main__ import main as cli
from bonekit.phantom.render import project
from bonekit.phantom.sample import make_hand
from bonekit.phantom.volume import voxelise

SPEC = Spec(people=3, test_people=1, size=160, seed=5, volumes=True, volume_size=64)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("ph") / "a", SPEC, progress=False)


def test_layout_and_determinism(phantom, tmp_path):
    again = generate(tmp_path / "b", SPEC, progress=False)
    files = sorted(p.relative_to(phantom) for p in phantom.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    _, mismatch, errors = filecmp.cmpfiles(phantom, again, [str(f) for f in files], shallow=False)
    assert not mismatch and not errors  # byte-identical, the xlsx included
    names = [f.name for f in (phantom / "train" / "DCM").rglob("*.png")] + [f.name for f in (phantom / "test" / "DCM").rglob("*.png")]
    assert any(n.endswith("_R.png") for n in names) and all(len(n.split("image")[1][:13]) == 13 for n in names)
    assert len(list((phantom / "test" / "outputs_json").rglob("*.json"))) == 2  # test labels beside the test split
    meta = competition.read_meta(phantom / "meta_data.xlsx")
    assert len(meta) == 4 and {m["sex"] for m in meta.values()} <= {"F", "M"}


def test_roundtrip_all_classes_inside(phantom):
    recs = competition.scan(phantom / "train")
    assert len(recs) == 6
    for r in recs:
        img = competition.read_image(r.image)
        assert img.shape == (160, 160)
        m = competition.read_mask(r.label, 160, 160)
        assert m.reshape(29, -1).any(1).all(), r.image  # all 29 classes, rasterised inside the image


def test_bones_brighter_than_surrounding_tissue(phantom):
    for r in competition.scan(phantom / "train"):
        img = competition.read_image(r.image).astype(float)
        m = competition.read_mask(r.label, 160, 160)
        bone = m.any(0)
        ring = cv2.dilate(bone.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool) & ~bone
        assert img[bone].mean() > img[ring].mean() + 20


def test_volume_projection_matches_radiograph():
    hand, view, _, _ = make_hand(1, 2, 0, "R", 0.11)
    v = view.at(256)
    _, lab2d = project(hand, v, 29)
    _, lab3d = voxelise(hand, v, 29)
    proj = lab3d.any(1)
    for k, c in enumerate(HAND29):
        inter = (proj[k] & lab2d[k]).sum()
        union = (proj[k] | lab2d[k]).sum()
        assert union > 0 and inter / union >= 0.95, (c, inter / union)


def test_volumes_load_through_the_cache(phantom, tmp_path):
    recs = discover(phantom / "volumes" / "train") + discover(phantom / "volumes" / "test")
    assert len(recs) == 8 and recs[0].kind == "volume"
    c = cache.build(recs, 32, HAND29, tmp_path / "c", workers=1, progress=False)
    assert len(c) > 8 and len({f["image"] for f in c.frames}) == 8  # one frame per slice
    img, words = c.read(5, k=1)
    assert img.shape == (3, 32, 32) and words.shape == (1, 32, 32)


def test_bad_arguments(tmp_path, capsys):
    assert cli(["--out", str(tmp_path / "x"), "--size", "10"]) == 2
    assert "--size must be in [64, 2048]" in capsys.readouterr().err
    assert cli(["--out", str(tmp_path / "y"), "--people", "0"]) == 2
    (tmp_path / "z").mkdir()
    (tmp_path / "z" / "f").write_text("x")
    assert cli(["--out", str(tmp_path / "z")]) == 2
    assert "not empty" in capsys.readouterr().err
