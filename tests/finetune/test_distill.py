"""finetune/distill.py: label -> distill through accelerate with resume across rounds, ignore masks in the KD
losses, PGR arithmetic, the pool's ground truth hidden from the student."""

import csv

import numpy as np
import pytest
import torch
from conftest import COSUP_ARGS, launch
from safetensors.torch import load_file

from bonekit.errors import ConfigError
from bonekit.losses import confidence, kd_binary, segmentation_loss
from bonekit.metrics import pgr
from bonekit.seg_augment import SegAugConfig
from cosup.targets import agreement, select_targets
from finetune.distill_task import DistillTask, KDConfig, pool_ignore


def test_label_then_distill_with_resume_across_rounds(experts):
    tmp, cache = experts
    out = launch("cosup/label.py", [f"experts={tmp / 'experts'}"], cache)
    assert "targets for" in out
    t = tmp / "experts" / "targets"
    targets = np.memmap(t / "targets.f16", dtype=np.float16, mode="r").reshape(np.load(t / "keep.npy").shape + (-1,))
    empty = targets.max(-1) < 0.5
    # no student: every target is kept except empty channels (a teacher miss, not "no bone")
    assert (np.load(t / "keep.npy") == ~empty).all()
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
    from conftest import make_competition

    from bonekit import cache as C
    from bonekit.classes import HAND29
    from bonekit.formats import discover
    from finetune.distill_task import DistillFrames

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


def test_confidence_loss_lifts_a_teacher_positive_pixel():
    """The bistable pixel: teacher p = 0.6 on 1% of the pixels, an under-confident student at p = 0.4 there. The
    fixed 0.5 threshold hardened it to 0 and pushed it down; the teacher-rate threshold lifts it."""
    t = torch.zeros(1, 1, 10, 10)
    t[0, 0, 0, 0] = 0.6
    s = torch.full((1, 1, 10, 10), float(torch.logit(torch.tensor(0.01))))
    s[0, 0, 0, 0] = float(torch.logit(torch.tensor(0.4)))
    s.requires_grad_(True)
    confidence(s, t, 0.5).backward()
    assert s.grad[0, 0, 0, 0] < 0  # gradient descent raises the logit


def _task(**kd):
    return DistillTask(2, SegAugConfig(), ["a", "b"], KDConfig(**kd), "bce_dice", 100)


def test_empty_teacher_channel_teaches_nothing():
    teacher = torch.zeros(1, 2, 8, 8)
    teacher[0, 0, 2:5, 2:5] = 0.9  # channel 0 found its bone; channel 1 found nothing
    ig = pool_ignore(teacher, torch.ones(1, 2, dtype=torch.bool), KDConfig())
    assert not ig[0, 0].all() and ig[0, 1].all()
    logits = torch.randn(1, 2, 8, 8, requires_grad=True)
    _task().loss(logits, {"y": teacher, "ignore": ig, "labelled": torch.tensor([False])}, 50).backward()
    assert logits.grad[0, 1].abs().max() == 0 and logits.grad[0, 0].abs().max() > 0
    # the old behaviour (empty channel taught as "no bone") is still reachable, and does push channel 1
    logits.grad = None
    ig0 = pool_ignore(teacher, torch.ones(1, 2, dtype=torch.bool), KDConfig(ignore_empty=False))
    _task(ignore_empty=False).loss(logits, {"y": teacher, "ignore": ig0, "labelled": torch.tensor([False])},
                                   50).backward()
    assert logits.grad[0, 1].abs().max() > 0


def test_pixel_confidence_mask_and_rampup():
    teacher = torch.tensor([0.05, 0.5, 0.95]).view(1, 1, 1, 3).expand(1, 1, 3, 3).contiguous()
    ig = pool_ignore(teacher, torch.ones(1, 1, dtype=torch.bool), KDConfig(pixel_threshold=0.9))
    assert ig[0, 0, 0].tolist() == [False, True, False]
    from finetune.distill_task import sigmoid_ramp

    assert sigmoid_ramp(0, 100, 0.5) < 0.01 and sigmoid_ramp(50, 100, 0.5) == 1.0 and sigmoid_ramp(0, 100, 0) == 1.0


def test_denoiser_drops_a_joint_miss():
    """Agreement used to score 1.0 when student and teacher were both empty, ranking joint misses first."""
    empty = torch.zeros(1, 1, 8, 8)
    s = torch.full((1, 1, 8, 8), -5.0)
    assert agreement(s, empty).item() == 0.0
    t = torch.zeros(3, 1, 8, 8)
    t[0, 0, :4] = 0.9  # image 0: teacher and student agree on a bone
    t[1, 0, 4:] = 0.9  # image 1: the teacher marks a bone where the student sees none
    st = torch.full((3, 1, 8, 8), -5.0)
    st[0, 0, :4] = 5.0
    from cosup.targets import plausibility_loss

    keep = select_targets(plausibility_loss(st, t).numpy(), agreement(st, t).numpy(),
                          (t.amax((2, 3)) < 0.5).numpy(), min_keep=0.5)
    assert keep[:, 0].tolist() == [True, False, False]  # image 2 (the joint miss) is never kept


def test_float16_targets_keep_small_probabilities():
    """uint8 codes turned a tempered teacher's small probabilities into a staircase (T=2: 0, 1/255, 2/255 ->
    0.001, 0.059, 0.082); float16 keeps them."""
    p = torch.tensor([1e-4, 1e-3, 2e-3, 4e-3])
    stored = p.half().float()
    tempered = torch.sigmoid(torch.logit(stored) / 2)
    exact = torch.sigmoid(torch.logit(p) / 2)
    assert torch.allclose(tempered, exact, rtol=1e-2) and (tempered.diff() > 0).all()


def test_labelled_share_of_one_is_a_clear_error():
    with pytest.raises(ConfigError, match="labelled_share"):
        _task(labelled_share=1.0)


def test_pooloff_trains_labelled_images_at_full_weight():
    """With no pool loss, a mixed batch gives the labelled samples exactly the supervised loss (it used to be
    scaled by their share of the batch, halving the learning rate of the supervised part)."""
    torch.manual_seed(0)
    logits = torch.randn(4, 2, 8, 8)
    y = (torch.rand(4, 2, 8, 8) > 0.7).float()
    lab = torch.tensor([True, True, False, False])
    got = _task(weight_kd=0.0).loss(logits, {"y": y, "ignore": torch.zeros_like(y, dtype=torch.bool),
                                             "labelled": lab}, 10)
    want = segmentation_loss("bce_dice")(logits[lab], y[lab])
    assert torch.allclose(got, want)


def test_bcp_swaps_a_box_both_ways_and_each_pixel_keeps_its_teacher():
    """Bidirectional copy-paste: the labelled image gets a pool box and the pool image a labelled box; targets,
    ignore masks and the ground-truth map move with their pixels."""
    from finetune.distill_task import bcp_mix

    x = torch.stack([torch.ones(1, 12, 12), torch.zeros(1, 12, 12)])  # sample 0 labelled (ones), 1 pool (zeros)
    y = torch.stack([torch.full((2, 12, 12), 1.0), torch.full((2, 12, 12), 0.3)])
    ig = torch.zeros(2, 2, 12, 12, dtype=torch.bool)
    ig[1, 1] = True  # the pool image's channel 1 is ignored (e.g. an empty teacher channel)
    lab = torch.tensor([True, False])
    xm, ym, igm, gt = bcp_mix(x, y, ig, lab, [(0, 1), (0, 2)], 0.5)
    box = gt[0, 0] == 0  # where sample 0 now shows the pool image
    assert box.sum() == 36 and (gt[1, 0] == box).all()  # one 6x6 box, swapped both ways
    assert (xm[0, 0][box] == 0).all() and (xm[0, 0][~box] == 1).all() and (xm[1, 0][box] == 1).all()
    assert (ym[0][:, box] == 0.3).all() and (ym[1][:, box] == 1.0).all() and (ym[1][:, ~box] == 0.3).all()
    assert igm[0, 1][box].all() and not igm[0, 1][~box].any() and not igm[1, 1][box].any()
    assert xm.sum() == x.sum()  # nothing lost, nothing duplicated


def test_bcp_loss_teaches_ground_truth_pixels_by_the_labels_and_pasted_pool_pixels_by_the_teacher():
    from finetune.distill_task import bcp_mix

    torch.manual_seed(0)
    x = torch.rand(2, 1, 8, 8)
    y = torch.stack([(torch.rand(2, 8, 8) > 0.5).float(), torch.full((2, 8, 8), 0.9)])
    lab = torch.tensor([True, False])
    x, y, ig, gt = bcp_mix(x, y, torch.zeros(2, 2, 8, 8, dtype=torch.bool), lab, [(1,), (2,)], 0.5)
    t = {"y": y, "ignore": ig, "labelled": lab, "gt": gt}
    for kd, where in ((dict(weight_kd=0.0), gt), (dict(weight_gt=0.0), ~gt)):
        logits = torch.randn(2, 2, 8, 8, requires_grad=True)
        _task(**kd).loss(logits, t, 50).backward()
        g = logits.grad.abs().sum(1, keepdim=True)
        assert (g[~where] == 0).all() and (g[where] > 0).all(), kd


def test_separate_bn_keeps_pool_images_out_of_the_labelled_normalisation():
    """Defect 7: pool images in the same forward pass shift the batch-norm statistics the labelled images are
    normalised with (measured: the pooloff control fell from 0.42 to 0.31 Dice; 0.44 with separate passes)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4),
                                torch.nn.Conv2d(4, 2, 1)).train()
    lab = torch.tensor([True, True, False, False])
    x = torch.rand(4, 1, 8, 8)
    x2 = x.clone()
    x2[~lab] = torch.rand(2, 1, 8, 8) * 5  # other pool images
    t = {"labelled": lab}
    for separate, same in ((True, True), (False, False)):
        task = _task(separate_bn=separate)
        a, b = task.forward(model, x, t), task.forward(model, x2, t)
        assert torch.allclose(a[lab], b[lab]) is same, separate


def test_distill_runs_in_two_processes(experts):
    """torchrun, 2 processes, with the crop experts' targets: the pooloff control (a process may hold only pool
    images: no loss term, yet it must join the gradient all-reduce) and BCP + EMA + separate batch-norm passes
    (two forward passes per step under DDP). The report, main process only, makes no collective call."""
    tmp, cache = experts
    common = COSUP_ARGS + ["loop.batch_size=4", "loop.steps=2"]
    for name, extra in [("pooloff", ["kd.weight_kd=0"]), ("bcp", ["kd.ema=0.99", "kd.bcp=true", "kd.strong=true", "kd.fp=0.5"]),
                        ("experts", [f"experts={tmp / 'experts'}"])]:
        launch("finetune/distill.py", common + extra + [f"run_dir={tmp / ('ddp_' + name)}"], cache, nproc=2)
        assert "| finger-1 |" in (tmp / f"ddp_{name}" / "report.md").read_text(), name
        with open(tmp / f"ddp_{name}" / "round0" / "metrics.csv") as f:
            losses = [float(r["loss"]) for r in csv.DictReader(f) if r.get("loss")]
        assert losses and np.isfinite(losses).all(), name


def test_hard_targets_binarise_the_pool_and_mask_on_the_soft_probabilities():
    """``kd.hard``: pool targets become 0/1 at 0.5 (BCP's pseudo-labels); labelled images keep their ground truth,
    and the confidence mask still sees the teacher's soft probabilities (a 0.55 is unsure, not a sure 1)."""
    from bonekit.maskbits import pack

    gt = np.zeros((2, 8, 8), bool)
    gt[0, 1:4, 1:4] = True
    teacher = torch.zeros(2, 2, 8, 8, dtype=torch.float16)
    teacher[1, 0, :, :4], teacher[1, 0, :, 4:] = 0.55, 0.2  # the pool image: bone 0 leans "yes" on the left
    teacher[1, 1] = 0.97
    batch = {"image": torch.full((2, 1, 8, 8), 100, dtype=torch.uint8), "labelled": torch.tensor([True, False]),
             "words": torch.from_numpy(np.stack([pack(gt), pack(np.zeros_like(gt))])),
             "teacher": teacher, "keep": torch.ones(2, 2, dtype=torch.bool)}
    still = SegAugConfig(flip=0, rotation=0, scale=0, shift=0, gamma=0, contrast=0, blur_p=0, noise=0)
    for hard in (False, True):
        task = DistillTask(2, still, ["a", "b"], KDConfig(hard=hard, pixel_threshold=0.9), "bce_dice", 100)
        _, t = task.inputs(batch, [(0,), (1,)], 0)
        pool = t["y"][1]
        want = torch.tensor([1.0, 0.0, 1.0]) if hard else torch.tensor([0.55, 0.2, 0.97])
        got = torch.stack([pool[0, 0, 0], pool[0, 0, 7], pool[1, 0, 0]])
        assert torch.allclose(got, want, atol=1e-3), (hard, got)
        assert t["y"][0, 0].bool().equal(torch.from_numpy(gt[0])) and t["y"][0, 1].sum() == 0  # ground truth
        assert t["ignore"][1, 0].all() and not t["ignore"][1, 1].any()  # 0.55 and 0.2 unsure, 0.97 sure


def test_feature_perturbation_stream_learns_the_teacher_pixels_only_in_training():
    """kd.fp (UniMatch's FP stream): in training the decoder also runs on dropped-out encoder features, that stream
    gets ``kd.fp`` of the pool loss and no ground-truth term; evaluation and the EMA teacher see one clean stream."""
    from bonekit.models import make_segmenter

    torch.manual_seed(0)
    model = make_segmenter("unet", "resnet18", 1, 2, [16, 16, 8, 8, 8]).train()
    task = _task(fp=1.0, ema=0.99)
    task.attach(model)
    lab = torch.tensor([True, True, False, False])
    x = torch.rand(4, 1, 64, 64)
    y = (torch.rand(4, 2, 64, 64) > 0.5).float()
    y[~lab] = 0.9
    t = {"labelled": lab, "y": y, "ignore": torch.zeros(4, 2, 64, 64, dtype=torch.bool)}
    logits = task.forward(model, x, t)
    assert logits.shape == (4, 2, 64, 64) and t["fp"].shape == logits.shape
    assert not torch.allclose(t["fp"], logits)  # the perturbed stream is another prediction
    assert task.ema(x).shape == (4, 2, 64, 64)  # the teacher has no hook
    # fp=1: the whole pool term comes from the perturbed stream, the ground truth from the clean one
    loss = task.loss(logits, t, 50)
    expect = task.seg(logits[lab], y[lab], None) + task.pool_term(t["fp"][~lab], y[~lab], t["ignore"][~lab], 50)
    assert torch.allclose(loss, expect)
    model.eval()
    t2 = {"labelled": lab}
    with torch.no_grad():
        task.forward(model, x, t2)
    assert "fp" not in t2
    with pytest.raises(ConfigError, match="kd.fp"):
        _task(fp=1.5)


def test_a_resumed_bcp_run_keeps_its_ema_teacher(tmp_path):
    """The EMA teacher is saved with each checkpoint: BCP + feature perturbation stopped after step 2 and resumed
    ends with the weights of the unbroken run (rebuilt from the student on resume, as before, it labelled the
    pool differently and the weights differed)."""
    cache = tmp_path / "cache"
    cache.mkdir()
    common = COSUP_ARGS + ["kd.ema=0.99", "kd.bcp=true", "kd.fp=0.5", "loop.steps=3", "loop.save_every=1"]
    launch("finetune/distill.py", common + [f"run_dir={tmp_path / 'full'}"], cache)
    launch("finetune/distill.py", common + [f"run_dir={tmp_path / 'split'}", "loop.stop_at_step=2"], cache)
    out = launch("finetune/distill.py", common + [f"run_dir={tmp_path / 'split'}", "resume=auto"], cache)
    assert "resumed from" in out and "holds no EMA teacher" not in out
    a = load_file(str(tmp_path / "full" / "round0" / "last.safetensors"))
    b = load_file(str(tmp_path / "split" / "round0" / "last.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_flip_averaged_teacher_targets_are_mirror_equivariant():
    """kd.teacher_flip: the EMA teacher's pool target is the mean of its reading of the view and of the mirrored view
    (mapped back), so the target of a mirrored image is the mirror of the target — which a single reading of a
    (non-symmetric) network is not. Without an EMA teacher the key has nothing to act on: a ConfigError."""
    from bonekit.models import make_segmenter

    torch.manual_seed(0)
    model = make_segmenter("unet", "resnet18", 1, 2, [16, 16, 8, 8, 8]).eval()
    x = torch.rand(2, 1, 64, 64)
    plain, flip = _task(ema=0.99), _task(ema=0.99, teacher_flip=True)
    plain.attach(model)
    flip.attach(model)
    single = plain.teacher_probs(x)
    assert torch.allclose(single, torch.sigmoid(model(x)))
    assert not torch.allclose(plain.teacher_probs(x.flip(-1)), single.flip(-1), atol=1e-4)
    both = flip.teacher_probs(x)
    assert torch.allclose(both, 0.5 * (single + torch.sigmoid(model(x.flip(-1))).flip(-1)), atol=1e-6)
    assert torch.allclose(flip.teacher_probs(x.flip(-1)), both.flip(-1), atol=1e-5)
    with pytest.raises(ConfigError, match="kd.teacher_flip"):
        _task(teacher_flip=True)


def test_experts_under_a_mean_teacher_blend_in_and_fade_out(experts):
    """kd.expert_blend: the pool target is share b of the experts' stored target and 1 - b of the EMA teacher's,
    b falling linearly from kd.expert_blend at step 0 to 0 at the last step; where denoising dropped a bone's
    expert target the EMA teacher's reading stands alone and the bone keeps a target. Experts with an EMA teacher
    and no blend would leave the experts unused: a ConfigError, as is a blend without an EMA teacher."""
    from finetune.distill import main as distill

    torch.manual_seed(0)
    task = _task(ema=0.99, expert_blend=0.5)  # 100 steps
    stored, online = torch.rand(3, 2, 8, 8), torch.rand(3, 2, 8, 8)
    keep = torch.tensor([[True, True], [True, False], [False, False]])
    y, k = task.blend_experts(stored, online, keep, 0)
    assert torch.allclose(y[0], 0.5 * stored[0] + 0.5 * online[0])
    assert torch.allclose(y[1, 0], 0.5 * stored[1, 0] + 0.5 * online[1, 0]) and torch.equal(y[1, 1], online[1, 1])
    assert torch.equal(y[2], online[2]) and k.all()
    y, _ = task.blend_experts(stored, online, keep, 50)
    assert torch.allclose(y[0], 0.25 * stored[0] + 0.75 * online[0])
    y, k = task.blend_experts(stored, online, keep, 100)
    assert torch.equal(y, online) and torch.equal(k, keep)  # faded out: the plain mean teacher
    with pytest.raises(ConfigError, match="kd.expert_blend"):
        _task(expert_blend=0.5)
    tmp, _ = experts
    with pytest.raises(ConfigError, match="expert_blend"):
        distill([f"experts={tmp / 'experts'}", "kd.ema=0.99", f"run_dir={tmp / 'unused'}"])
