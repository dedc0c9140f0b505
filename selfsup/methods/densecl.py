"""DenseCL (Wang et al., 2021): global + dense contrastive learning; the default, since segmentation needs
spatially precise features.

The key branch is a momentum copy of the encoder *and* both heads, and the keys are computed by those copies
(lightly's own DenseCL example passes the key view through the online network: here the momentum copies are
used, as in the paper). Dense positives are matched by backbone-feature similarity between the two views.

Two changes make the dense part useful on radiographs (Wang et al. use a 7x7 map at 224 px and a queue of other
images' keys):
- the dense loss runs on a finer level (``method.dense_level``, default stride 8: a 12x12 map at 96 px views,
  against 3x3 for the deepest map), so a finger bone spans several cells;
- dense negatives come from *other images* only: the other cells of the same image (mostly similar background on
  an X-ray) would be false negatives. Keys are gathered across processes, no queue, so multi-process and resumed
  runs stay exact.
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
        self.level = int(getattr(cfg, "dense_level", -1))
        dense_dim = encoder.out_channels[self.level]
        self.head_g = DenseCLProjectionHead(feat_dim, hid, out)
        self.head_d = DenseCLProjectionHead(dense_dim, hid, out)
        self.encoder_k = self.momentum_copy(encoder)
        self.head_g_k = self.momentum_copy(self.head_g)
        self.head_d_k = self.momentum_copy(self.head_d)
        self.loss_g = NTXentLoss(cfg.temperature, gather_distributed=True)
        self.temperature = cfg.temperature
        self.lam = cfg.dense_weight

    def _query(self, x):
        feats = self.encoder(x)
        f, fd = feats[-1], feats[self.level]  # deepest [B, F, h, w]; dense level [B, F', h', w']
        flat = rearrange(fd, "b f h w -> b (h w) f")
        return f, flat, self.head_g(self.pool(f)), self.head_d(flat)

    @torch.no_grad()
    def _key(self, x):
        feats = self.encoder_k(x)
        f, fd = feats[-1], feats[self.level]
        flat = rearrange(fd, "b f h w -> b (h w) f")
        return flat, self.head_g_k(self.pool(f)), self.head_d_k(flat)

    def _one_way(self, q, k):
        _, q_flat, q_g, q_d = q
        k_flat, k_g, k_d = k
        # Positive for each query location: the key location with the most similar backbone feature.
        k_d = select_most_similar(F.normalize(q_flat.detach(), dim=-1), F.normalize(k_flat, dim=-1), k_d)
        dense = dense_infonce(q_d, k_d, self.temperature)
        return (1 - self.lam) * self.loss_g(q_g, k_g) + self.lam * dense

    def forward(self, views, thetas):
        q0, q1 = self._query(views[0]), self._query(views[1])
        k0, k1 = self._key(views[0]), self._key(views[1])
        return 0.5 * (self._one_way(q0, k1) + self._one_way(q1, k0))


def dense_infonce(q: torch.Tensor, k: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE over cells: ``q, k [B, N, D]``, ``k[b, n]`` the positive of ``q[b, n]``; the negatives are every
    cell of every *other* image of the (gathered) batch, never another cell of the same image."""
    from lightly.utils import dist as ldist

    b, n, _ = q.shape
    qf = F.normalize(rearrange(q, "b n d -> (b n) d"), dim=-1)
    kf = F.normalize(rearrange(k, "b n d -> (b n) d"), dim=-1)
    offset = 0
    if torch.distributed.is_available() and torch.distributed.is_initialized() and ldist.world_size() > 1:
        keys = torch.cat(ldist.gather(kf.detach()), 0)  # keys carry no gradient (momentum encoder)
        offset = ldist.rank() * b * n
    else:
        keys = kf
    logits = qf @ keys.T / temperature  # [B*N, B_all*N]
    img_q = torch.arange(b * n, device=q.device) // n + offset // n  # image of each query row
    img_k = torch.arange(keys.shape[0], device=q.device) // n
    pos = torch.arange(b * n, device=q.device) + offset
    same = img_q[:, None] == img_k[None, :]
    same[torch.arange(b * n), pos] = False  # the positive stays
    logits = logits.masked_fill(same, float("-inf"))
    return F.cross_entropy(logits.float(), pos)
