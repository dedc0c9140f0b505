"""Distil the experts into one 2.5D student: ground truth on labelled images, expert targets on the pool.

    accelerate launch finetune/distill.py experts=runs/experts/<run> [rounds=2] [grow=[resnet18,resnet34]]
        [model.init=runs/pretrain/<run>/encoder.safetensors] [report.baseline=... report.ceiling=...]

Each round: assign teachers (shards: by the current student's embedding) -> label the pool -> denoise (keep, per
bone, the share of images where teacher and student agree most) -> train a student with the shared loop.
Losses on the pool: per-channel binary KD with a temperature, the weak-to-strong auxiliary confidence loss
``(1-a) BCE(student, teacher) + a BCE(student, hardened student)`` with ``a`` warmed up, optional channel-wise
distillation; ignore masks honoured. Writes per-bone report.csv/report.md with PGR when a ceiling is given.
"""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import set_seed
from omegaconf import OmegaConf
from torch.utils.data import Dataset

from bonekit import checkpoint, config, metrics
from bonekit.accel import make_accelerator
from bonekit.cli import run
from bonekit.config import DataConfig
from bonekit.datasets import CachedFrames
from bonekit.engine import prepare_training
from bonekit.loop import LoopConfig, fit, validate
from bonekit.losses import (
    channel_wise,
    confidence,
    kd_binary,
    segmentation_loss,
    soft_dice,
)
from bonekit.maskbits import unpack
from bonekit.metrics import summarise
from bonekit.models import ModelConfig, build_segmenter, load_model
from bonekit.runlog import start_run
from bonekit.seg_augment import SegAugConfig, augment, paste_indices
from bonekit.segdata import setup
from cosup.manifest import Manifest, PoolTargets
from cosup.targets import make_targets, shard_centroids
from cosup.teachers import TeacherModule, Teachers, student_shard_fn


@dataclass
class KDConfig:
    temperature: float = 1.0
    weight_gt: float = 1.0  # labelled images: segmentation loss on the ground truth
    weight_kd: float = 1.0  # pool: binary KD + soft Dice against the teacher
    labelled_share: float = 0.5  # share of each epoch drawn from the labelled images (repeated as needed)
    confidence: float = 0.5  # final alpha of the auxiliary confidence loss (0 = off)
    confidence_weight: float = 1.0
    alpha_warmup: float = 0.5  # share of the steps over which alpha rises from 0
    channel_wise: float = 0.0  # weight of channel-wise distillation (0 = off)
    denoise: bool = True  # from round 1 on (round 0 has no student to agree with)
    min_keep: float = 0.5


@dataclass
class ReportConfig:
    baseline: str = ""  # student trained on the labelled subset alone (finetune/train.py)
    ceiling: str = ""  # the same student with every label
    generalist: str = ""  # a student distilled the same way from one generalist teacher


@dataclass
class DistillConfig:
    experts: str = ""  # experts run folder (cosup/experts.py)
    data: DataConfig = field(default_factory=lambda: DataConfig(resolution=128))
    model: ModelConfig = field(default_factory=ModelConfig)
    grow: list[str] = field(default_factory=list)  # encoder per round (weak -> strong); empty = model.encoder
    rounds: int = 1
    kd: KDConfig = field(default_factory=KDConfig)
    aug: SegAugConfig = field(default_factory=SegAugConfig)
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(steps=150, eval_every=0))
    loss: str = "bce_dice"
    report: ReportConfig = field(default_factory=ReportConfig)
    eval_resolution: int = 0
    precision: str = "auto"
    run_dir: str = ""
    resume: str = ""  # "" | auto | a run folder (or a checkpoint inside it): every model continues where it stopped


class DistillFrames(Dataset):
    """CachedFrames items plus ``teacher`` (uint8 [K, R, R], zeros on labelled frames) and ``keep`` ([K] bool)."""

    def __init__(self, cache, labelled, pool_frames, targets, keep, slices, labelled_share: float = 0.0):
        # A few labelled images among many pool images would be drowned out: repeat them up to labelled_share
        # of the epoch. Each repeat gets its own augmentation key (index + repeat * 10**7).
        lab = list(labelled)
        reps = 1
        if labelled_share > 0 and lab and pool_frames:
            reps = max(1, round(labelled_share / (1 - labelled_share) * len(pool_frames) / len(lab)))
        self.frames = lab * reps + list(pool_frames)
        self.repeat = [r for r in range(reps) for _ in lab] + [0] * len(pool_frames)
        self.base = CachedFrames(cache, self.frames, slices)
        self.row = {int(f): i for i, f in enumerate(pool_frames)}
        self.labelled = set(int(f) for f in labelled)
        self.targets, self.keep = targets, keep
        self.k, self.r = targets.shape[1], cache.resolution
        self.indices = self.base.indices
        # Experts may work at a lower resolution than the student (weak-to-strong): targets are resized here.
        self.resize = targets.shape[-1] != self.r

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        item = self.base[i]
        f = item["index"]
        item["index"] = f + self.repeat[i] * 10_000_000
        if f in self.labelled:
            item["teacher"] = torch.zeros(self.k, self.r, self.r, dtype=torch.uint8)
            item["keep"] = torch.ones(self.k, dtype=torch.bool)
        else:
            # The cache holds labels for every training image; the pool's must never reach the student.
            item["labelled"] = False
            item["words"] = torch.zeros_like(item["words"])
            t = np.array(self.targets[self.row[f]])
            if self.resize:
                import cv2

                t = np.stack([cv2.resize(c, (self.r, self.r), interpolation=cv2.INTER_LINEAR) for c in t])
            item["teacher"] = torch.from_numpy(t)
            item["keep"] = torch.from_numpy(self.keep[self.row[f]].copy())
        return item


class DistillTask:
    def __init__(self, k: int, aug: SegAugConfig, classes: list[str], kd: KDConfig, loss: str, steps: int):
        self.k, self.aug, self.kd, self.steps = k, aug, kd, steps
        self.paste = paste_indices(aug, classes)
        self.out_classes = list(range(k))
        self.seg = segmentation_loss(loss)

    def inputs(self, batch, keys, step):
        x = batch["image"].float().div_(255)
        lab = batch["labelled"].to(x.device).bool()
        gt = unpack(batch["words"], self.k).to(x.device).float()
        teacher = batch["teacher"].to(x.device).float().div_(255)
        y = torch.where(lab.view(-1, 1, 1, 1), gt, teacher)
        ignore = (~batch["keep"].to(x.device).bool())[:, :, None, None].expand_as(y).contiguous()
        x, y, ignore = augment(x, y, keys, self.aug, ignore, self.paste)
        return x, {"y": y, "ignore": ignore, "labelled": lab}

    def alpha(self, step: int) -> float:
        warm = max(1, int(self.kd.alpha_warmup * self.steps))
        return self.kd.confidence * min(1.0, step / warm)

    def loss(self, logits, t, step):
        lab = t["labelled"]
        n = len(lab)
        total = logits.new_zeros(())
        if lab.any():  # ground truth, as a mean over the labelled samples weighted by their share
            total = total + self.kd.weight_gt * self.seg(logits[lab], t["y"][lab]) * lab.sum() / n
        pool = ~lab
        if pool.any():
            lg, y, ig = logits[pool], t["y"][pool], t["ignore"][pool]
            # Bones are a few percent of the pixels: a pixel-mean KD alone lets "no bone anywhere" win, so a soft
            # Dice against the teacher's probabilities joins it, as the Dice term does for the ground truth.
            kd = self.kd.weight_kd * (kd_binary(lg, y, self.kd.temperature, ig) + soft_dice(lg, y, ig))
            if self.kd.confidence > 0:
                kd = kd + self.kd.confidence_weight * confidence(lg, y, self.alpha(step), ig)
            if self.kd.channel_wise > 0:
                teacher_logits = torch.logit(y.clamp(1e-4, 1 - 1e-4))
                kd = kd + self.kd.channel_wise * channel_wise(lg, teacher_logits, 4.0, ig.any(-1).any(-1))
            total = total + kd * pool.sum() / n
        return total


def main(argv: list[str] | None = None) -> Path:
    cfg = config.load(DistillConfig, sys.argv[1:] if argv is None else argv)
    manifest, mpath = Manifest.read(cfg.experts)
    # The student sees the same data, folds and label subset as the experts.
    cfg.data = OmegaConf.merge(cfg.data, {k: v for k, v in manifest.data.items() if k != "resolution"})
    cfg.run_dir = checkpoint.find_resume_run(cfg.resume, cfg.run_dir, "distill")
    accelerator = make_accelerator(cfg.precision)
    run_dir = start_run(cfg, "distill", accelerator)
    lab = manifest.labels
    d = setup(cfg.data, accelerator, lab["fraction"], lab["seed"], cfg.eval_resolution)
    if sorted(d.labelled.tolist()) != sorted(manifest.labelled) or len(d.cache) != len(manifest.train) + len(manifest.val):
        raise ValueError(f"the student's data differs from the experts' (label subset of fraction {lab['fraction']}, "
                         f"seed {lab['seed']}): use the same data.root and data.phantom settings")
    k = len(d.classes)
    student_path = ""
    for r in range(cfg.rounds):
        rdir = run_dir / f"round{r}"
        if (rdir / "last.safetensors").is_file():
            accelerator.print(f"round {r}: done, skipped")
            student_path = str(rdir / "best.safetensors")
            continue
        tdir = rdir / "targets"
        if not (tdir / "targets.json").is_file():
            with accelerator.main_process_first():
                if accelerator.is_main_process:
                    make_targets(manifest, tdir, student_path if (r > 0 and cfg.kd.denoise) or
                                 manifest.partition == "shards" else "", cfg.kd.min_keep, device=accelerator.device)
        pt = PoolTargets.open(tdir)
        index, targets, keep = pt.index, pt.targets, pt.keep
        accelerator.print(f"round {r}: {len(index['frames'])} pool images, kept share "
                          f"{np.mean(list(index['kept_share'].values())):.2f} (per bone in {tdir / 'kept_share.csv'})")
        acc = make_accelerator(cfg.precision)
        set_seed(cfg.loop.seed + 1000 * r)  # each round's initial weights depend on its number only (resume-safe)
        mcfg = OmegaConf.merge(cfg.model, {"encoder": cfg.grow[r]} if r < len(cfg.grow) else {})
        model = build_segmenter(mcfg, cfg.data.slices, k, acc.device)
        model, opt = prepare_training(acc, model, cfg.loop, cfg.loop.channels_last, cfg.loop.compile)
        ds = DistillFrames(d.cache, d.labelled, index["frames"], targets, keep, cfg.data.slices, cfg.kd.labelled_share)
        task = DistillTask(k, OmegaConf.to_object(cfg.aug), d.classes, cfg.kd, cfg.loss, cfg.loop.steps)
        meta = {"arch": mcfg.arch, "encoder": mcfg.encoder, "in_channels": cfg.data.slices, "classes": d.classes,
                "resolution": cfg.data.resolution, "config": config.to_dict(cfg), "round": r}
        resume_from = checkpoint.latest(rdir) if cfg.resume else None
        res = fit(acc, model, opt, ds, d.val, task, cfg.loop, rdir, resume_from, d.classes, meta, config.to_dict(cfg))
        if res.steps < cfg.loop.steps:
            accelerator.print(f"round {r} stopped at step {res.steps} (loop.stop_at_step); resume=auto continues it")
            return run_dir
        student_path = str(rdir / "best.safetensors")
    if accelerator.is_main_process:
        report(cfg, manifest, d, student_path, run_dir, accelerator)
    return run_dir


def report(cfg, manifest, d, student_path: str, run_dir: Path, accelerator) -> None:
    """Per-bone validation Dice of every expert, the assembled teacher, the student and the comparisons; PGR."""
    from torch.utils.data import DataLoader

    device = accelerator.device
    k = len(d.classes)
    loader = DataLoader(d.val, batch_size=cfg.loop.val_batch_size)

    def score(model) -> np.ndarray:
        return summarise(validate(accelerator, model.to(device), loader, k, list(range(k))))[0]

    rows: dict[str, np.ndarray] = {}
    for e in manifest.experts:  # experts on their own bones (NaN elsewhere)
        v = np.full(k, np.nan)
        idx = [d.classes.index(c) for c in e.classes]
        v[idx] = e.val_per_class if e.val_per_class else np.nan
        rows[f"expert:{e.name}"] = v
    student, _ = load_model(student_path, d.classes)
    teachers = Teachers(manifest, device)
    shard_fn = None
    if manifest.partition == "shards":
        cents = shard_centroids(student.to(device).eval(), d.cache, manifest, cfg.data.slices // 2, device)
        shard_fn = student_shard_fn(student, cents)
    rows["teacher"] = score(TeacherModule(teachers, shard_fn))
    rows["student"] = score(student)
    for name in ("baseline", "ceiling", "generalist"):
        p = getattr(cfg.report, name)
        if p:
            rows[name] = score(load_model(p, d.classes)[0])
    pgr = metrics.pgr(rows["student"], rows["teacher"], rows["ceiling"], min_gap=0.05) if "ceiling" in rows else None
    pgr_of_means = None
    if "ceiling" in rows:
        pgr_of_means = metrics.pgr_of_means(np.nanmean(rows["student"]), np.nanmean(rows["teacher"]),
                                            np.nanmean(rows["ceiling"]))
    with open(run_dir / "report.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "mean"] + d.classes)
        for name, v in rows.items():
            w.writerow([name, f"{np.nanmean(v):.4f}"] + [("" if np.isnan(x) else f"{x:.4f}") for x in v])
        if pgr is not None:
            # The "mean" column of the PGR row is the PGR of the mean Dice (robust); per bone where the gap > 0.05.
            w.writerow(["PGR", "" if pgr_of_means is None else f"{pgr_of_means:.4f}"] + [("" if np.isnan(x) else f"{x:.4f}") for x in pgr])
    head = ["| model | mean | " + " | ".join(d.classes) + " |", "|---" * (k + 2) + "|"]
    lines = [f"| {n} | {np.nanmean(v):.4f} | " + " | ".join("" if np.isnan(x) else f"{x:.3f}" for x in v) + " |"
             for n, v in rows.items()]
    if pgr is not None:
        pm = "undefined" if pgr_of_means is None else f"{pgr_of_means:.3f}"
        lines.append(f"| PGR (of the means; per bone where ceiling - teacher > 0.05) | {pm} | "
                     + " | ".join("" if np.isnan(x) else f"{x:.2f}" for x in pgr) + " |")
    (run_dir / "report.md").write_text("\n".join(head + lines) + "\n")
    for n, v in rows.items():
        print(f"{n:24s} mean Dice {np.nanmean(v):.4f}")
    if pgr is not None:
        print(f"{'PGR of the mean Dice':24s} " + ("undefined: the ceiling does not beat the teacher"
                                                  if pgr_of_means is None else f"{pgr_of_means:.4f}"))
    print(f"report -> {run_dir / 'report.md'}")


if __name__ == "__main__":
    run(main)
