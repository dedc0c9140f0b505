import os
import time

import numpy as np
import pytest
import torch

from bonekit import cache, maskbits
from bonekit.classes import HAND29
from bonekit.errors import DataError
from bonekit.formats import competition, discover


def test_pack_unpack_roundtrip():
    rng = np.random.default_rng(0)
    for k in (1, 29, 32, 40):
        m = rng.random((k, 5, 7)) > 0.5
        w = maskbits.pack(m)
        assert w.shape == ((k + 31) // 32, 5, 7) and w.dtype == np.int32
        assert (maskbits.unpack(torch.from_numpy(w), k).numpy() == m).all()
        # a batch dimension in front works too
        assert (maskbits.unpack(torch.from_numpy(np.stack([w, w])), k).numpy()[1] == m).all()


def test_build_reuse_rebuild(comp_dir, cache_root):
    recs = discover(comp_dir)
    c = cache.build(recs, 32, HAND29, cache_root, workers=2, progress=False)
    assert len(c) == 6 and c.images.shape == (6, 32, 32) and c.masks.shape == (6, 1, 32, 32)
    assert c.frames[0]["height"] == 64 and c.frames[0]["side"] == "R" and c.frames[0]["meta"]["sex"] == "F"
    img, words = c.read(0)
    ref = competition.read_mask(recs[0].label, 64, 64)
    assert (maskbits.unpack(torch.from_numpy(words), 29).numpy() == cache.resize_nearest(ref, 32)).all()
    assert img.shape == (1, 32, 32)
    again = cache.build(recs, 32, HAND29, cache_root, progress=False)
    assert again.root == c.root
    assert cache.build(recs, 16, HAND29, cache_root, progress=False).root != c.root
    os.utime(recs[0].label, (time.time() + 5, time.time() + 5))
    assert cache.build(discover(comp_dir), 32, HAND29, cache_root, progress=False).root != c.root


def test_bad_file_stops_or_is_skipped(comp_dir, cache_root):
    recs = discover(comp_dir)
    recs[2].image.write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataError, match=recs[2].image.name):
        cache.build(recs, 16, HAND29, cache_root, workers=1, progress=False)
    c = cache.build(recs, 16, HAND29, cache_root, workers=1, skip_bad=True, progress=False)
    assert len(c) == 5 and recs[2].image.name not in [f["image"] for f in c.frames]


def test_open_checks_resolution_and_size(comp_dir, cache_root):
    c = cache.build(discover(comp_dir), 16, HAND29, cache_root, workers=1, progress=False)
    with pytest.raises(DataError, match="asked for 32x32"):
        cache.Cache.open(c.root, 32)
    with open(c.root / "images.u8", "ab") as f:
        f.write(b"x")
    with pytest.raises(DataError, match="images.u8: wrong size"):
        cache.Cache.open(c.root)
