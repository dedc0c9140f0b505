import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from bonekit import rle, submission
from bonekit.classes import HAND29


def test_formats_md_example():
    m = np.zeros((3, 4), bool)
    for r, c in [(0, 0), (1, 1), (1, 2), (2, 3)]:
        m[r, c] = True
    assert rle.encode(m) == "1 1 6 2 12 1"
    assert rle.encode_loop(m) == "1 1 6 2 12 1"
    assert (rle.decode("1 1 6 2 12 1", 3, 4) == m).all()


def test_empty_and_nan():
    assert rle.encode(np.zeros((5, 5), bool)) == ""
    assert not rle.decode("", 5, 5).any()
    assert not rle.decode(float("nan"), 5, 5).any()
    assert not rle.decode(None, 5, 5).any()


@settings(max_examples=200, deadline=None)
@given(arrays(bool, st.tuples(st.integers(1, 4), st.integers(1, 17), st.integers(1, 19))))
def test_roundtrip_and_reference(masks):
    enc = rle.encode_many(masks)
    for k in range(masks.shape[0]):
        assert enc[k] == rle.encode_loop(masks[k])  # same string as the common loop
        assert (rle.decode(enc[k], *masks.shape[1:]) == masks[k]).all()


def test_full_mask_and_last_pixel():
    m = np.ones((4, 4), bool)
    assert rle.encode(m) == "1 16"
    m = np.zeros((3, 3), bool)
    m[2, 2] = True  # 9 pixels: padding in packbits
    assert rle.encode(m) == "9 1"


def test_bad_rle():
    with pytest.raises(ValueError, match="odd"):
        rle.decode("1 2 3", 2, 2)
    with pytest.raises(ValueError, match="outside"):
        rle.decode("3 5", 2, 2)


def test_submission_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    h = w = 16
    items = [(f"DCM/ID00{i}/image16613{i}_R.png", rng.random((29, h, w)) > 0.7) for i in (2, 1)]
    items[0][1][3] = False  # an empty mask -> empty string -> NaN in pandas
    out = submission.write(tmp_path / "sub.csv", items)
    df = pd.read_csv(out)
    assert list(df.columns) == ["image_name", "class", "rle"]
    assert len(df) == 2 * 29
    assert df["image_name"].iloc[0] == "image166131_R.png"  # sorted by path, basename, _R kept
    assert list(df["class"][:29]) == HAND29
    back = submission.read(out, h, w)
    for p, m in items:
        assert (back[p.split("/")[-1]] == m).all()


def test_word_aligned_sizes():
    rng = np.random.default_rng(5)
    for shape in [(8, 8), (8, 16), (16, 16), (3, 64)]:
        m = rng.random((3,) + shape) > 0.5
        m[:, -1, -1] = True  # a run reaching the very last pixel with no padding after it
        m[1] = True
        m[2] = False
        assert rle.encode_many(m) == [rle.encode_loop(x) for x in m]
