"""SimCLR (Chen et al., 2020): two views, projection head, NT-Xent over the gathered batch."""

from __future__ import annotations

from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead

from selfsup.methods.base import Method, register


@register("simclr")
class SimCLR(Method):
    def __init__(self, encoder, feat_dim, cfg):
        super().__init__(encoder, feat_dim, cfg)
        self.head = SimCLRProjectionHead(feat_dim, cfg.hidden_dim, cfg.out_dim)
        self.loss = NTXentLoss(cfg.temperature, gather_distributed=True)

    def forward(self, views, thetas):
        z = [self.head(self.pool(self.features(self.encoder, v))) for v in views]
        return self.loss(z[0], z[1])
