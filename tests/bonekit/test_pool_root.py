"""data.pool_root: unlabelled X-rays join the co-supervision pool and nothing else."""


import numpy as np
from conftest import TINY, LocalAccelerator, launch, make_competition

from bonekit import config
from bonekit.config import DataConfig
from bonekit.segdata import setup


def test_pool_root_joins_the_pool_only(tmp_path, monkeypatch):
    monkeypatch.setenv("BONEKIT_CACHE", str(tmp_path / "cache"))
    lab = make_competition(tmp_path / "train", people=5, size=48)
    raw = make_competition(tmp_path / "raw", people=2, size=48, seed=1, labels=False)  # same person IDs
    base = ["resolution=32", "workers=1", "folds=5", f"root={lab}"]
    plain = setup(config.load(DataConfig, base), LocalAccelerator(), {"fraction": 0.5, "seed": 0}, 32)
    d = setup(config.load(DataConfig, base + [f"pool_root={raw}"]), LocalAccelerator(), {"fraction": 0.5, "seed": 0}, 32)
    assert len(d.extra) == 4 and len(d.cache) == len(plain.cache) + 4
    extra_people = {d.cache.persons[i] for i in d.extra}
    assert all(p.startswith("pool/") for p in extra_people)  # never the labelled data's ID001
    # folds, label subset and validation are exactly those without the pool folder
    for a, b in ((d.train_idx, plain.train_idx), (d.val_idx, plain.val_idx), (d.labelled, plain.labelled)):
        assert np.array_equal(a, b)
    assert set(d.pool) == set(plain.pool) | set(d.extra)
    assert not set(d.extra) & (set(d.train_idx) | set(d.val_idx) | set(d.labelled))


def test_distill_and_experts_use_the_pool_folder(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    raw = make_competition(tmp_path / "raw", people=2, size=64, seed=1, labels=False)
    common = TINY + ["data.folds=2", "loop.batch_size=2", "loop.workers=0", "loop.steps=2", "labels.fraction=0.5",
                     f"data.pool_root={raw}"]
    out = launch("finetune/distill.py", common + ["kd.ema=0.99", f"run_dir={tmp_path / 'mt'}"], cache)
    assert "4 of them from data.pool_root" in out
    launch("cosup/experts.py", common + ["partition.crop_groups=[carpals]", f"run_dir={tmp_path / 'ex'}"], cache)
    import json

    m = json.loads((tmp_path / "ex" / "experts.json").read_text())
    out = launch("finetune/distill.py", common + [f"experts={tmp_path / 'ex'}", f"run_dir={tmp_path / 'st'}"], cache)
    assert "4 of them from data.pool_root" in out and len(m["pool"]) >= 4
