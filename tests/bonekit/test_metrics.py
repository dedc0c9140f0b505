import numpy as np
import torch

from bonekit import metrics


def test_counts_match_numpy_reference():
    rng = np.random.default_rng(1)
    pred = rng.random((4, 29, 32, 32)) > 0.6
    gt = rng.random((4, 29, 32, 32)) > 0.5
    gt[0, 3] = False
    pred[0, 3] = False  # both empty -> Dice 1 through eps
    tp, fp, fn = metrics.counts(torch.from_numpy(pred), torch.from_numpy(gt))
    d = metrics.dice_from_counts(tp.double(), fp.double(), fn.double()).numpy()
    ref = metrics.dice_numpy(pred, gt)
    assert np.abs(d - ref).max() < 1e-6
    assert d[0, 3] == 1.0
    per_class, mean = metrics.summarise(d)
    assert np.allclose(per_class, ref.mean(0)) and abs(mean - ref.mean(0).mean()) < 1e-9


def test_logits_upsampled_to_label_resolution_and_threshold_is_strict():
    logits = torch.zeros(1, 2, 4, 4)  # sigmoid = 0.5 exactly: not > 0.5
    gt = torch.zeros(1, 2, 8, 8, dtype=torch.bool)
    tp, fp, fn = metrics.counts_from_logits(logits, gt)
    assert tp.sum() == 0 and fp.sum() == 0
    logits[0, 1] = 5.0
    tp, fp, fn = metrics.counts_from_logits(logits, gt)
    assert fp[0, 1] == 64 and fp[0, 0] == 0


def test_table_and_print_style():
    t = metrics.DiceTable()
    t.add(torch.tensor([[1, 0]]), torch.tensor([[0, 1]]), torch.tensor([[0, 0]]))
    d = t.dice()
    assert d.shape == (1, 2) and abs(d[0, 0] - 1) < 1e-6 and d[0, 1] < 1e-3
    assert metrics.format_per_class(["finger-1", "Ulna"], [0.94312, 0.98444]) == "finger-1 : 0.9431\nUlna : 0.9844"
