"""The base of every self-supervised method and the registry that names them."""

from __future__ import annotations

import copy

import torch
from lightly.models.utils import deactivate_requires_grad, update_momentum
from torch import nn

METHODS: dict[str, type[Method]] = {}


def register(name: str):
    def deco(cls):
        METHODS[name] = cls
        cls.name = name
        return cls

    return deco


class Method(nn.Module):
    """``forward(views, thetas) -> loss``. ``views``: list of ``[B, C, S, S]`` augmented views of the same images;
    ``thetas``: their ``[B, 2, 3]`` affine maps (for methods that match locations between views).

    ``self.encoder`` is the online encoder: the one saved as ``encoder.safetensors``.
    """

    name = "base"
    momentum_pairs: list[tuple[str, str]] = []  # (online module, momentum copy) attribute names

    def __init__(self, encoder: nn.Module, feat_dim: int, cfg):
        super().__init__()
        self.encoder = encoder
        self.feat_dim = feat_dim
        self.cfg = cfg

    def features(self, enc: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Deepest feature map ``[B, F, h, w]``."""
        return enc(x)[-1]

    @staticmethod
    def pool(f: torch.Tensor) -> torch.Tensor:
        return f.mean((2, 3))

    @staticmethod
    def momentum_copy(module: nn.Module) -> nn.Module:
        m = copy.deepcopy(module)
        deactivate_requires_grad(m)
        return m

    @torch.no_grad()
    def momentum_update(self, m: float) -> None:
        """EMA of the online modules into their momentum copies (call on the *unwrapped* model)."""
        for online, target in self.momentum_pairs:
            update_momentum(getattr(self, online), getattr(self, target), m)
