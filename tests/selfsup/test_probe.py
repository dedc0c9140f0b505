"""The encoder check (selfsup/probe.py): reads bone information from frozen features when they carry it, not when
they do not; keeps people apart; never moves a run's random state. Its ranking of real encoders at the benchmark's
scale (which needs encoders trained for minutes, not seconds) is measured in docs/results.md
(``bench/encoder_check.py``)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from bonekit.config import DataConfig
from bonekit.maskbits import unpack
from bonekit.models import make_encoder
from selfsup.probe import check_images, probe, split_people


def test_split_people_keeps_each_person_on_one_side():
    persons = ["a", "a", "b", "b", "c", "c", "d", "d", "e"]
    train, test = split_people(persons, 3)
    assert len(train) == 3 and len(test) == 3
    assert not {persons[i] for i in train} & {persons[i] for i in test}
    assert split_people(["a", "a"], 2)[1] == []  # one person: nothing to score on


def _data(tmp_path, people=6, size=96, resolution=64, variation="classic"):
    return OmegaConf.merge(OmegaConf.structured(DataConfig), {
        "phantom": {"people": people, "test_people": 1, "size": size, "variation": variation},
        "resolution": resolution, "workers": 1, "cache_dir": str(tmp_path / "cache")})


def _batch(cache, frames, k):
    x = torch.from_numpy(np.stack([cache.stack(f, 0) for f in frames])).float().div(255)
    y = unpack(torch.from_numpy(np.stack([cache.masks[f] for f in frames])), k).float()
    return x, y


class LabelEncoder(torch.nn.Module):
    """An "encoder" whose pyramid is the bone masks of the image it is given, pooled to strides 2..32: features
    that carry everything the check could want."""

    def __init__(self, x, y):
        super().__init__()
        self.table = {img.numpy().tobytes(): m for img, m in zip(x, y)}

    def forward(self, x):
        m = torch.stack([self.table[img.numpy().tobytes()] for img in x])
        return [x] + [F.avg_pool2d(m, s) for s in (2, 4, 8, 16, 32)]


def test_check_reads_bones_from_features_that_carry_them(tmp_path):
    data = _data(tmp_path)
    cache, train, test = check_images(data, 4)
    k = len(data.classes)
    x, y = _batch(cache, train + test, k)
    informed = probe(LabelEncoder(x, y), cache, train, test, k, torch.device("cpu"), steps=150)
    enc = make_encoder("resnet18", 1)
    rng_before = torch.random.get_rng_state()
    random = probe(enc, cache, train, test, k, torch.device("cpu"), steps=150)
    assert torch.equal(rng_before, torch.random.get_rng_state())  # the check never moves a run's random state
    assert enc.training  # and leaves the encoder's mode as it was
    assert probe(enc, cache, train, test, k, torch.device("cpu"), steps=150) == random  # no wobble
    print(f"check: label features {informed:.4f}, random encoder {random:.4f}")
    # At 64 px a finger bone is under one stride-4 cell, so even perfect features stop near 0.2 here.
    assert informed > 0.15 and random < 0.05, (informed, random)
