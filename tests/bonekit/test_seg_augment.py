"""bonekit/seg_augment.py: the polarity augmentation (aug.invert_p)."""

import torch

from bonekit.seg_augment import SegAugConfig, _params, augment

STILL = {"flip": 0, "rotation": 0, "scale": 0, "shift": 0, "gamma": 0, "contrast": 0, "blur_p": 0, "noise": 0}


def test_invert_shows_bones_dark_and_leaves_the_masks_alone():
    torch.manual_seed(0)
    x = torch.rand(3, 1, 16, 16)
    y = (torch.rand(3, 2, 16, 16) > 0.5).float()
    keys = [(0, i) for i in range(3)]
    xi, yi, _ = augment(x, y, keys, SegAugConfig(**STILL, invert_p=1.0))
    assert torch.allclose(xi, 1 - x, atol=1e-6) and torch.equal(yi, y)
    x0, _, _ = augment(x, y, keys, SegAugConfig(**STILL))
    assert torch.allclose(x0, x, atol=1e-6)


def test_invert_draws_last_so_every_other_draw_is_unchanged():
    """Runs made before the key existed must augment exactly as they did: the polarity coin is the last draw."""
    keys = [(5, i, r) for i in range(40) for r in range(2)]
    a, b = _params(keys, SegAugConfig()), _params(keys, SegAugConfig(invert_p=0.5))
    assert all(torch.equal(a[k], b[k]) for k in a if k != "invert")
    assert a["invert"].sum() == 0 and 20 < b["invert"].sum() < 60
