"""cosup: tiny experts through accelerate (the ``experts`` fixture of conftest); ownership, shard assignment
stability, crop boxes. Distillation's tests are in tests/finetune/test_distill.py."""

import json

import numpy as np
import pytest
import torch
from conftest import ConstModel

from cosup import partition as P
from cosup.teachers import Teachers


def test_experts_own_their_bones(experts):
    tmp, _ = experts
    m = json.loads((tmp / "experts" / "experts.json").read_text())
    assert [e["name"] for e in m["experts"]] == ["fingers", "carpals-crop", "forearm"]
    crop = m["experts"][1]["crop"]
    # the last weights, never the best on the validation fold (the fold that every report scores)
    assert crop["coarse"].endswith("carpals/last.safetensors") and crop["size"] == 64
    from bonekit.models import read_model_meta

    for e in m["experts"]:
        assert read_model_meta(e["checkpoint"])["classes"] == e["classes"]  # predicts only what it owns
    assert not set(m["labelled"]) & set(m["pool"]) and not set(m["train"]) & set(m["val"])


def test_no_expert_supervises_a_bone_it_does_not_own():
    t = Teachers.__new__(Teachers)
    t.classes, t.partition, t.crops, t.fallback = ["a", "b", "c"], "bones", {}, None
    t.experts = [(ConstModel(2, 3.0), [0, 2], None), (ConstModel(1, -3.0), [1], None)]
    p = t.predict(torch.zeros(1, 1, 4, 4))
    assert torch.allclose(p[0, 0], torch.sigmoid(torch.tensor(3.0))) and torch.allclose(p[0, 2], p[0, 0])
    assert torch.allclose(p[0, 1], torch.sigmoid(torch.tensor(-3.0)))
    t.partition = "shards"
    t.experts = [(ConstModel(3, 2.0), [0, 1, 2], 0), (ConstModel(3, -2.0), [0, 1, 2], 1)]
    p = t.predict(torch.zeros(2, 1, 4, 4), shards=[1, 0])
    assert p[0].max() < 0.5 < p[1].min()  # each image from the expert of its shard only


def test_shard_assignment_is_stable_for_a_fixed_student():
    torch.manual_seed(0)
    from bonekit.models import make_encoder

    enc = make_encoder("resnet18", 1)
    frames = torch.randint(0, 255, (10, 1, 64, 64), dtype=torch.uint8)
    z1 = P.embed(enc, frames, torch.device("cpu"))
    z2 = P.embed(enc, frames.flip(0), torch.device("cpu"))[::-1]
    ids, _ = P.kmeans(z1, 2, seed=0)
    c = P.centroids(z1, ids, 2)
    a1, a2 = P.assign(z1, c), P.assign(np.ascontiguousarray(z2), c)
    assert (a1 == a2).all()  # same student, same images -> same teachers, in any order
    assert (P.assign(z1, c) == ids).mean() >= 0.8
    h = P.hierarchical(z1, 2, seed=0)
    assert set(h.tolist()) <= {0, 1, 2, 3}
    with pytest.raises(ValueError, match="owned by no expert"):
        P.bone_groups({"x": ["a"]}, ["a", "b"])


def test_crop_box_cut_and_paste():
    from cosup.crops import cut, paste, square_box

    m = torch.zeros(40, 40, dtype=torch.bool)
    m[10:20, 12:18] = True
    top, left, size = square_box(m, margin=0.0)
    assert abs(size - 10 / 40) < 1e-6 and abs(top - 10 / 40) < 1e-6  # square on the longer side
    img = torch.zeros(1, 80, 80)
    img[0, 20:40, 24:36] = 1.0  # the same region at twice the resolution
    patch = cut(img, (top, left, size), 16)
    assert patch.shape == (1, 16, 16) and patch.mean() > 0.4
    back = paste(patch, (top, left, size), 40)
    assert back.shape == (1, 40, 40) and back[0, :10].sum() == 0 and back[0, 12:18, 14:16].min() > 0.5
    assert square_box(torch.zeros(5, 5, dtype=torch.bool), 0.1) is None


class _Coarse(torch.nn.Module):
    """Finds its bone in the centre of every image."""

    def forward(self, x):
        out = torch.full((x.shape[0], 1, *x.shape[-2:]), -10.0)
        h = x.shape[-1]
        out[:, :, h // 4 : 3 * h // 4, h // 4 : 3 * h // 4] = 10.0
        return out


class _Bright(torch.nn.Module):
    """A 'crop expert' whose probability is its input's brightness."""

    def forward(self, x):
        return 20 * (x[:, :1] - 0.5)


class _Source:
    """A higher-resolution cache stand-in: frame f is bright everywhere."""

    def stack(self, f, k=0):
        return np.full((2 * k + 1, 64, 64), 255, np.uint8)


def test_crop_expert_is_scored_on_its_own_source():
    """The validation loop passes frame numbers to a crop expert, which cuts from its higher-resolution source;
    it used to cut from the low-resolution input (here dark) and be scored on a different teacher."""
    from torch.utils.data import DataLoader

    from bonekit.accel import make_accelerator
    from bonekit.loop import validate
    from bonekit.maskbits import pack
    from cosup.crops import CropModule

    x = torch.zeros(2, 1, 16, 16)
    m = CropModule(_Coarse(), _Bright(), 8, 0.0, _Source())
    inside = (slice(None), 0, slice(6, 10), slice(6, 10))
    assert (torch.sigmoid(m(x, frames=[0, 1]))[inside] > 0.99).all()  # cut from the bright source
    assert (torch.sigmoid(CropModule(_Coarse(), _Bright(), 8, 0.0)(x))[inside] < 0.01).all()  # the old input
    label = np.zeros((1, 16, 16), bool)
    label[0, 4:12, 4:12] = True
    items = [{"image": torch.zeros(1, 16, 16, dtype=torch.uint8), "words": torch.from_numpy(pack(label)), "index": i}
             for i in range(2)]
    dice = validate(make_accelerator("no"), m, DataLoader(items, batch_size=2), 1, [0])
    assert dice.min() > 0.99  # scored with the source; from the dark input it would be 0
