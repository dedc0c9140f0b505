"""Rank encoders with the encoder check (selfsup/probe.py: frozen features + a light decoder, Dice on other people).

    python bench/encoder_check.py random runs/pretrain/encoder.safetensors runs/train/last.safetensors
    python bench/encoder_check.py random random --images 16 --steps 300 data.phantom.variation=classic

Each source is ``random`` (a fresh resnet18; repeat it to see the spread over initialisations), an
``encoder.safetensors`` from selfsup/pretrain.py, or a segmentation checkpoint (its encoder). Trailing
``key=value`` are ``data.*`` overrides on the benchmark's data (configs/lowlabel.yaml). Prints one line per source.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bonekit.config import DataConfig  # noqa: E402
from bonekit.models import (  # noqa: E402
    encoder_of,
    load_encoder,
    load_model,
    make_encoder,
    read_encoder_meta,
)
from selfsup.probe import check_images, probe  # noqa: E402


def encoder_from(source: str, name: str, in_channels: int, seed: int) -> torch.nn.Module:
    if source == "random":
        torch.manual_seed(seed)
        return make_encoder(name, in_channels)
    enc = make_encoder(name, in_channels)
    if read_encoder_meta(source).get("format") == "bonekit-model-v1":  # a whole segmentation model: its encoder
        model, _ = load_model(source)
        encoder_of(enc).load_state_dict(encoder_of(model).state_dict())
    else:
        load_encoder(enc, source, name, in_channels)
    return enc


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("sources", nargs="+")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--encoder", default="resnet18")
    args, overrides = ap.parse_known_args(argv)
    bench = OmegaConf.load(ROOT / "configs" / "lowlabel.yaml")
    overrides = OmegaConf.from_dotlist([o.removeprefix("data.") for o in overrides])
    data = OmegaConf.merge(OmegaConf.structured(DataConfig), bench.data, overrides)
    cache, train, test = check_images(data, args.images)
    print(f"encoder check: {len(train)} training / {len(test)} test images (other people), {args.steps} steps, "
          f"{data.resolution} px, phantom variation {data.phantom.variation}")
    randoms = 0
    for src in args.sources:
        enc = encoder_from(src, args.encoder, data.slices, seed=randoms)
        randoms += src == "random"
        t0 = time.time()
        d = probe(enc, cache, train, test, len(data.classes), torch.device("cpu"), args.steps, data.slices)
        print(f"{d:.4f}  {src}{f' (init seed {randoms - 1})' if src == 'random' else ''}  [{time.time() - t0:.0f} s]")


if __name__ == "__main__":
    main()
