"""The per-bone gate of co-supervision: a bone's specialist targets are used only where its specialist beats the
generalist by cross-validation on the labelled images, never judged on the validation fold every report scores.

    accelerate launch cosup/experts.py partition.generalist=<labelled-only student> gate.folds=5 \
        gate.generalist_steps=<its schedule>

For each of ``gate.folds`` folds of the labelled images (at most one per image: leave-one-out): a generalist trained
from ``model.init`` on the other folds (``gate.generalist_steps``, the labelled-only student's schedule), and the
specialists fine-tuned from it exactly as in the main run (``loop.steps``, same groups); both are scored per
(held-out image, bone) at the training resolution. A bone's specialist is used where its mean held-out Dice beats
the generalist's by more than ``gate.margin``; elsewhere the pool targets of that bone come from
``partition.generalist`` (the teachers read the decision from the manifest, ``experts.json``; the figures are in
``gate.json``). Cost: ``folds`` x (generalist + specialists) on top of the main experts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from bonekit.errors import ConfigError


@dataclass
class GateConfig:
    folds: int = 0  # 0: no gate, every specialist used; K >= 2: K-fold CV on the labelled images (at most one per image)
    generalist_steps: int = 0  # the fold generalists' schedule (0: loop.steps); give it the labelled-only student's
    margin: float = 0.0  # a specialist must beat the generalist's held-out Dice by more than this


def check(cfg) -> None:
    """Fail before any data is read where the gate cannot run with the rest of the experts' config."""
    if not cfg.gate.folds:
        return
    if cfg.partition.by != "bones":
        raise ConfigError("gate.folds: the gate routes bones; it needs partition.by=bones")
    if cfg.partition.crop_groups:
        raise ConfigError("gate.folds with partition.crop_groups: the gate scores whole-image specialists only")
    if not cfg.partition.generalist:
        raise ConfigError("gate.folds needs partition.generalist=<checkpoint>: the gated-out bones' targets come "
                          "from it")


def fold_split(labelled: list[int], k: int, seed: int) -> list[list[int]]:
    """``k`` disjoint held-out folds covering ``labelled``, a seeded shuffle (the label seed: one split per subset)."""
    order = np.random.default_rng(seed).permutation(np.asarray(labelled, dtype=np.int64))
    return [sorted(order[i::k].tolist()) for i in range(k)]


def decide(generalist: np.ndarray, specialist: np.ndarray, margin: float) -> np.ndarray:
    """Per-(held-out image, bone) Dice ``[N, K]`` of both -> ``bool [K]``: True where the specialist is used."""
    return specialist.mean(0) > generalist.mean(0) + margin


def run_gate(cfg, d, experts: list[dict], run_dir: Path, accelerator, train_expert) -> dict | None:
    """Train and score the fold models under ``run_dir/gate``; returns the manifest's ``gate`` entry
    ``{"use": {bone: bool}, "fallback": checkpoint}`` (None when a fold model stopped early: resume continues)."""
    check(cfg)
    labelled = d.labelled.tolist()
    k = min(cfg.gate.folds, len(labelled))
    if k < 2:
        raise ConfigError(f"gate.folds={cfg.gate.folds}: cross-validation needs at least 2 folds and 2 labelled "
                          f"images ({len(labelled)} labelled)")
    classes = list(d.classes)
    lookup = {c: i for i, c in enumerate(classes)}
    folds = fold_split(labelled, k, cfg.labels.seed)
    slices = cfg.data.slices
    gen_rows, spec_rows = [], []
    for i, held in enumerate(folds):
        train = [f for f in labelled if f not in held]
        fdir = run_dir / "gate" / f"fold{i}"
        g = train_expert(cfg, d, {"name": f"fold{i}-generalist", "classes": classes, "frames": train}, 100 + i,
                         fdir / "generalist", "", None, accelerator, cfg.gate.generalist_steps)
        if g is None:
            return None
        gen = score_frames(accelerator, g["checkpoint"], d, held, list(range(len(classes))), slices, cfg.loop.val_batch_size)
        spec = np.full_like(gen, np.nan)
        for n, e in enumerate(experts):
            r = train_expert(cfg, d, {**e, "name": f"fold{i}-{e['name']}", "frames": train}, n, fdir / e["name"],
                             g["checkpoint"], None, accelerator)
            if r is None:
                return None
            out = [lookup[c] for c in e["classes"]]
            spec[:, out] = score_frames(accelerator, r["checkpoint"], d, held, out, slices, cfg.loop.val_batch_size)
        gen_rows.append(gen)
        spec_rows.append(spec)
    gen, spec = np.concatenate(gen_rows), np.concatenate(spec_rows)
    use = decide(gen, spec, cfg.gate.margin)
    report = {"folds": folds, "margin": cfg.gate.margin, "generalist_steps": cfg.gate.generalist_steps,
              "bones": {c: {"generalist": float(gen[:, j].mean()), "specialist": float(spec[:, j].mean()),
                            "use_specialist": bool(use[j])} for j, c in enumerate(classes)}}
    if accelerator.is_main_process:
        (run_dir / "gate.json").write_text(json.dumps(report, indent=1))
    accelerator.print(f"gate ({k}-fold CV on {len(labelled)} labelled images): specialists used for "
                      f"{int(use.sum())}/{len(classes)} bones; held-out Dice generalist {gen.mean():.4f}, "
                      f"specialists {spec.mean():.4f}; the rest from {cfg.partition.generalist}")
    return {"use": dict(zip(classes, use.tolist())), "fallback": str(Path(cfg.partition.generalist).resolve())}


def score_frames(accelerator, checkpoint: str, d, frames: list[int], out_classes: list[int], slices: int,
                 batch: int) -> np.ndarray:
    """Dice ``[len(frames), len(out_classes)]`` of a checkpoint on training-cache frames, at its resolution."""
    from bonekit.datasets import CachedFrames
    from bonekit.loop import validate
    from bonekit.models import load_model

    model = load_model(checkpoint)[0].to(accelerator.device).eval()
    loader = DataLoader(CachedFrames(d.cache, frames, slices), batch_size=batch)
    return validate(accelerator, model, loader, len(d.classes), out_classes, gather=False)
