"""finetune: entry scripts under accelerate/torchrun on tiny phantom data, resume exactness, evaluate's numbers
against a numpy recomputation, submission CSV round trip, voting, losses, bad inputs."""

import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY, launch, one_vs_two_processes
from safetensors.torch import load_file

from bonekit import rle
from bonekit.classes import HAND29
from bonekit.errors import DataError
from bonekit.formats import competition
from bonekit.losses import bce, channel_wise, kd_binary, segmentation_loss, soft_dice
from bonekit.models import load_model, make_segmenter, save_model
from finetune.infer import Predictor

ARGS = TINY + ["data.folds=2", "loop.batch_size=2", "loop.workers=0", "loop.val_batch_size=2", "model.encoder=resnet18",
               "loop.log_every=1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny training run (4 steps, split and resumed) plus an unbroken reference run."""
    tmp = tmp_path_factory.mktemp("ft")
    cache = tmp / "cache"
    cache.mkdir()
    common = ARGS + ["loop.steps=4", "loop.save_every=2", "loop.eval_every=2"]
    launch("finetune/train.py", common + [f"run_dir={tmp / 'full'}"], cache)
    launch("finetune/train.py", common + [f"run_dir={tmp / 'split'}", "loop.stop_at_step=2"], cache)
    out = launch("finetune/train.py", common + [f"run_dir={tmp / 'split'}", "resume=auto"], cache)
    yield tmp, cache, out
    shutil.rmtree(tmp, ignore_errors=True)  # CI disks are small: a module's runs go when the module is done


def test_train_writes_run_and_prints_per_bone(trained):
    tmp, _, out = trained
    run = tmp / "full"
    for f in ("best.safetensors", "last.safetensors", "metrics.csv", "loss.png", "config.yaml"):
        assert (run / f).is_file(), f
    assert "finger-1 : " in out and "Ulna : " in out and "Best performance at epoch: " in out


def test_resume_gives_the_same_weights(trained):
    tmp, _, out = trained
    assert "resumed from" in out
    a, b = load_file(str(tmp / "full" / "last.safetensors")), load_file(str(tmp / "split" / "last.safetensors"))
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_two_processes_match_one(tmp_path):
    one_vs_two_processes("finetune/train.py", ARGS + ["loop.steps=2", "loop.eval_every=0", "loop.optimizer=sgd",
                                                      "loop.lr=0.01", "aug.noise=0"], tmp_path, "last.safetensors", 1e-4)


def test_evaluate_matches_numpy_and_predict_csv_roundtrip(trained):
    tmp, cache, _ = trained
    ck = tmp / "full" / "best.safetensors"
    ev = tmp / "ev"
    launch("finetune/evaluate.py", [f"checkpoint={ck}", f"out_dir={ev}", "split=test", "worst_k=2"], cache)
    per_image = pd.read_csv(ev / "per_image.csv")
    sub = tmp / "sub.csv"
    launch("finetune/predict.py", [f"checkpoint={ck}", f"output={sub}"], cache)
    df = pd.read_csv(sub)
    assert list(df.columns) == ["image_name", "class", "rle"] and len(df) % 29 == 0
    assert list(df["class"][:29]) == HAND29
    test_dir = next(cache.glob("phantom-*")) / "test"
    recs = competition.scan(test_dir)
    assert list(dict.fromkeys(df["image_name"])) == [r.image.name for r in recs]  # sorted by relative path
    # Recompute Dice with numpy from the CSV (decoded with the reference decoder) and the JSON labels.
    for r in recs:
        h, w = competition.read_image(r.image).shape
        gt = competition.read_mask(r.label, h, w)
        rows = df[df["image_name"] == r.image.name]
        pred = np.stack([rle.decode(v, h, w) for v in rows["rle"]])
        inter = (pred & gt).sum((1, 2))
        ref = (2 * inter + 1e-4) / (pred.sum((1, 2)) + gt.sum((1, 2)) + 1e-4)
        got = per_image[per_image["image"] == r.image.name][HAND29].to_numpy()[0]
        assert np.abs(got - ref).max() < 1e-5, r.image.name
    assert (ev / "per_bone.md").is_file() and len(list((ev / "worst").glob("*.png"))) == 2
    assert (ev / "error_impact.csv").is_file() and (ev / "confusion.csv").is_file()


def test_voting_on_hand_made_masks(tmp_path):
    k = 2
    paths = []
    for i in range(3):
        m = make_segmenter("unet", "resnet18", 1, k)
        paths.append(save_model(tmp_path / f"m{i}.safetensors", m, {"arch": "unet", "encoder": "resnet18",
                                                                  "in_channels": 1, "classes": ["a", "b"]}))
    p = Predictor([str(x) for x in paths], torch.device("cpu"), vote="hard")
    probs = [torch.tensor([[[0.9, 0.2]], [[0.6, 0.1]]]), torch.tensor([[[0.8, 0.6]], [[0.4, 0.1]]]),
             torch.tensor([[[0.1, 0.7]], [[0.4, 0.9]]])]
    assert p.combine(probs).tolist() == [[[True, True]], [[False, False]]]  # >= 2 of 3 votes
    p.min_votes = 1
    assert p.combine(probs).tolist() == [[[True, True]], [[True, True]]]
    s = Predictor([str(x) for x in paths], torch.device("cpu"), weights=[2, 1, 1], vote="soft")
    # weighted means: a: (1.8+.8+.1)/4=.675, (.4+.6+.7)/4=.425; b: (1.2+.4+.4)/4=.5 (not > .5), (.2+.1+.9)/4=.3
    assert s.combine(probs).tolist() == [[[True, False]], [[False, False]]]


def test_bad_checkpoints_are_clear(tmp_path):
    m = make_segmenter("unet", "resnet18", 3, 2)
    p = save_model(tmp_path / "m.safetensors", m, {"arch": "unet", "encoder": "resnet18", "in_channels": 3,
                                                   "classes": ["a", "b"]})
    with pytest.raises(DataError, match="predicts 2 classes"):
        load_model(p, HAND29)
    with pytest.raises(DataError, match="takes 3 input channels, the data gives 1"):
        load_model(p, ["a", "b"], 1)
    with pytest.raises(DataError, match="does not exist"):
        load_model(tmp_path / "nope.safetensors")


def test_losses():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8)
    t = (torch.rand(2, 3, 8, 8) > 0.5).float()
    for name in ("bce_dice", "bce", "dice", "focal", "jaccard", "focal_dice", "bce_batch_dice"):
        assert torch.isfinite(segmentation_loss(name)(logits, t))
    ignore = torch.zeros(2, 3, 8, 8, dtype=torch.bool)
    ignore[0] = True
    # Ignored pixels do not count: changing the target there leaves the loss unchanged.
    t2 = t.clone()
    t2[0] = 1 - t2[0]
    assert torch.allclose(bce(logits, t, ignore), bce(logits, t2, ignore))
    assert torch.allclose(soft_dice(logits, t, ignore), soft_dice(logits, t2, ignore))
    # A bone absent from an image (most classes of most volume slices) gets no Dice term: predicting it there
    # costs only BCE. The old per-pair term charged 1 - 1/(pixels + 1), which taught slices to predict nothing.
    tt = t.clone()
    tt[1, 2] = 0
    lo = logits.clone()
    lo[1, 2] = -20.0
    hi = lo.clone()
    hi[1, 2, :2, :2] = 20.0  # four confident false-positive pixels in the absent pair
    assert torch.allclose(soft_dice(lo, tt), soft_dice(hi, tt))
    assert bce(hi, tt) > bce(lo, tt)
    # where every bone is present (radiographs) the Dice is the plain mean over (sample, class), bit for bit
    p = torch.sigmoid(logits)
    t_full = t.clone()
    t_full[..., 0, 0] = 1.0  # no empty pair
    p_full = (1 - (2 * (p * t_full).sum((2, 3)) + 1) / (p.sum((2, 3)) + t_full.sum((2, 3)) + 1)).mean(0).mean()
    assert torch.equal(soft_dice(logits, t_full), p_full)
    # batch Dice (for volume slices): the same stray pixels on a slice without the bone now cost Dice
    from bonekit.losses import batch_dice

    assert batch_dice(hi, tt) > batch_dice(lo, tt)
    assert batch_dice(lo, torch.zeros_like(tt)).item() == 0.0
    # no scored pair at all: a zero that still carries the graph
    z = soft_dice(logits.clone().requires_grad_(), torch.zeros_like(t))
    assert z.item() == 0.0 and z.requires_grad
    # KD is zero when the student equals the teacher, positive otherwise.
    assert kd_binary(logits, torch.sigmoid(logits)).abs() < 1e-5
    assert kd_binary(logits, torch.sigmoid(logits), temperature=2.0).abs() < 1e-5
    assert kd_binary(logits, torch.sigmoid(-logits)) > 0.1
    assert channel_wise(logits, logits).abs() < 1e-6


def test_two_point_five_d_on_phantom_volumes(tmp_path):
    """A 2.5D student: 3 adjacent CT-like slices as channels, labels per voxel (data.slices=3)."""
    cache = tmp_path / "cache"
    cache.mkdir()
    run = tmp_path / "run"
    out = launch("finetune/train.py", ["data.phantom.people=2", "data.phantom.test_people=0", "data.phantom.size=96",
                                       "data.phantom.volumes=true", "data.slices=3", "data.resolution=32",
                                       "data.folds=2", "data.workers=1", "loop.steps=1", "loop.batch_size=4",
                                       "loop.workers=0", "crop=16", f"run_dir={run}"], cache)
    assert "Best performance at epoch" in out  # trained on 16 px crops, validated with a sliding window
    from bonekit.models import read_model_meta

    assert read_model_meta(run / "best.safetensors")["in_channels"] == 3
    # evaluation names each slice (a volume's file name alone repeats) and writes its overlays as PNG
    ev = tmp_path / "eval"
    launch("finetune/evaluate.py", [f"checkpoint={run / 'best.safetensors'}", f"out_dir={ev}", "split=val",
                                    "worst_k=2"], cache)
    assert len(list((ev / "worst").glob("*_z*.png"))) == 2
    # ... and scores each volume in 3D (counts summed over its slices), one row per volume
    rows = (ev / "per_image.csv").read_text().splitlines()[1:]
    names = [r.split(",")[0] for r in rows]
    assert len(names) == len(set(names)) >= 1 and all(n.endswith(".nii") for n in names)
    # the training curve scores volumes the same way (in 3D), so it agrees with evaluate.py on the same checkpoint
    import csv

    val = [float(r["val_dice"]) for r in csv.DictReader(open(run / "metrics.csv")) if r.get("val_dice")]
    bones = [float(r["dice"]) for r in csv.DictReader(open(ev / "per_bone.csv"))]
    assert val[-1] == pytest.approx(np.mean(bones), abs=2e-4)


def test_volume_dice_sums_counts_over_slices():
    """3D Dice per volume: a bone absent from most slices is not scored 1 for every empty slice."""
    from bonekit.metrics import dice_from_counts, volume_dice

    c = np.zeros((4, 3, 2))
    c[0, :, 0] = [10, 0, 0]  # volume a, slice 0: bone 0 found exactly
    c[1, :, 0] = [0, 5, 0]  # volume a, slice 1: 5 stray pixels where bone 0 is absent
    c[2, :, 1] = [3, 1, 1]  # volume b
    dice, names = volume_dice(c, ["a", "a", "b", "b"])
    assert names == ["a", "b"] and dice.shape == (2, 2)
    assert dice[0, 0] == pytest.approx(dice_from_counts(10, 5, 0))  # 20/25, where the slice mean was (1 + 0) / 2
    assert dice[0, 1] == pytest.approx(1.0) and dice[1, 1] == pytest.approx(6 / 8, abs=1e-4)


def test_sliding_window_equals_whole_image_for_a_pointwise_model():
    from bonekit.tiles import random_crop, sliding_window

    conv = torch.nn.Conv2d(1, 3, 1)
    x = torch.rand(2, 1, 50, 70)
    assert torch.allclose(sliding_window(conv, x, 32, 0.25), conv(x), atol=1e-5)  # tiles stitch back exactly
    y = torch.rand(2, 3, 50, 70)
    cx, cy, _ = random_crop(x, y, [(0, 0, 1), (0, 0, 2)], 16)
    assert cx.shape == (2, 1, 16, 16) and cy.shape == (2, 3, 16, 16)
    cx2, _, _ = random_crop(x, y, [(0, 0, 1), (0, 0, 2)], 16)
    assert torch.equal(cx, cx2)  # keyed: the same window again
