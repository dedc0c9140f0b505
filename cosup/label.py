"""The experts label the unlabelled pool; teachers are assigned and noisy labels filtered.

    accelerate launch cosup/label.py experts=runs/experts/<run> [student=runs/distill/<run>/round0/best.safetensors]

Writes ``<experts run>/targets/`` (or ``out_dir``): ``targets.f16`` (float16 probabilities ``[N, K, R, R]``),
``keep.npy`` ``[N, K]`` (False = ignore that bone of that image), ``targets.json`` and ``kept_share.csv``.
distill.py makes its own targets each round the same way (:mod:`cosup.targets`); this script is for inspecting
them or labelling with a chosen student.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from bonekit import config
from bonekit.cli import run
from bonekit.models import pick_device
from cosup.manifest import Manifest
from cosup.targets import make_targets


@dataclass
class LabelConfig:
    experts: str = ""  # experts run folder (or its experts.json)
    student: str = ""  # current student checkpoint: re-assignment and denoising ("" = keep everything)
    out_dir: str = ""  # default: <experts run>/targets
    min_keep: float = 0.5  # the smallest share of pool images kept per bone when denoising
    batch: int = 8  # pool images per forward pass
    device: str = "auto"  # auto | cpu | cuda | cuda:N


def main(argv: list[str] | None = None) -> Path:
    cfg = config.load(LabelConfig, sys.argv[1:] if argv is None else argv)
    manifest, mpath = Manifest.read(cfg.experts)
    device = pick_device(cfg.device)
    out = Path(cfg.out_dir) if cfg.out_dir else mpath.parent / "targets"
    index = make_targets(manifest, out, cfg.student, cfg.min_keep, cfg.batch, device)
    print("kept share per bone: " + ", ".join(f"{c} {v:.2f}" for c, v in index["kept_share"].items()))
    print(f"targets for {len(index['frames'])} pool images -> {out}")
    return out


if __name__ == "__main__":
    run(main)
