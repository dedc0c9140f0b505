"""Inference shared by evaluate.py and predict.py: one or several checkpoints, flip TTA, soft (weighted) or
hard (>= n votes) voting, per-class thresholds, streamed one image at a time so that
``2048² x K x models`` never sits in memory at once."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from bonekit import config
from bonekit.errors import DataError
from bonekit.models import load_model, read_model_meta
from bonekit.tiles import sliding_window


def _checkpoint_list(argv: list[str]) -> list[str]:
    cfg = OmegaConf.from_dotlist([a for a in argv if a.split("=", 1)[0] in ("checkpoint", "checkpoints")])
    return ([cfg.checkpoint] if cfg.get("checkpoint") else []) + list(cfg.get("checkpoints") or [])


def load_config(schema, argv: list[str]):
    """The config, with the data section defaulting to the first checkpoint's own data config."""
    cks = _checkpoint_list(argv)
    base = None
    if cks:
        data = read_model_meta(cks[0]).get("config", {}).get("data")
        if data:
            base = {"data": data}
    cfg = config.load(schema, argv, base=base)
    return cfg, cks


class Predictor:
    def __init__(self, checkpoints: list[str], device, weights: list[float] | None = None, tta: str = "none",
                 vote: str = "soft", min_votes: int = 0, thresholds: str | list[float] | None = None,
                 classes: list[str] | None = None, in_channels: int | None = None, precision: str = "auto"):
        if not checkpoints:
            raise ValueError("no checkpoint given: checkpoint=PATH (or checkpoints=[A,B])")
        self.models, self.metas = [], []
        for c in checkpoints:
            m, meta = load_model(c, classes, in_channels)
            if self.metas and meta["classes"] != self.metas[0]["classes"]:
                raise DataError(c, "checkpoints of an ensemble must predict the same classes in the same order")
            self.models.append(m.to(device).eval())
            self.metas.append(meta)
        self.classes = self.metas[0]["classes"]
        self.in_channels = int(self.metas[0]["in_channels"])
        self.device = device
        self.weights = torch.tensor(weights or [1.0] * len(self.models), dtype=torch.float32)
        if len(self.weights) != len(self.models):
            raise ValueError(f"{len(self.weights)} weights for {len(self.models)} checkpoints")
        if tta not in ("none", "hflip"):
            raise ValueError(f"tta={tta!r}: none | hflip")
        if vote not in ("soft", "hard"):
            raise ValueError(f"vote={vote!r}: soft | hard")
        self.tta, self.vote = tta, vote
        self.min_votes = min_votes or (len(self.models) // 2 + 1)
        self.thresholds = self._thresholds(thresholds)
        cuda = device.type == "cuda"
        self.dtype = torch.bfloat16 if cuda and precision in ("auto", "bf16") else torch.float32

    def _thresholds(self, t) -> torch.Tensor:
        k = len(self.classes)
        if t in (None, "", []):
            return torch.full((k,), 0.5)
        if isinstance(t, str):
            p = Path(t)
            if not p.is_file():
                raise DataError(p, "thresholds file does not exist")
            try:
                doc = json.loads(p.read_text())
            except json.JSONDecodeError as e:
                raise DataError(p, f"thresholds file is not valid JSON ({e})") from None
            if isinstance(doc, dict):
                missing = [c for c in self.classes if c not in doc]
                if missing:
                    raise DataError(p, f"thresholds file lacks {len(missing)} of the model's {k} classes "
                                       f"(first: {missing[:3]})")
                vals = [doc[c] for c in self.classes]
            else:
                vals = doc
        else:
            vals = list(t)
        if len(vals) != k:
            raise ValueError(f"{len(vals)} thresholds for {k} classes")
        return torch.tensor(vals, dtype=torch.float32)

    def resolution(self) -> int:
        return int(self.metas[0].get("resolution", 512))

    @torch.no_grad()
    def _logits(self, model, x, tile: int = 0):
        """Logits of one model (sliding window over the image when it was trained on crops; optional flip TTA)."""
        run = lambda t: sliding_window(model, t, tile).float()  # noqa: E731
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            out = run(x)
            if self.tta == "hflip":
                out = 0.5 * (out + torch.flip(run(torch.flip(x, dims=[-1])), dims=[-1]))
        return out

    @torch.no_grad()
    def probs(self, x: torch.Tensor, size: tuple[int, int]) -> list[torch.Tensor]:
        """``x [1, C, R, R]`` float in [0, 1] -> per-model probabilities ``[K, H, W]`` at ``size``, one at a time
        upsampled bilinearly (the competition's convention: logits upsampled, then sigmoid)."""
        out = []
        for m, meta in zip(self.models, self.metas):
            lg = self._logits(m, x.to(self.device), int(meta.get("crop", 0)))
            lg = F.interpolate(lg, size=size, mode="bilinear", align_corners=False)
            out.append(torch.sigmoid(lg[0]))
        return out

    @torch.no_grad()
    def combine(self, probs: list[torch.Tensor], thresholds: torch.Tensor | None = None) -> torch.Tensor:
        """Per-model probabilities -> ``bool [K, H, W]`` by weighted soft voting or hard voting."""
        thr = (self.thresholds if thresholds is None else thresholds).to(probs[0].device).view(-1, 1, 1)
        if self.vote == "hard":
            votes = sum((p > thr).to(torch.int16) for p in probs)
            return votes >= self.min_votes
        return self.soft(probs) > thr

    def soft(self, probs: list[torch.Tensor]) -> torch.Tensor:
        w = self.weights.to(probs[0].device)
        acc = torch.zeros_like(probs[0])
        for wi, p in zip(w, probs):
            acc += wi * p
        return acc / w.sum()

    @torch.no_grad()
    def predict(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self.combine(self.probs(x, size))
