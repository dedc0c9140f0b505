"""The supervised task: ground-truth masks (unpacked on the device), segmentation augmentation, a segmentation
loss. Fine-tuning uses every output class; experts (cosup) use a subset of output channels."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

from bonekit.losses import segmentation_loss
from bonekit.maskbits import unpack
from bonekit.seg_augment import SegAugConfig, augment, paste_indices
from bonekit.tiles import random_crop


def clahe(x: torch.Tensor, keys, p: float) -> torch.Tensor:
    """CLAHE on the samples drawn for it (OpenCV on the CPU; uint8 ``[B, C, H, W]``)."""
    if p <= 0:
        return x
    pick = [np.random.default_rng(np.random.SeedSequence([*k, 77])).random() < p for k in keys]
    if not any(pick):
        return x
    out = x.cpu().numpy().copy()
    op = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
    for i, on in enumerate(pick):
        if on:
            for c in range(out.shape[1]):
                out[i, c] = op.apply(out[i, c])
    return torch.from_numpy(out).to(x.device)


class SupervisedTask:
    """Targets: the ground truth of ``out_classes``. Loss: ``loss`` (bce_dice default), per-class weights.

    ``aug`` is a :class:`SegAugConfig` instance (``OmegaConf.to_object(cfg.aug)``: plain attributes, read per
    sample); ``classes`` names the data's classes so copy-paste can find its bones among ``out_classes``.
    """

    def __init__(self, n_classes: int, out_classes: list[int], aug: SegAugConfig, classes: Sequence[str],
                 loss: str = "bce_dice", class_weights: list[float] | None = None, crop: int = 0):
        self.n_classes = n_classes
        self.out_classes = out_classes
        self.aug = aug
        # copy-paste works on the output channels: the pasted bones' positions among out_classes
        self.paste = paste_indices(aug, [classes[i] for i in out_classes])
        self.loss_fn = segmentation_loss(loss)
        self.weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.crop = crop  # train on random crops of this size (0: the whole image)

    def inputs(self, batch, keys, step):
        """-> (``x [B, C, R, R]`` float in [0, 1], ``{"mask": [B, K_out, R, R] float}``), both augmented."""
        img = clahe(batch["image"], keys, self.aug.clahe_p)
        x = img.float().div_(255)
        y = unpack(batch["words"], self.n_classes)[:, self.out_classes].to(x.device).float()
        x, y, _ = augment(x, y, keys, self.aug, paste=self.paste)
        x, y, _ = random_crop(x, y, keys, self.crop)
        return x, {"mask": y}

    def loss(self, logits, targets, step):
        w = self.weight.to(logits.device) if self.weight is not None else None
        return self.loss_fn(logits, targets["mask"], None, w)
