from dataclasses import dataclass, field

import numpy as np
import pytest

from bonekit import config, splits
from bonekit.errors import ConfigError


def test_group_folds_keep_people_together():
    persons = [f"ID{i // 2:03d}" for i in range(40)]
    f = splits.group_folds(persons, 5, seed=3)
    for p in set(persons):
        assert len({f[i] for i in range(40) if persons[i] == p}) == 1
    assert sorted(np.bincount(f)) == [8, 8, 8, 8, 8]
    assert (splits.group_folds(persons, 5, seed=3) == f).all()
    tr, va = splits.train_val(persons, 5, 1, seed=3)
    assert not set(persons[i] for i in tr) & set(persons[i] for i in va)


def test_label_subsets_are_nested_and_deterministic():
    idx = np.arange(100, 200)
    prev = set()
    for frac in (0.01, 0.05, 0.1, 0.25, 1.0):
        lab, pool = splits.label_subset(idx, frac, seed=7)
        assert prev <= set(lab) and not set(lab) & set(pool) and len(lab) + len(pool) == 100
        prev = set(lab)
    assert (splits.label_subset(idx, 0.05, 7)[0] == splits.label_subset(idx, 0.05, 7)[0]).all()
    assert not (splits.label_subset(idx, 0.1, 7)[0] == splits.label_subset(idx, 0.1, 8)[0]).all()
    with pytest.raises(ValueError, match="fraction"):
        splits.label_subset(idx, 0.0)


def test_label_subsets_by_unit_keep_a_volume_together():
    """labels.unit=volume: the fraction counts volumes, each labelled (or pooled) whole; one frame per unit gives
    exactly the per-frame subset, so radiograph studies do not change."""
    idx = np.arange(100, 160)
    vols = [f"vol{j // 6}" for j in range(60)]  # 10 volumes of 6 slices
    lab, pool = splits.label_subset(idx, 0.2, seed=3, groups=vols)
    assert len(lab) == 12 and len(pool) == 48  # 2 of 10 volumes, all their slices
    lab_vols = {vols[i - 100] for i in lab}
    assert len(lab_vols) == 2 and not lab_vols & {vols[i - 100] for i in pool}
    assert set(splits.label_subset(idx, 0.4, seed=3, groups=vols)[0]) >= set(lab)  # nested
    frames = [f"img{j}" for j in range(60)]
    for frac in (0.05, 0.3):
        a, b = splits.label_subset(idx, frac, seed=5, groups=frames), splits.label_subset(idx, frac, seed=5)
        assert (a[0] == b[0]).all() and (a[1] == b[1]).all()
    with pytest.raises(ValueError, match="unit names"):
        splits.label_subset(idx, 0.5, groups=vols[:10])


@dataclass
class Sub:
    lr: float = 0.1
    steps: int = 10


@dataclass
class Schema:
    data: config.DataConfig = field(default_factory=config.DataConfig)
    train: Sub = field(default_factory=Sub)
    name: str = "x"


def test_config_merge_and_errors(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("train:\n  steps: 20\n")
    cfg = config.load(Schema, [f"config={y}", "train.lr=0.5", "data.resolution=128"])
    assert cfg.train.steps == 20 and cfg.train.lr == 0.5 and cfg.data.resolution == 128
    with pytest.raises(ConfigError, match="train.stepz"):
        config.load(Schema, ["train.stepz=3"])
    with pytest.raises(ConfigError, match="train.steps"):
        config.load(Schema, ["train.steps=abc"])
    with pytest.raises(ConfigError, match="not key=value"):
        config.load(Schema, ["oops"])
    out = config.save(cfg, tmp_path / "run" / "config.yaml")
    assert config.load(Schema, [f"config={out}"]).train.lr == 0.5
