"""The supervised task: ground-truth masks (unpacked on the device), segmentation augmentation, a
segmentation loss. Experts (cosup) reuse it with a subset of output channels."""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from bonekit.cache import unpack
from bonekit.classes import SMALL_BONES
from bonekit.losses import segmentation_loss
from bonekit.seg_augment import SegAugConfig, augment
from bonekit.tiles import random_crop


@dataclass
class AugConfig:
    flip: float = 0.5
    rotation: float = 10.0
    scale: float = 0.1
    shift: float = 0.05
    elastic_p: float = 0.0
    gamma: float = 0.2
    contrast: float = 0.15
    blur_p: float = 0.2
    noise: float = 0.02
    clahe_p: float = 0.0
    cutout_p: float = 0.0
    mixup_p: float = 0.0
    copy_paste_p: float = 0.0
    copy_paste_classes: list[str] = field(default_factory=lambda: list(SMALL_BONES))


@dataclass
class ModelConfig:
    arch: str = "unet"  # unet | unetplusplus | deeplabv3plus | fpn | upernet | segformer | ...
    encoder: str = "resnet18"  # any timm encoder smp takes as tu-<name>
    init: str = "scratch"  # scratch | path to a selfsup encoder.safetensors (strict load)


def seg_aug_config(a, classes: list[str]) -> SegAugConfig:
    lookup = {c: i for i, c in enumerate(classes)}
    paste = tuple(lookup[c] for c in a.copy_paste_classes if c in lookup)
    return SegAugConfig(flip=a.flip, rotation=a.rotation, scale=a.scale, shift=a.shift, elastic_p=a.elastic_p,
                        gamma=a.gamma, contrast=a.contrast, blur_p=a.blur_p, noise=a.noise, cutout_p=a.cutout_p,
                        mixup_p=a.mixup_p, copy_paste_p=a.copy_paste_p, copy_paste_classes=paste)


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
    """Targets: the ground truth of ``out_classes``. Loss: ``loss`` (bce_dice default), per-class weights."""

    def __init__(self, n_classes: int, out_classes: list[int], aug: SegAugConfig, loss: str = "bce_dice",
                 class_weights: list[float] | None = None, clahe_p: float = 0.0, crop: int = 0):
        self.n_classes = n_classes
        self.out_classes = out_classes
        self.aug = aug
        self.loss_fn = segmentation_loss(loss)
        self.weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.clahe_p = clahe_p
        self.crop = crop  # train on random crops of this size (0: the whole image)

    def inputs(self, batch, keys, step):
        img = clahe(batch["image"], keys, self.clahe_p)
        x = img.float().div_(255)
        y = unpack(batch["words"], self.n_classes)[:, self.out_classes].to(x.device).float()
        x, y, _ = augment(x, y, keys, self.aug)
        x, y, _ = random_crop(x, y, keys, self.crop)
        return x, {"mask": y}

    def loss(self, logits, targets, step):
        w = self.weight.to(logits.device) if self.weight is not None else None
        return self.loss_fn(logits, targets["mask"], None, w)
