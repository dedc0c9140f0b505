"""finetune/distill.py: label -> distill through accelerate with resume across rounds, ignore masks in the KD
losses, PGR arithmetic, the pool's ground truth hidden from the student."""

import numpy as np
import torch
from safetensors.torch import load_file

from bonekit.losses import confidence, kd_binary
from bonekit.metrics import pgr
from conftest import launch


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
