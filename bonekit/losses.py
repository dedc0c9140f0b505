"""Segmentation and distillation losses. Every head is K independent sigmoids (bones overlap).

Shapes: ``logits [B, K, H, W]``, ``target [B, K, H, W]`` in [0, 1] (hard or soft), optional ``ignore`` bool
``[B, K, H, W]`` or ``[B, K]`` (True = no loss there), optional per-class ``weight [K]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _keep(ignore: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    if ignore is None:
        return torch.ones_like(like)
    ig = ignore
    while ig.ndim < like.ndim:
        ig = ig[..., None]
    return (~ig.bool()).to(like.dtype).expand_as(like)


def _class_mean(per_class: torch.Tensor, weight: torch.Tensor | None, present: torch.Tensor | None = None) -> torch.Tensor:
    """(Weighted) mean over classes; ``present`` (bool ``[K]``) leaves the other classes out. The caller makes sure
    at least one class is present."""
    if weight is None and present is None:
        return per_class.mean()
    w = torch.ones_like(per_class) if weight is None else weight.to(per_class)
    if present is not None:
        w = w * present.to(w.dtype)
    return (per_class * w).sum() / w.sum()


def bce(logits, target, ignore=None, weight=None) -> torch.Tensor:
    keep = _keep(ignore, logits)
    px = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none") * keep
    # Per sample and class, then averaged: decomposes over processes like the Dice term.
    per = px.sum((2, 3)) / keep.sum((2, 3)).clamp(min=1)
    return _class_mean(per.mean(0), weight)


def soft_dice(logits, target, ignore=None, weight=None, eps: float = 1.0) -> torch.Tensor:
    """1 - Dice on probabilities per (sample, class), averaged over samples, ignored pixels left out.

    Per sample, not over the batch: the mean of per-sample terms is the same whether one process holds the
    batch or several hold parts of it (a batch-wide Dice is not).

    A (sample, class) whose target is empty where it is scored ("no such bone in this image": most classes of
    most slices of a volume) gets no Dice term; the BCE term teaches it. With eps = 1 its Dice term would be
    ``1 - 1 / (predicted pixels + 1)``: half the loss of missing a whole bone for one predicted pixel, which
    taught volume slices to predict nothing at all. Radiographs, where every bone is in every image, are
    unchanged (bit-identical); fully ignored pairs keep their zero term as before.
    """
    keep = _keep(ignore, logits)
    p = torch.sigmoid(logits.float()) * keep
    t = target.float() * keep
    inter = (p * t).sum((2, 3))
    den = p.sum((2, 3)) + t.sum((2, 3))
    per = 1 - (2 * inter + eps) / (den + eps)  # [B, K]
    absent = (t.sum((2, 3)) == 0) & (keep.sum((2, 3)) > 0)
    if not bool(absent.any()):
        return _class_mean(per.mean(0), weight)
    scored = (~absent).to(per.dtype)
    n = scored.sum(0)  # samples scored per class
    per_class = (per * scored).sum(0) / n.clamp(min=1)
    present = n > 0  # classes with no scored sample in this batch drop out of the class mean
    if not bool(present.any()):
        return per.sum() * 0.0  # nothing to score; still a function of the logits (DDP needs a graph)
    return _class_mean(per_class, weight, present)


def batch_dice(logits, target, ignore=None, weight=None, eps: float = 1.0) -> torch.Tensor:
    """1 - Dice per class over the whole batch (every pixel of every sample pooled; nnU-Net's "batch Dice").

    For sparse targets such as the slices of a volume, where a bone is absent from most slices: a stray
    prediction on a slice without the bone enlarges that class's denominator, so false positives cost Dice as
    they do in the 3D score, which the per-image term cannot do (it skips absent pairs). Classes absent from the
    whole batch are left to the BCE term. Pooled over the batch, so with several processes each pools its own
    part (not the same number as one process: the price of this option)."""
    keep = _keep(ignore, logits)
    p = torch.sigmoid(logits.float()) * keep
    t = target.float() * keep
    inter = (p * t).sum((0, 2, 3))
    tsum = t.sum((0, 2, 3))
    per_class = 1 - (2 * inter + eps) / (p.sum((0, 2, 3)) + tsum + eps)
    present = tsum > 0
    if not bool(present.any()):
        return per_class.sum() * 0.0
    return _class_mean(per_class, weight, present)


def soft_jaccard(logits, target, ignore=None, weight=None, eps: float = 1.0) -> torch.Tensor:
    keep = _keep(ignore, logits)
    p = torch.sigmoid(logits.float()) * keep
    t = target.float() * keep
    inter = (p * t).sum((2, 3))
    union = p.sum((2, 3)) + t.sum((2, 3)) - inter
    return _class_mean((1 - (inter + eps) / (union + eps)).mean(0), weight)


def focal(logits, target, ignore=None, weight=None, gamma: float = 2.0) -> torch.Tensor:
    keep = _keep(ignore, logits)
    x, t = logits.float(), target.float()
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p = torch.sigmoid(x)
    pt = p * t + (1 - p) * (1 - t)
    px = ce * (1 - pt) ** gamma * keep
    return _class_mean((px.sum((2, 3)) / keep.sum((2, 3)).clamp(min=1)).mean(0), weight)


LOSSES = ("bce_dice", "bce", "dice", "focal", "jaccard", "focal_dice", "bce_batch_dice")


def segmentation_loss(name: str):
    """``bce_dice`` (default) | ``bce`` | ``dice`` | ``focal`` | ``jaccard`` | ``focal_dice`` | ``bce_batch_dice``
    (the Dice term pooled over the batch: for slices of volumes)."""
    table = {
        "bce_dice": lambda l, t, i=None, w=None: bce(l, t, i, w) + soft_dice(l, t, i, w),
        "bce_batch_dice": lambda l, t, i=None, w=None: bce(l, t, i, w) + batch_dice(l, t, i, w),
        "bce": bce,
        "dice": soft_dice,
        "focal": focal,
        "jaccard": soft_jaccard,
        "focal_dice": lambda l, t, i=None, w=None: focal(l, t, i, w) + soft_dice(l, t, i, w),
    }
    if name not in table:
        raise ValueError(f"loss={name!r}: choose one of {sorted(table)}")
    return table[name]


# ------------------------------------------------------------------------------------------ distillation
def kd_binary(student_logits, teacher_prob, temperature: float = 1.0, ignore=None) -> torch.Tensor:
    """Per-channel binary KD: BCE between tempered sigmoids, scaled by T² (zero gradient when equal).

    Returned as the KL part only (BCE minus the teacher's entropy), so the loss is exactly 0 when the student
    matches the teacher.
    """
    t = temperature
    q = teacher_prob.float().clamp(1e-6, 1 - 1e-6)
    if t != 1.0:  # temper the teacher in logit space
        q = torch.sigmoid(torch.logit(q) / t)
    keep = _keep(ignore, student_logits)
    s = student_logits.float() / t
    ce = F.binary_cross_entropy_with_logits(s, q, reduction="none")
    ent = -(q * torch.log(q) + (1 - q) * torch.log(1 - q))
    return ((ce - ent) * keep).sum() / keep.sum().clamp(min=1) * t * t


def channel_wise(student_logits, teacher_logits, temperature: float = 4.0, ignore=None) -> torch.Tensor:
    """Channel-wise distillation (Shu et al., 2021): softmax over space per channel, KL(teacher || student)."""
    t = temperature
    b, k = student_logits.shape[:2]
    s = student_logits.float().reshape(b, k, -1) / t
    q = teacher_logits.float().reshape(b, k, -1) / t
    kl = (F.softmax(q, -1) * (F.log_softmax(q, -1) - F.log_softmax(s, -1))).sum(-1)  # [B, K]
    keep = _keep(ignore, kl) if ignore is not None and ignore.ndim == 2 else torch.ones_like(kl)
    return (kl * keep).sum() / keep.sum().clamp(min=1) * t * t


def confidence(student_logits, teacher_prob, alpha: float, ignore=None) -> torch.Tensor:
    """Weak-to-strong auxiliary confidence loss (Burns et al., 2023), for K independent sigmoids:
    ``(1 - alpha) * BCE(student, teacher) + alpha * BCE(student, hardened student)``.

    This *replaces* the plain KD term (it already carries the teacher with weight 1 - alpha). The student is
    hardened per class at the batch quantile that gives it the teacher's positive rate (the reference's
    adaptive threshold), not at a fixed 0.5: with bones a fraction of a percent of the pixels, an under-confident
    student would otherwise harden every teacher-positive pixel to 0 and, at alpha = 0.5, a pixel with teacher p in
    (1/3, 2/3) started below 0.5 would stay there (bistable)."""
    hard = harden_by_teacher_rate(student_logits.detach(), teacher_prob, ignore)
    return (1 - alpha) * bce(student_logits, teacher_prob, ignore) + alpha * bce(student_logits, hard, ignore)


def harden_by_teacher_rate(student_logits, teacher_prob, ignore=None) -> torch.Tensor:
    """``[B, K, H, W]`` 0/1: per class, the student's highest pixels of the batch, as many as the teacher's
    positives (p > 0.5) among the pixels not ignored."""
    keep = _keep(ignore, student_logits) > 0
    s = student_logits.float().transpose(0, 1).reshape(student_logits.shape[1], -1)  # [K, B*H*W]
    t = (teacher_prob.float() > 0.5).transpose(0, 1).reshape(s.shape)
    k = keep.transpose(0, 1).reshape(s.shape)
    s = s.masked_fill(~k, float("-inf"))
    n_pos = (t & k).sum(1)  # [K]
    hard = torch.zeros_like(s)
    order = s.argsort(1, descending=True)
    ranks = torch.arange(s.shape[1], device=s.device).expand_as(s)
    hard.scatter_(1, order, (ranks < n_pos[:, None]).float())
    b, kk, h, w = student_logits.shape
    return hard.reshape(kk, b, h, w).transpose(0, 1)
