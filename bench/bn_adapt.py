"""How much of a student's Dice is its batch-norm statistics? Re-estimate them on the unlabelled images and score again.

    python bench/bn_adapt.py runs/study/lowlabel/scratch/finetune/f0.05/s{0,1,2}/last.safetensors --out runs/bn_adapt

A labelled-only student's batch-norm layers hold running means and variances of its five labelled images (augmented),
while a semi-supervised loop also passes pool images through the model in training mode, so its statistics describe
the whole training distribution even with no loss on the pool (the ``pooloff`` control). This script separates that
effect from anything learnt: per checkpoint, the running statistics are recomputed (a plain average over batches, no
weight changes) on the checkpoint's own training images, labelled and pool, at the training resolution without
augmentation (AdaBN, Li et al. 2016), the model is saved beside and both are scored on the validation fold with
``finetune/evaluate.py``. Prints one markdown row per checkpoint.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import torch
from pool_targets import checkpoint_split  # bench/ is the script's folder

from bonekit.models import load_model, save_model


@torch.no_grad()
def recompute_bn(model: torch.nn.Module, images: np.ndarray, batch: int = 16) -> int:
    """Reset every batch-norm layer of ``model`` and re-estimate its running statistics on ``images`` (uint8
    ``[N, C, H, W]``) as the plain average over batches of ``batch``; the weights are untouched. Returns the
    number of layers reset. The model is left in eval mode."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches that follow
    model.train()
    for j in range(0, len(images), batch):
        model(torch.from_numpy(images[j:j + batch]).float().div_(255))
    for m in bns:
        m.momentum = 0.1
    model.eval()
    return len(bns)


def mean_dice(checkpoint: Path, out: Path) -> float:
    from finetune.evaluate import main as evaluate

    if not (out / "per_bone.csv").is_file():
        evaluate([f"checkpoint={checkpoint}", f"out_dir={out}", "split=val", "worst_k=0"])
    with open(out / "per_bone.csv") as f:  # evaluate.py's table: class, dice
        return float(np.mean([float(r["dice"]) for r in csv.DictReader(f)]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoints", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True, help="where the re-estimated models and their scores go")
    a = ap.parse_args()
    torch.set_num_threads(1)  # a diagnostic beside training runs: one core
    print("| checkpoint | training images | BN layers | Dice as trained | Dice with BN re-estimated | difference |")
    print("|---|---|---|---|---|---|")
    for i, ck in enumerate(a.checkpoints):
        sd, data = checkpoint_split(str(ck))
        half = data.slices // 2
        images = np.stack([sd.cache.read(j, half)[0] for j in sorted({*sd.labelled, *sd.pool})])
        model, meta = load_model(ck)
        n = recompute_bn(model, images)
        dst = a.out / f"{i}"
        adapted = save_model(dst / "adabn.safetensors", model, {**meta, "bn_adapted_on": len(images)})
        before, after = mean_dice(ck, dst / "eval_as_trained"), mean_dice(adapted, dst / "eval_adabn")
        print(f"| {ck} | {len(images)} | {n} | {before:.4f} | {after:.4f} | {after - before:+.4f} |", flush=True)


if __name__ == "__main__":
    main()
