"""Distil the experts into one 2.5D student: ground truth on labelled images, expert targets on the pool.

    accelerate launch finetune/distill.py experts=runs/experts/<run> [rounds=2] [grow=[resnet18,resnet34]]
        [model.init=runs/pretrain/<run>/encoder.safetensors] [report.baseline=... report.ceiling=...]
    accelerate launch finetune/distill.py kd.ema=0.99 kd.strong=true labels.fraction=0.05   # mean teacher

Each round: assign teachers (shards: by the current student's embedding) -> label the pool -> denoise (keep, per
bone, the targets the previous round's student finds most plausible) -> train a student with the shared loop.
The losses and semi-supervised switches are in :mod:`finetune.distill_task`. The student of each round is its
last checkpoint (never the best on the validation fold, which is the fold reported). Writes per-bone
report.csv/report.md with PGR when a ceiling is given.
"""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from accelerate.utils import set_seed
from omegaconf import OmegaConf

from bonekit import checkpoint, config, metrics
from bonekit.accel import make_accelerator
from bonekit.cli import run
from bonekit.config import DataConfig, LabelsConfig
from bonekit.engine import check_config, prepare_training
from bonekit.errors import ConfigError, DataError
from bonekit.loop import LoopConfig, fit, validate
from bonekit.metrics import summarise
from bonekit.models import (
    ModelConfig,
    build_segmenter,
    init_from_model,
    load_model,
    model_meta,
    read_model_meta,
    segmentation_choices,
)
from bonekit.runlog import start_run
from bonekit.seg_augment import SegAugConfig
from bonekit.segdata import setup
from cosup.manifest import Manifest, PoolTargets
from cosup.targets import make_targets, shard_centroids
from cosup.teachers import TeacherModule, Teachers, student_shard_fn
from finetune.distill_task import DistillFrames, DistillTask, KDConfig, check_kd


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
    kd_student: str = ""  # a student checkpoint that denoises round 0's targets (e.g. a self-trained student)
    student_init: str = ""  # a segmentation checkpoint every round's student starts from (e.g. the labelled-only
    # student: a warm start, as BCP and mean teachers do); "" = model.init
    labels: LabelsConfig = field(default_factory=LabelsConfig)  # only without experts (mean teacher)
    aug: SegAugConfig = field(default_factory=SegAugConfig)
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(steps=150, eval_every=0))
    loss: str = "bce_dice"
    report: ReportConfig = field(default_factory=ReportConfig)
    eval_resolution: int = 0
    precision: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | bf16 (fp32 on a CPU without hardware bf16) | fp16 | no
    run_dir: str = ""
    resume: str = ""  # "" | auto | a run folder (or a checkpoint inside it): every model continues where it stopped
    allow_changed: bool = False  # resume even though the config differs from the saved one


def main(argv: list[str] | None = None) -> Path:
    cfg = config.load(DistillConfig, sys.argv[1:] if argv is None else argv)
    check_config(cfg.loop, "loop")
    config.check_choices(cfg, segmentation_choices())
    check_kd(cfg.kd)
    manifest = None
    if cfg.experts:
        manifest, _ = Manifest.read(cfg.experts)
        # The student sees the same data, folds and label subset as the experts.
        cfg.data = OmegaConf.merge(cfg.data, {k: v for k, v in manifest.data.items() if k != "resolution"})
        lab = manifest.labels
        if cfg.kd.ema > 0 and cfg.kd.expert_blend == 0:
            raise ConfigError("experts= with kd.ema > 0: the mean teacher's targets would replace the experts' "
                              "and leave them unused; set kd.expert_blend > 0 to blend them in, or drop experts=")
    elif cfg.kd.ema > 0 or cfg.kd.weight_kd == 0:
        # A mean teacher needs no experts, nor does the pooloff control: the pool is the training folds' rest
        # (and data.pool_root's images).
        lab = cfg.labels
    else:
        raise ConfigError("experts=<experts run folder> is required (or kd.ema>0 for a mean teacher, or "
                          "kd.weight_kd=0 for the no-pool-loss control)")
    cfg.run_dir = checkpoint.find_resume_run(cfg.resume, cfg.run_dir, "distill")
    accelerator = make_accelerator(cfg.precision)
    run_dir = start_run(cfg, "distill", accelerator)
    d = setup(cfg.data, accelerator, lab, cfg.eval_resolution)
    if manifest and (sorted(d.labelled.tolist()) != sorted(manifest.labelled)
                     or sorted(d.pool.tolist()) != sorted(manifest.pool)
                     or len(d.cache) != len(set(manifest.train) | set(manifest.val) | set(manifest.pool))):
        raise ValueError(f"the student's data differs from the experts' (label subset of fraction {lab['fraction']}, "
                         f"seed {lab['seed']}): use the same data.root and data.phantom settings")
    k = len(d.classes)
    student_path = cfg.kd_student  # a previous student for denoising round 0 ("" = none)
    for r in range(cfg.rounds):
        rdir = run_dir / f"round{r}"
        if (rdir / "last.safetensors").is_file():
            accelerator.print(f"round {r}: done, skipped")
            student_path = str(rdir / "last.safetensors")
            continue
        if manifest is not None:
            tdir = rdir / "targets"
            if not (tdir / "targets.json").is_file():
                with accelerator.main_process_first():
                    if accelerator.is_main_process:
                        denoiser = student_path if cfg.kd.denoise or manifest.partition == "shards" else ""
                        make_targets(manifest, tdir, denoiser, cfg.kd.min_keep, device=accelerator.device)
            pt = PoolTargets.open(tdir)
            frames, targets, keep = pt.index["frames"], pt.targets, pt.keep
            accelerator.print(f"round {r}: {len(frames)} pool images, kept share "
                              f"{np.mean(list(pt.index['kept_share'].values())):.2f} (per bone in "
                              f"{tdir / 'kept_share.csv'})")
        else:  # mean teacher (targets from the EMA model during training) or no pool loss
            frames = d.pool.tolist()
            targets, keep = None, np.ones((len(frames), k), bool)
        acc = make_accelerator(cfg.precision)
        set_seed(cfg.loop.seed + 1000 * r)  # each round's initial weights depend on its number only (resume-safe)
        mcfg = OmegaConf.merge(cfg.model, {"encoder": cfg.grow[r]} if r < len(cfg.grow) else {})
        model = build_segmenter(mcfg, cfg.data.slices, k, acc.device)
        if cfg.student_init:
            init_classes = read_model_meta(cfg.student_init)["classes"]
            missing = [c for c in d.classes if c not in init_classes]
            if missing:
                raise DataError(cfg.student_init, f"student_init predicts no {missing[:3]}: it must cover the data's "
                                                  "classes")
            init_from_model(model, cfg.student_init, [init_classes.index(c) for c in d.classes])
        task = DistillTask(k, OmegaConf.to_object(cfg.aug), d.classes, OmegaConf.to_object(cfg.kd), cfg.loss,
                           cfg.loop.steps)
        task.attach(model)  # before prepare: the EMA teacher is a plain copy of the student
        model, opt = prepare_training(acc, model, cfg.loop, cfg.loop.channels_last, cfg.loop.compile)
        task.student = acc.unwrap_model(model)
        ds = DistillFrames(d.cache, d.labelled, frames, targets, keep, cfg.data.slices, cfg.kd.labelled_share, k)
        meta = model_meta(mcfg, cfg.data.slices, d.classes, cfg.data.resolution, config.to_dict(cfg), round=r)
        resume_from = checkpoint.latest(rdir) if cfg.resume else None
        if task.ema is not None:
            keep_ema_state(acc, task.ema, resume_from)
        res = fit(acc, model, opt, ds, d.val, task, cfg.loop, rdir, resume_from, d.classes, meta, config.to_dict(cfg))
        if res.steps < cfg.loop.steps:
            accelerator.print(f"round {r} stopped at step {res.steps} (loop.stop_at_step); resume=auto continues it")
            return run_dir
        # The last weights, never the best on the validation fold: that fold is the one reported.
        student_path = str(rdir / "last.safetensors")
        checkpoint.prune_finished(rdir, accelerator)
    if accelerator.is_main_process:
        report(cfg, manifest, d, student_path, run_dir, accelerator)
    return run_dir


def keep_ema_state(acc, ema, resume_from: Path | None) -> None:
    """Save the EMA teacher with every checkpoint and restore it on resume, so a resumed mean-teacher or BCP run
    continues with the teacher it had (rebuilt from the student, it would label the pool differently from the
    unbroken run). A checkpoint written before the teacher was saved has none: the teacher is then rebuilt from
    the resumed student's initial weights, and the run says so."""
    if resume_from is not None and not (Path(resume_from) / "custom_checkpoint_0.pkl").is_file():
        acc.print(f"warning: {resume_from} holds no EMA teacher (written by an older bonekit): the teacher restarts "
                  "from the student's initial weights, so this run will not reproduce an unbroken one")
        return
    acc.register_for_checkpointing(ema)


def report(cfg, manifest, d, student_path: str, run_dir: Path, accelerator) -> None:
    """Per-bone validation Dice of every expert, the assembled teacher, the student and the comparisons; PGR."""
    from torch.utils.data import DataLoader

    device = accelerator.device
    k = len(d.classes)
    loader = DataLoader(d.val, batch_size=cfg.loop.val_batch_size)

    def score(model) -> np.ndarray:
        # Main process only, on a plain loader: no gather (the other processes have finished).
        return summarise(validate(accelerator, model.to(device), loader, k, list(range(k)), gather=False))[0]

    rows: dict[str, np.ndarray] = {}
    student, _ = load_model(student_path, d.classes)
    if manifest is not None:  # the experts and the teacher they make together (none for a mean teacher)
        for e in manifest.experts:  # experts on their own bones (NaN elsewhere)
            v = np.full(k, np.nan)
            idx = [d.classes.index(c) for c in e.classes]
            v[idx] = e.val_per_class if e.val_per_class else np.nan
            rows[f"expert:{e.name}"] = v
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
    has_pgr = "ceiling" in rows and "teacher" in rows
    pgr = metrics.pgr(rows["student"], rows["teacher"], rows["ceiling"], min_gap=0.05) if has_pgr else None
    pgr_of_means = None
    if has_pgr:
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
    lines = metrics.per_bone_markdown(rows, d.classes, digits=3)
    if pgr is not None:
        pm = "undefined" if pgr_of_means is None else f"{pgr_of_means:.3f}"
        lines.append(f"| PGR (of the means; per bone where ceiling - teacher > 0.05) | {pm} | "
                     + " | ".join("" if np.isnan(x) else f"{x:.2f}" for x in pgr) + " |")
    (run_dir / "report.md").write_text("\n".join(lines) + "\n")
    for n, v in rows.items():
        print(f"{n:24s} mean Dice {np.nanmean(v):.4f}")
    if pgr is not None:
        print(f"{'PGR of the mean Dice':24s} " + ("undefined: the ceiling does not beat the teacher"
                                                  if pgr_of_means is None else f"{pgr_of_means:.4f}"))
    print(f"report -> {run_dir / 'report.md'}")


if __name__ == "__main__":
    run(main)
