"""What distillation trains on: the dataset (labelled images + pool images with teacher targets) and the task
(targets and losses per batch). finetune/distill.py is the main that runs it through the shared loop.

Semi-supervised pieces, each a ``kd.*`` switch the study can turn on:
- stored expert targets (co-supervision, self-training) or an EMA *mean teacher* (``kd.ema``) that predicts the
  pool online on a weak view while the student sees a strong one (``kd.strong``: intensity, Cutout, CutMix);
- teacher channels that found no bone are ignored for that image (``kd.ignore_empty``: every bone is present in
  every hand radiograph, so an empty channel is a miss, not "no bone");
- per-pixel confidence masking (``kd.pixel_threshold``) and a ramp-up of the pool weight (``kd.rampup``);
- the weak-to-strong confidence loss with the reference's adaptive threshold (``kd.confidence``), replacing the
  plain KD term rather than adding a second copy of the teacher;
- bidirectional copy-paste (``kd.bcp``, Bai et al., CVPR 2023): each labelled image is paired with a pool image, a
  box of one is pasted into the other both ways, and every pixel is taught by its own source (ground truth where
  it came from the labelled image, the teacher where it came from the pool), so labelled and pool statistics
  meet inside every image;
- hard pseudo-labels (``kd.hard``): the teacher's probabilities binarised at 0.5, as BCP and FixMatch use them, so
  the student is pushed to commit where the teacher leans one way (soft targets teach a 0.4 as a 0.4);
- feature perturbation (``kd.fp``, UniMatch's FP stream, Yang et al., CVPR 2023): the decoder runs a second time on
  the encoder's features under channel dropout, and that stream too learns the teacher's pixels, so the student's
  prediction must survive a perturbation of its own features, not only of its input;
- a flip-averaged mean teacher (``kd.teacher_flip``): the pool target is the mean of the teacher's reading of the
  view and of its mirror image;
- experts under a mean teacher (``kd.expert_blend``): the experts' stored targets blended into the EMA teacher's,
  their share fading to 0 over the run, so co-supervision starts from the specialists and keeps improving.
The labelled part of a batch gets the supervised loss at full weight (a mean over the labelled samples), so a
distillation run with no pool loss (``kd.weight_kd=0``, the ``pooloff`` control) trains like plain fine-tuning.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from bonekit.datasets import CachedFrames
from bonekit.errors import ConfigError
from bonekit.losses import (
    channel_wise,
    confidence,
    kd_binary,
    segmentation_loss,
    soft_dice,
)
from bonekit.maskbits import unpack
from bonekit.seg_augment import SegAugConfig, augment, paste_indices
from finetune.pool_mix import bcp_mix, cutmix_pool, strong_view


@dataclass
class KDConfig:
    temperature: float = 1.0  # temperature of the binary KD term (teacher tempered in logit space)
    weight_gt: float = 1.0  # labelled images: segmentation loss on the ground truth (mean over labelled samples)
    weight_kd: float = 1.0  # pool images: KD + soft Dice against the teacher (0: the pooloff control)
    labelled_share: float = 0.5  # share of each epoch drawn from the labelled images (repeated as needed), < 1
    confidence: float = 0.0  # final alpha of the weak-to-strong confidence loss, replacing KD (0 = plain KD)
    alpha_warmup: float = 0.5  # share of the steps over which alpha rises from 0
    channel_wise: float = 0.0  # weight of channel-wise distillation (0 = off)
    ignore_empty: bool = True  # ignore a teacher channel that found no bone in an image (max p < 0.5)
    pixel_threshold: float = 0.0  # keep pool pixels where the teacher is this sure, max(p, 1-p) >= t (0: all)
    rampup: float = 0.0  # share of the steps over which the pool weight rises from 0 (sigmoid-shaped)
    ema: float = 0.0  # mean teacher: EMA momentum of a teacher that labels the pool online (0: stored targets)
    strong: bool = False  # strong views (intensity, Cutout, CutMix) for the student on pool images
    separate_bn: bool = True  # labelled and pool images in separate forward passes (batch-norm statistics apart)
    denoise: bool = True  # from round 1 on: keep the targets the previous student finds most plausible
    min_keep: float = 0.5  # the smallest share of pool targets kept per bone when denoising
    bcp: bool = False  # bidirectional copy-paste between labelled and pool images (BCP)
    bcp_size: float = 0.667  # side of the pasted box as a share of the image side (BCP's 2/3)
    hard: bool = False  # pool targets binarised at 0.5 (BCP's and FixMatch's hard pseudo-labels; masks use the soft p)
    fp: float = 0.0  # UniMatch feature perturbation: share of the pool loss given to the dropped-feature stream (0: off)
    fp_dropout: float = 0.5  # channel dropout (Dropout2d) on every encoder feature map in that stream (UniMatch's 0.5)
    teacher_flip: bool = False  # the EMA teacher labels a pool view as the mean of it and its mirror image (flip TTA)
    # experts under a mean teacher: the EMA teacher takes over from the fixed experts as it outgrows them
    expert_blend: float = 0.0  # with kd.ema and experts: their targets' share of the pool target at step 0, fading to 0


def check_kd(kd: KDConfig) -> None:
    if not 0.0 <= kd.labelled_share < 1.0:
        raise ConfigError(f"kd.labelled_share={kd.labelled_share}: must be in [0, 1) (1 would leave no pool images; "
                          "use finetune/train.py for labelled images only)")
    if not 0.0 <= kd.ema < 1.0:
        raise ConfigError(f"kd.ema={kd.ema}: an EMA momentum in [0, 1) (0 = stored expert targets)")
    if not 0.0 <= kd.pixel_threshold < 1.0:
        raise ConfigError(f"kd.pixel_threshold={kd.pixel_threshold}: must be in [0, 1)")
    if not 0.0 < kd.bcp_size < 1.0:
        raise ConfigError(f"kd.bcp_size={kd.bcp_size}: the box side as a share of the image, in (0, 1)")
    if not 0.0 <= kd.fp <= 1.0 or not 0.0 < kd.fp_dropout < 1.0:
        raise ConfigError(f"kd.fp={kd.fp}, kd.fp_dropout={kd.fp_dropout}: fp is a share of the pool loss in [0, 1], "
                          "fp_dropout a dropout probability in (0, 1)")
    if kd.teacher_flip and kd.ema == 0:
        raise ConfigError("kd.teacher_flip: flip-averages the EMA teacher's pool targets; set kd.ema > 0 "
                          "(stored expert targets are made once, by cosup/label.py)")
    if not 0.0 <= kd.expert_blend <= 1.0 or (kd.expert_blend > 0 and kd.ema == 0):
        raise ConfigError(f"kd.expert_blend={kd.expert_blend}: a share in [0, 1] of the experts' targets blended "
                          "with the EMA teacher's; needs kd.ema > 0 (without it the stored targets are the whole "
                          "target)")


class DistillFrames(Dataset):
    """CachedFrames items plus ``teacher`` (float16 probabilities ``[K, R, R]``, zeros on labelled frames) and
    ``keep`` (``[K]`` bool, False: that bone's target of that image was dropped by denoising)."""

    def __init__(self, cache, labelled, pool_frames, targets, keep, slices, labelled_share: float = 0.0,
                 k: int | None = None):
        # A few labelled images among many pool images would be drowned out: repeat them up to labelled_share
        # of the epoch. Each repeat gets its own augmentation key (index + repeat * 10**7).
        lab = list(labelled)
        reps = 1
        if labelled_share > 0 and lab and len(pool_frames):
            reps = max(1, round(labelled_share / (1 - labelled_share) * len(pool_frames) / len(lab)))
        self.frames = lab * reps + list(pool_frames)
        self.repeat = [r for r in range(reps) for _ in lab] + [0] * len(pool_frames)
        self.base = CachedFrames(cache, self.frames, slices)
        self.row = {int(f): i for i, f in enumerate(pool_frames)}
        self.labelled = {int(f) for f in labelled}
        self.targets, self.keep = targets, keep  # targets None: a mean teacher labels the pool online
        self.k, self.r = (targets.shape[1] if targets is not None else k), cache.resolution
        self.indices = self.base.indices
        # Experts may work at a lower resolution than the student (weak-to-strong): targets are resized here.
        self.resize = targets is not None and targets.shape[-1] != self.r

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        item = self.base[i]
        f = item["index"]
        item["index"] = f + self.repeat[i] * 10_000_000
        if f in self.labelled:
            item["teacher"] = torch.zeros(self.k, self.r, self.r, dtype=torch.float16)
            item["keep"] = torch.ones(self.k, dtype=torch.bool)
        else:
            # The cache holds labels for every training image; the pool's must never reach the student.
            item["labelled"] = False
            item["words"] = torch.zeros_like(item["words"])
            if self.targets is None:
                t = np.zeros((self.k, self.r, self.r), np.float32)
            else:
                t = np.asarray(self.targets[self.row[f]], dtype=np.float32)
            if self.resize:
                import cv2

                t = np.stack([cv2.resize(c, (self.r, self.r), interpolation=cv2.INTER_LINEAR) for c in t])
            item["teacher"] = torch.from_numpy(t.astype(np.float16))
            item["keep"] = torch.from_numpy(self.keep[self.row[f]].copy())
        return item


def sigmoid_ramp(step: int, steps: int, share: float) -> float:
    """Laine & Aila's ramp-up exp(-5 (1 - t)^2) over the first ``share`` of the steps (1 after, or if share=0)."""
    if share <= 0:
        return 1.0
    t = min(1.0, step / max(1.0, share * steps))
    return math.exp(-5.0 * (1.0 - t) ** 2)


def pool_ignore(teacher: torch.Tensor, keep: torch.Tensor, kd: KDConfig) -> torch.Tensor:
    """``[B, K, H, W]`` bool, True where a pool pixel gets no loss: the bone's target was dropped (``keep``), the
    teacher found no bone in that image (``kd.ignore_empty``), or the teacher is unsure there
    (``kd.pixel_threshold``)."""
    ig = (~keep.bool())[:, :, None, None].expand_as(teacher)
    if kd.ignore_empty:
        empty = teacher.amax((2, 3)) < 0.5  # [B, K]
        ig = ig | empty[:, :, None, None]
    if kd.pixel_threshold > 0:
        ig = ig | (torch.maximum(teacher, 1 - teacher) < kd.pixel_threshold)
    return ig.contiguous()


class DistillTask:
    """Targets and losses of a distillation batch (labelled and pool samples mixed; see the module doc)."""

    def __init__(self, k: int, aug: SegAugConfig, classes: list[str], kd: KDConfig, loss: str, steps: int):
        check_kd(kd)
        self.k, self.aug, self.kd, self.steps = k, aug, kd, steps
        self.paste = paste_indices(aug, classes)
        self.out_classes = list(range(k))
        self.seg = segmentation_loss(loss)
        self.student: torch.nn.Module | None = None  # set by the caller for the mean teacher
        self.ema: torch.nn.Module | None = None
        self._ema_step = -1
        self._fp_on = False  # the feature-perturbation hook doubles the decoder's batch only while this is set

    # ------------------------------------------------------------------ the mean teacher
    def attach(self, student: torch.nn.Module) -> None:
        """Give the task the (unwrapped) student: its EMA copy becomes the teacher when ``kd.ema > 0``."""
        self.student = student
        if self.kd.ema > 0:
            self.ema = copy.deepcopy(student).eval()
            for p in self.ema.parameters():
                p.requires_grad_(False)
        if self.kd.fp > 0:  # after the EMA copy: deepcopy would copy the hook into the teacher
            if not hasattr(student, "encoder"):
                raise ConfigError("kd.fp: feature perturbation needs an encoder-decoder student (an smp model)")
            student.encoder.register_forward_hook(self._perturb_features)

    def _perturb_features(self, module, inputs, feats):
        """Forward hook on the student's encoder: each feature map ``[B, C, h, w]`` becomes ``[2B, C, h, w]``, the
        clean maps then the same under Dropout2d, so one decoder pass yields both streams (UniMatch's layout; the
        decoder's batch norm sees both halves, as there). A hook, not a second call: the model stays the one
        accelerate wrapped, so gradients of both streams are synchronised across processes in the same backward."""
        if not self._fp_on:
            return feats
        p = self.kd.fp_dropout
        return [torch.cat([f, torch.nn.functional.dropout2d(f, p, training=True)]) for f in feats]

    @torch.no_grad()
    def _update_ema(self, step: int) -> None:
        # Called before the step's first batch: folds in the optimizer step that just happened. The EMA is saved
        # with each checkpoint (finetune/distill.py keep_ema_state), so a resumed run folds in the same steps.
        if self.ema is None or step == self._ema_step:
            return
        m = min(self.kd.ema, (1 + step) / (10 + step))  # a short warm-up, as in Tarvainen & Valpola
        for e, s in zip(self.ema.state_dict().values(), self.student.state_dict().values()):
            if e.dtype.is_floating_point:
                e.mul_(m).add_(s.detach(), alpha=1 - m)
            else:
                e.copy_(s)
        self._ema_step = step

    @torch.no_grad()
    def teacher_probs(self, x: torch.Tensor) -> torch.Tensor:
        """The EMA teacher's probabilities ``[N, K, H, W]`` for pool views ``x`` ``[N, C, H, W]``. With
        ``kd.teacher_flip``, the mean over the view and its horizontal mirror (mapped back): a left hand is a
        right hand mirrored, and training flips half the samples, so both readings are in-distribution; the
        averaged target is flip-equivariant and less noisy, for one more teacher forward (no backward)."""
        p = torch.sigmoid(self.ema(x).float())
        if self.kd.teacher_flip:
            p = 0.5 * (p + torch.sigmoid(self.ema(x.flip(-1)).float()).flip(-1))
        return p

    def expert_share(self, step: int) -> float:
        """Share of the experts' stored targets in the pool target at ``step``: ``kd.expert_blend`` fading linearly
        to 0 at the last step."""
        return self.kd.expert_blend * max(0.0, 1.0 - step / max(1, self.steps))

    def blend_experts(self, stored: torch.Tensor, online: torch.Tensor, keep: torch.Tensor, step: int):
        """Pool targets ``[N, K, H, W]`` and ``keep`` ``[N, K]`` under a mean teacher: the EMA teacher's ``online``
        probabilities, blended with the experts' ``stored`` targets by ``expert_share`` (co-supervision with an
        improving teacher). Where denoising dropped a bone's expert target (``keep`` False) the EMA teacher's
        reading stands alone, so every pool bone keeps a target."""
        b = self.expert_share(step)
        if b <= 0:
            return online, keep
        kept = keep.bool()[:, :, None, None]
        return torch.where(kept, b * stored + (1 - b) * online, online), torch.ones_like(keep)

    # ------------------------------------------------------------------ batch -> inputs, targets
    def inputs(self, batch, keys, step):
        x = batch["image"].float().div_(255)
        lab = batch["labelled"].to(x.device).bool()
        gt = unpack(batch["words"], self.k).to(x.device).float()
        teacher = batch["teacher"].to(x.device).float()
        y = torch.where(lab.view(-1, 1, 1, 1), gt, teacher)
        x, y, _ = augment(x, y, keys, self.aug, None, self.paste)
        pool = ~lab
        keep = batch["keep"].to(x.device)
        if self.ema is not None and pool.any():  # the mean teacher labels the pool on the weak view
            self._update_ema(step)
            y[pool], keep[pool] = self.blend_experts(y[pool], self.teacher_probs(x[pool]), keep[pool], step)
        ignore = torch.zeros_like(y, dtype=torch.bool)
        if pool.any():
            ignore[pool] = pool_ignore(y[pool], keep[pool], self.kd)  # on the soft probabilities
            if self.kd.hard:
                y[pool] = (y[pool] > 0.5).float()
            if self.kd.strong:
                pk = [k for k, p in zip(keys, pool.tolist()) if p]
                xs, ys, igs = cutmix_pool(strong_view(x[pool], pk), y[pool], ignore[pool], pk)
                x, y, ignore = x.clone(), y.clone(), ignore.clone()
                x[pool], y[pool], ignore[pool] = xs, ys, igs
        if self.kd.bcp:
            x, y, ignore, gt = bcp_mix(x, y, ignore, lab, keys, self.kd.bcp_size)
        else:
            gt = lab.view(-1, 1, 1, 1).expand(x.shape[0], 1, *x.shape[-2:])
        return x, {"y": y, "ignore": ignore, "labelled": lab, "gt": gt}

    def _run(self, model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``model(x)`` as (logits ``[B, K, H, W]``, the feature-perturbed stream's logits or None): the hook doubles
        the decoder's batch only with ``kd.fp`` in training."""
        self._fp_on = self.kd.fp > 0 and model.training
        try:
            out = model(x)
        finally:
            self._fp_on = False
        b = x.shape[0]
        return out[:b], (out[b:] if out.shape[0] > b else None)

    def forward(self, model, x: torch.Tensor, targets: dict) -> torch.Tensor:
        """The student's logits ``[B, K, H, W]``; with ``kd.separate_bn`` the labelled and the pool part of the batch
        go through the model apart, so batch-norm statistics of one part never normalise the other. With ``kd.fp``
        the perturbed stream's logits are left in ``targets["fp"]`` for the loss."""
        lab = targets["labelled"]
        if not self.kd.separate_bn or lab.all() or not lab.any():
            logits, fp = self._run(model, x)
        else:
            (out_l, fp_l), (out_p, fp_p) = self._run(model, x[lab]), self._run(model, x[~lab])

            def merged(a, b):  # the two parts back in batch order
                m = a.new_empty((x.shape[0], *a.shape[1:]))
                m[lab], m[~lab] = a, b
                return m

            logits, fp = merged(out_l, out_p), (None if fp_l is None else merged(fp_l, fp_p))
        if fp is not None:
            targets["fp"] = fp
        return logits

    def alpha(self, step: int) -> float:
        warm = max(1, int(self.kd.alpha_warmup * self.steps))
        return self.kd.confidence * min(1.0, step / warm)

    def loss(self, logits, t, step):
        # Per pixel, ``gt`` says who teaches it: the ground truth or the teacher. Without copy-paste a sample is
        # all one or all the other, and this is the per-sample split it always was.
        gt = t.get("gt")
        if gt is None:
            gt = t["labelled"].view(-1, 1, 1, 1).expand(logits.shape[0], 1, *logits.shape[-2:])
        lab = gt.flatten(1).any(1)  # samples with ground-truth pixels
        # Zero that is still a function of the logits: a process whose share of the batch has no loss term (all pool
        # images in the pooloff control) must still backpropagate, or its gradient all-reduce never happens.
        total = logits.sum() * 0.0
        if lab.any():  # ground truth: a mean over those samples, at full weight whatever their share
            g = gt[lab]
            ig = None if bool(g.all()) else (~g).expand_as(t["y"][lab])
            total = total + self.kd.weight_gt * self.seg(logits[lab], t["y"][lab], ig)
        pool = ~gt.flatten(1).all(1)  # samples with teacher pixels
        w = self.kd.weight_kd * sigmoid_ramp(step, self.steps, self.kd.rampup)
        if pool.any() and w > 0:
            y, ig = t["y"][pool], t["ignore"][pool] | gt[pool]
            kd = self.pool_term(logits[pool], y, ig, step)
            if "fp" in t:  # UniMatch: the perturbed stream learns the same teacher pixels, with its share of the weight
                kd = (1 - self.kd.fp) * kd + self.kd.fp * self.pool_term(t["fp"][pool], y, ig, step)
            total = total + w * kd
        return total

    def pool_term(self, lg, y, ig, step):
        """The loss of student logits ``lg`` against teacher probabilities ``y`` (``[N, K, H, W]``) where ``ig`` is
        False. Bones are a few percent of the pixels: a pixel-mean KD alone lets "no bone anywhere" win, so a soft
        Dice against the teacher's probabilities joins it, as the Dice term does for the ground truth."""
        if self.kd.confidence > 0:
            kd = confidence(lg, y, self.alpha(step), ig)
        else:
            kd = kd_binary(lg, y, self.kd.temperature, ig)
        kd = kd + soft_dice(lg, y, ig)
        if self.kd.channel_wise > 0:
            teacher_logits = torch.logit(y.clamp(1e-4, 1 - 1e-4))
            kd = kd + self.kd.channel_wise * channel_wise(lg, teacher_logits, 4.0, ig.all(-1).all(-1))
        return kd
