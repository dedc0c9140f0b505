"""MoCo v2 (Chen et al., 2020) with in-batch keys: query encoder + MLP head, momentum key encoder + head.

Keys come from the gathered batch rather than a queue (as in MoCo v3), so multi-process and resumed runs stay
exact and there is no queue state to checkpoint.
"""

from __future__ import annotations

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import MoCoProjectionHead

from selfsup.methods.base import Method, register


@register("moco")
class MoCo(Method):
    momentum_pairs = [("encoder", "encoder_k"), ("head", "head_k")]

    def __init__(self, encoder, feat_dim, cfg):
        super().__init__(encoder, feat_dim, cfg)
        self.head = MoCoProjectionHead(feat_dim, cfg.hidden_dim, cfg.out_dim)
        self.encoder_k = self.momentum_copy(encoder)
        self.head_k = self.momentum_copy(self.head)
        self.loss = NTXentLoss(cfg.temperature, gather_distributed=True)

    def forward(self, views, thetas):
        q = [self.head(self.pool(self.features(self.encoder, v))) for v in views]
        with torch.no_grad():
            k = [self.head_k(self.pool(self.features(self.encoder_k, v))) for v in views]
        return 0.5 * (self.loss(q[0], k[1]) + self.loss(q[1], k[0]))
