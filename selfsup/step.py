"""One pretraining step's work on a micro-batch: two augmented views per image, made on the device, and the
method's loss. The optimisation around it (schedule, accumulation, non-finite check) is :mod:`bonekit.engine`."""

from __future__ import annotations

import torch

from bonekit.augment import ViewConfig, make_views


class ViewPair:
    """uint8 frames ``[B, C, R, R]`` -> two views ``[B, C, S, S]`` each (and their affine maps ``[B, 2, 3]``).

    View seeds are keyed by (seed, epoch, frame, view): identical whichever process or resume handles a sample.
    """

    def __init__(self, cfg: ViewConfig, seed: int, device, channels_last: bool = False):
        self.cfg, self.seed, self.device, self.channels_last = cfg, seed, device, channels_last

    def __call__(self, batch: dict, epoch: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        x = batch["image"].to(self.device, non_blocking=True).float().div_(255)
        idx = batch["index"].tolist()
        views, thetas = [], []
        for v in range(2):
            view, th = make_views(x, [(self.seed, epoch, i, v) for i in idx], self.cfg)
            if self.channels_last:
                view = view.contiguous(memory_format=torch.channels_last)
            views.append(view)
            thetas.append(th)
        return views, thetas


def method_loss(accelerator, model, views: list[torch.Tensor], thetas: list[torch.Tensor]) -> torch.Tensor:
    """The method's loss on two views (forward under the accelerator's autocast)."""
    with accelerator.autocast():
        return model(views, thetas)
