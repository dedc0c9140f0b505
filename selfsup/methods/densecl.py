"""DenseCL (Wang et al., 2021): global + dense contrastive learning; the default, since segmentation needs
spatially precise features.

The key branch is a momentum copy of the encoder *and* both heads, and the keys are computed by those copies
(lightly's own DenseCL example passes the key view through the online network: here the momentum copies are
used, as in the paper). Dense positives are matched by backbone-feature similarity between the two views.
Negatives are the other samples/locations of the (gathered) batch: no queue, so multi-process and resumed runs
stay exact.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from lightly.loss import NTXentLoss
from lightly.models.modules import DenseCLProjectionHead
from lightly.models.utils import select_most_similar

from selfsup.methods.base import Method, register


@register("densecl")
class DenseCL(Method):
    momentum_pairs = [("encoder", "encoder_k"), ("head_g", "head_g_k"), ("head_d", "head_d_k")]

    def __init__(self, encoder, feat_dim, cfg):
        super().__init__(encoder, feat_dim, cfg)
        hid, out = cfg.hidden_dim, cfg.out_dim
        self.head_g = DenseCLProjectionHead(feat_dim, hid, out)
        self.head_d = DenseCLProjectionHead(feat_dim, hid, out)
        self.encoder_k = self.momentum_copy(encoder)
        self.head_g_k = self.momentum_copy(self.head_g)
        self.head_d_k = self.momentum_copy(self.head_d)
        self.loss_g = NTXentLoss(cfg.temperature, gather_distributed=True)
        self.loss_d = NTXentLoss(cfg.temperature, gather_distributed=True)
        self.lam = cfg.dense_weight

    def _query(self, x):
        f = self.features(self.encoder, x)  # [B, F, h, w]
        flat = rearrange(f, "b f h w -> b (h w) f")
        return f, flat, self.head_g(self.pool(f)), self.head_d(flat)

    @torch.no_grad()
    def _key(self, x):
        f = self.features(self.encoder_k, x)
        flat = rearrange(f, "b f h w -> b (h w) f")
        return flat, self.head_g_k(self.pool(f)), self.head_d_k(flat)

    def _one_way(self, q, k):
        _, q_flat, q_g, q_d = q
        k_flat, k_g, k_d = k
        # Positive for each query location: the key location with the most similar backbone feature.
        k_d = select_most_similar(F.normalize(q_flat.detach(), dim=-1), F.normalize(k_flat, dim=-1), k_d)
        dense = self.loss_d(rearrange(q_d, "b n d -> (b n) d"), rearrange(k_d, "b n d -> (b n) d"))
        return (1 - self.lam) * self.loss_g(q_g, k_g) + self.lam * dense

    def forward(self, views, thetas):
        q0, q1 = self._query(views[0]), self._query(views[1])
        k0, k1 = self._key(views[0]), self._key(views[1])
        return 0.5 * (self._one_way(q0, k1) + self._one_way(q1, k0))
