"""VICRegL (Bardes et al., 2022): VICReg on global embeddings plus local matching of feature-map cells by their
location in the source image (from the views' affine maps) and by feature distance."""

from __future__ import annotations

from einops import rearrange
from lightly.loss import VICRegLLoss
from lightly.models.modules.heads import (
    VicRegLLocalProjectionHead,
    VICRegProjectionHead,
)

from bonekit.augment import feature_grid
from selfsup.methods.base import Method, register


@register("vicregl")
class VICRegL(Method):
    def __init__(self, encoder, feat_dim, cfg):
        super().__init__(encoder, feat_dim, cfg)
        self.head_g = VICRegProjectionHead(feat_dim, cfg.hidden_dim, cfg.out_dim)
        self.head_l = VicRegLLocalProjectionHead(feat_dim, cfg.hidden_dim // 4, cfg.out_dim // 4)
        self.loss = VICRegLLoss(gather_distributed=True, num_matches=(4, 2))

    def forward(self, views, thetas):
        feats, grids = [], []
        for v, th in zip(views, thetas):
            f = self.features(self.encoder, v)  # [B, F, h, w]
            local = self.head_l(rearrange(f, "b f h w -> b h w f"))  # [B, h, w, D]
            feats.append((self.head_g(self.pool(f)), local))
            grids.append(feature_grid(th.to(f.dtype), f.shape[2], f.shape[3]))
        return self.loss(global_view_features=feats, global_view_grids=grids)
