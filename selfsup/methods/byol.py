"""BYOL (Grill et al., 2020): online encoder + projector + predictor regress a momentum target's projection."""

from __future__ import annotations

import torch
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead

from selfsup.methods.base import Method, register


@register("byol")
class BYOL(Method):
    momentum_pairs = [("encoder", "encoder_t"), ("proj", "proj_t")]

    def __init__(self, encoder, feat_dim, cfg):
        super().__init__(encoder, feat_dim, cfg)
        self.proj = BYOLProjectionHead(feat_dim, cfg.hidden_dim, cfg.out_dim)
        self.pred = BYOLPredictionHead(cfg.out_dim, cfg.hidden_dim, cfg.out_dim)
        self.encoder_t = self.momentum_copy(encoder)
        self.proj_t = self.momentum_copy(self.proj)
        self.loss = NegativeCosineSimilarity()

    def forward(self, views, thetas):
        p = [self.pred(self.proj(self.pool(self.features(self.encoder, v)))) for v in views]
        with torch.no_grad():
            z = [self.proj_t(self.pool(self.features(self.encoder_t, v))) for v in views]
        return 0.5 * (self.loss(p[0], z[1]) + self.loss(p[1], z[0]))
