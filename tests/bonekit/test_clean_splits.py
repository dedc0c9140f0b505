"""No test person reaches the training folds, the label subset, the pool or pretraining; the validation fold
stays out of pretraining unless asked for. For plain radiographs (slices=1) and 2.5D volumes (slices=3)."""


import numpy as np
import pytest
from conftest import LocalAccelerator

from bonekit import config
from bonekit.data import resolve_root
from bonekit.formats import discover
from bonekit.segdata import setup

ARGS = ["data.phantom.people=5", "data.phantom.test_people=2", "data.phantom.size=96", "data.phantom.volumes=true",
        "data.phantom.volume_size=24", "data.resolution=24", "data.workers=1", "data.folds=5"]


@pytest.mark.parametrize("slices", [1, 3])
def test_no_test_person_in_training_or_pretraining(slices, tmp_path, monkeypatch):
    monkeypatch.setenv("BONEKIT_CACHE", str(tmp_path / "cache"))
    from selfsup.pretrain import PretrainConfig, load_frames

    cfg = config.load(PretrainConfig, ARGS + [f"data.slices={slices}"])
    test_people = {r.person.split("_")[0] for r in discover(resolve_root(cfg.data, "test"), labels="ignore")}
    assert len(test_people) == 2
    d = setup(cfg.data, LocalAccelerator(), labels={"fraction": 0.5, "seed": 0}, eval_resolution=24)
    people = lambda idx: {d.cache.persons[i] for i in idx}  # noqa: E731
    for part in (d.train_idx, d.val_idx, d.labelled, d.pool):
        assert not people(part) & test_people
    cache, frames = load_frames(cfg, LocalAccelerator())
    pre = {cache.persons[i] for i in frames}
    assert pre and not pre & test_people and not pre & people(d.val_idx)  # validation fold excluded by default
    # volumes: one frame per slice, each volume once, for 2D (slices=1) as for 2.5D
    assert all(f["kind"] == "volume" for f in cache.frames)
    assert len({(f["image"], f["slice"]) for f in cache.frames}) == len(cache.frames)
    cfg_all = config.load(PretrainConfig, ARGS + [f"data.slices={slices}", "include_val=true"])
    cache, frames = load_frames(cfg_all, LocalAccelerator())
    assert people(d.val_idx) <= {cache.persons[i] for i in frames}


def test_probe_works_for_2p5d(tmp_path, monkeypatch):
    """The probe used to build a 1-channel cache for a 3-channel encoder and crash."""
    monkeypatch.setenv("BONEKIT_CACHE", str(tmp_path / "cache"))
    from bonekit.models import make_encoder
    from selfsup.pretrain import PretrainConfig, make_probe

    cfg = config.load(PretrainConfig, ARGS + ["data.slices=3", "probe.every=1", "probe.images=2", "probe.steps=2"])
    acc = LocalAccelerator()
    acc.device = __import__("torch").device("cpu")
    dice = make_probe(cfg, acc)(make_encoder("resnet18", 3))
    assert 0.0 <= dice <= 1.0 and np.isfinite(dice)


def test_label_unit_volume_labels_whole_volumes(tmp_path, monkeypatch):
    """With labels.unit=volume, every volume is wholly labelled or wholly in the pool; the default labels single
    slices of (nearly) every training volume; an unknown unit is refused."""
    monkeypatch.setenv("BONEKIT_CACHE", str(tmp_path / "cache"))
    from bonekit.config import DataConfig
    from bonekit.errors import ConfigError

    data = config.load(DataConfig, [a.removeprefix("data.") for a in ARGS] + ["slices=3"])
    vol = setup(data, LocalAccelerator(), {"fraction": 0.3, "seed": 1, "unit": "volume"}, 24, with_val=False)
    image = lambda idx: {vol.cache.frames[i]["image"] for i in idx}
    assert image(vol.labelled) and not image(vol.labelled) & image(vol.pool)
    n_train = len(image(vol.train_idx))
    assert len(image(vol.labelled)) == int(np.ceil(0.3 * n_train))
    per_frame = setup(data, LocalAccelerator(), {"fraction": 0.3, "seed": 1}, 24, with_val=False)
    assert image(per_frame.labelled) & image(per_frame.pool)  # slices of one volume on both sides
    with pytest.raises(ConfigError, match="labels.unit"):
        setup(data, LocalAccelerator(), {"fraction": 0.3, "seed": 1, "unit": "person"}, 24, with_val=False)
