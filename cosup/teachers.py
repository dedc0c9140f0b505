"""The expert teachers as one predictor: for bones, each channel comes from its owning expert; for shards, each
image goes to the expert of its shard."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from bonekit.models import load_model
from cosup.manifest import Manifest


class Teachers:
    def __init__(self, manifest: Manifest, device):
        self.manifest = manifest
        self.classes = manifest.classes
        self.partition = manifest.partition
        self.device = device
        lookup = {c: i for i, c in enumerate(self.classes)}
        self.experts = []
        self.crops = {}  # expert number -> (coarse model, crop size, margin, source cache)
        for n, e in enumerate(manifest.experts):
            m, meta = load_model(e.checkpoint)
            self.experts.append((m.to(device).eval(), [lookup[c] for c in meta["classes"]], e.shard))
            if e.crop:
                from bonekit.cache import Cache

                c = e.crop
                coarse, _ = load_model(c["coarse"])
                self.crops[n] = (coarse.to(device).eval(), c["size"], c["margin"], Cache.open(c["source_cache"]))
        # The per-bone gate (cosup/gate.py): bones whose specialist lost the cross-validation take the generalist's.
        self.fallback = None
        use = manifest.gate.get("use", {}) if manifest.gate else {}
        gated_out = [c for c in self.classes if not use.get(c, True)]
        if gated_out:
            g, meta = load_model(manifest.gate["fallback"])
            self.fallback = (g.to(device).eval(), [lookup[c] for c in gated_out],
                             [meta["classes"].index(c) for c in gated_out])

    @torch.no_grad()
    def predict(self, x: torch.Tensor, shards: list[int] | None = None, frames: list[int] | None = None) -> torch.Tensor:
        """``x [B, C, R, R]`` float -> teacher probabilities ``[B, K, R, R]``. ``frames`` (cache frame numbers) let
        crop experts cut their crops from the higher-resolution source; without them crops come from ``x``."""
        from cosup.crops import crop_predict, crop_sources

        b = x.shape[0]
        out = torch.zeros(b, len(self.classes), *x.shape[-2:], device=x.device)
        if self.partition == "bones":
            for n, (m, ch, _) in enumerate(self.experts):
                if n in self.crops:
                    coarse, size, margin, src = self.crops[n]
                    sources = None if frames is None else crop_sources(src, frames, x.shape[1] // 2, x.device)
                    out[:, ch] = crop_predict(coarse, m, x, size, margin, sources)
                else:
                    out[:, ch] = torch.sigmoid(m(x).float())
            if self.fallback is not None:
                g, ch, g_ch = self.fallback
                out[:, ch] = torch.sigmoid(g(x).float()[:, g_ch])
            return out
        if shards is None:
            raise ValueError("shard experts need a shard per image")
        for m, ch, s in self.experts:
            rows = [i for i in range(b) if shards[i] == s]
            if rows:
                out[rows] = torch.sigmoid(m(x[rows]).float())
        return out


class TeacherModule(nn.Module):
    """Teachers as a model returning logits (for the shared validation code); shards from ``shard_fn(x)``. The
    validation loop passes the frame numbers (``takes_frames``) so crop experts cut from their own source."""

    takes_frames = True

    def __init__(self, teachers: Teachers, shard_fn=None):
        super().__init__()
        self.t = teachers
        self.shard_fn = shard_fn
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x, frames=None):
        shards = self.shard_fn(x) if self.shard_fn else None
        return torch.logit(self.t.predict(x.float(), shards, frames).clamp(1e-6, 1 - 1e-6))


def student_shard_fn(student: nn.Module, centroids: np.ndarray):
    """Assign images to shards by the current student's embedding (nearest shard centroid)."""
    c = torch.from_numpy(centroids).float()

    @torch.no_grad()
    def fn(x):
        f = torch.nn.functional.normalize(student.encoder(x)[-1].float().mean((2, 3)), dim=1)
        return (f.cpu() @ c.T).argmax(1).tolist()

    return fn
