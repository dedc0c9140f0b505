"""cosup: tiny experts -> label -> distill through accelerate; ownership, ignore masks, KD, PGR, shard
assignment stability, resume across rounds."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from bonekit.losses import confidence, kd_binary
from bonekit.metrics import pgr
from cosup import partition as P
from cosup.teachers import Teachers
from conftest import TINY, launch

ARGS = TINY + ["data.folds=2", "loop.batch_size=2", "loop.workers=0", "loop.val_batch_size=2", "loop.log_every=1",
               "labels.fraction=0.5"]


@pytest.fixture(scope="module")
def experts(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cosup")
    cache = tmp / "cache"
    cache.mkdir()
    launch("cosup/experts.py", ARGS + ["loop.steps=2", "partition.crop_groups=[carpals]", f"run_dir={tmp / 'experts'}"],
           cache)
    return tmp, cache


def test_experts_own_their_bones(experts):
    tmp, _ = experts
    m = json.loads((tmp / "experts" / "experts.json").read_text())
    assert [e["name"] for e in m["experts"]] == ["fingers", "carpals-crop", "forearm"]
    crop = m["experts"][1]["crop"]
    assert crop["coarse"].endswith("carpals/best.safetensors") and crop["size"] == 64
    from bonekit.models import read_model_meta

    for e in m["experts"]:
        assert read_model_meta(e["checkpoint"])["classes"] == e["classes"]  # predicts only what it owns
    assert not set(m["labelled"]) & set(m["pool"]) and not set(m["train"]) & set(m["val"])


def test_label_then_distill_with_resume_across_rounds(experts):
    tmp, cache = experts
    out = launch("cosup/label.py", [f"experts={tmp / 'experts'}"], cache)
    assert "targets for" in out
    t = tmp / "experts" / "targets"
    assert (t / "targets.u8").stat().st_size > 0 and np.load(t / "keep.npy").all()  # no student: keep all
    common = ["data.phantom.people=4", "data.phantom.test_people=1", "data.phantom.size=96", "data.workers=1",
              "loop.batch_size=2", "loop.workers=0", "loop.val_batch_size=2", f"experts={tmp / 'experts'}",
              "rounds=2", "loop.steps=2", "loop.save_every=1"]
    launch("finetune/distill.py", common + [f"run_dir={tmp / 'full'}"], cache)
    launch("finetune/distill.py", common + [f"run_dir={tmp / 'split'}", "loop.stop_at_step=1"], cache)
    # The first run stopped after one step of round 0; the resumed run finishes round 0, then runs round 1.
    out = launch("finetune/distill.py", common + [f"run_dir={tmp / 'split'}", "resume=auto"], cache)
    assert "resumed from" in out and "round 1:" in out
    a = load_file(str(tmp / "full" / "round1" / "last.safetensors"))
    b = load_file(str(tmp / "split" / "round1" / "last.safetensors"))
    for k in a:
        assert torch.equal(a[k], b[k]), k
    keep = np.load(tmp / "full" / "round1" / "targets" / "keep.npy")
    assert keep.mean() < 1.0  # round 1 had a student: denoising ignored some (image, bone) targets
    report = (tmp / "full" / "report.md").read_text()
    assert "| teacher |" in report and "| student |" in report and "expert:carpals-crop" in report


class Const(nn.Module):
    def __init__(self, k, v):
        super().__init__()
        self.k, self.v = k, v

    def forward(self, x):
        return torch.full((x.shape[0], self.k, *x.shape[-2:]), float(self.v))


def test_no_expert_supervises_a_bone_it_does_not_own():
    t = Teachers.__new__(Teachers)
    t.classes, t.partition, t.crops = ["a", "b", "c"], "bones", {}
    t.experts = [(Const(2, 3.0), [0, 2], None), (Const(1, -3.0), [1], None)]
    p = t.predict(torch.zeros(1, 1, 4, 4))
    assert torch.allclose(p[0, 0], torch.sigmoid(torch.tensor(3.0))) and torch.allclose(p[0, 2], p[0, 0])
    assert torch.allclose(p[0, 1], torch.sigmoid(torch.tensor(-3.0)))
    t.partition = "shards"
    t.experts = [(Const(3, 2.0), [0, 1, 2], 0), (Const(3, -2.0), [0, 1, 2], 1)]
    p = t.predict(torch.zeros(2, 1, 4, 4), shards=[1, 0])
    assert p[0].max() < 0.5 < p[1].min()  # each image from the expert of its shard only


def test_ignore_masks_zero_the_kd_loss():
    torch.manual_seed(0)
    s = torch.randn(2, 3, 8, 8)
    q = torch.rand(2, 3, 8, 8)
    ignore = torch.zeros(2, 3, 8, 8, dtype=torch.bool)
    ignore[:, 1] = True
    q2 = q.clone()
    q2[:, 1] = 1 - q2[:, 1]
    assert torch.allclose(kd_binary(s, q, 2.0, ignore), kd_binary(s, q2, 2.0, ignore))
    assert torch.allclose(confidence(s, q, 0.3, ignore), confidence(s, q2, 0.3, ignore))
    assert kd_binary(s, q, 1.0, torch.ones_like(ignore)) == 0


def test_pgr_arithmetic():
    out = pgr([0.8, 0.6, 0.5], [0.6, 0.6, 0.5], [0.9, 0.9, 0.5])
    assert np.allclose(out[:2], [2 / 3, 0.0]) and np.isnan(out[2])


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


def test_pool_images_never_carry_ground_truth(tmp_path):
    """The cache holds labels for every training image: distillation must hide the pool's."""
    from bonekit import cache as C
    from bonekit.classes import HAND29
    from bonekit.formats import discover
    from conftest import make_competition
    from finetune.distill import DistillFrames

    c = C.build(discover(make_competition(tmp_path / "train", people=2, size=32)), 16, HAND29, tmp_path / "c",
                workers=1, progress=False)
    targets = np.full((2, 29, 16, 16), 200, np.uint8)
    ds = DistillFrames(c, [0, 1], [2, 3], targets, np.ones((2, 29), bool), 1)
    items = [ds[i] for i in range(4)]
    assert [it["labelled"] for it in items] == [True, True, False, False]
    assert items[0]["words"].any() and not items[2]["words"].any() and not items[3]["words"].any()
    assert items[2]["teacher"].float().mean() == 200 and not items[0]["teacher"].any()
    # labelled_share: 1 labelled among 3 pool images, repeated to half of the epoch, each repeat its own key.
    ds = DistillFrames(c, [0], [1, 2, 3], np.zeros((3, 29, 16, 16), np.uint8), np.ones((3, 29), bool), 1, 0.5)
    assert len(ds) == 6 and [ds[i]["labelled"] for i in range(6)] == [True] * 3 + [False] * 3
    assert len({ds[i]["index"] for i in range(3)}) == 3
