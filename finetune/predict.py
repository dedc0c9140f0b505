"""Write a submission CSV for a folder of radiographs.

    accelerate launch finetune/predict.py checkpoint=runs/train/<run>/best.safetensors input=data/test output=sub.csv
    accelerate launch finetune/predict.py checkpoints=[a,b] weights=[1,1] tta=hflip thresholds=thresholds.json ...

``input`` is a competition test folder (holding DCM/) or any folder of PNG/JPEG/TIFF/DICOM radiographs. Rows go
image by image, sorted by relative path, K rows each in class order: ``image_name,class,rle`` with basenames
(``_R``/``_L`` kept) and 1-indexed row-major RLE at each image's own size; an empty mask is an empty string.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from bonekit import config
from bonekit.cache import resize_image
from bonekit.cli import run
from bonekit.config import DataConfig
from bonekit.data import resolve_root
from bonekit.errors import DataError
from bonekit.formats.images import find_xrays, read_xray
from bonekit.models import pick_device
from bonekit.submission import SubmissionWriter
from finetune.infer import Predictor, load_config


@dataclass
class PredictConfig:
    data: DataConfig = field(default_factory=DataConfig)  # only used when input is empty: the phantom's test split
    checkpoint: str = ""
    checkpoints: list[str] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    vote: str = "soft"  # soft (weighted mean of probabilities) | hard (>= min_votes models)
    min_votes: int = 0  # hard voting: models that must agree (0: a majority)
    tta: str = "none"  # none | hflip
    thresholds: str = ""
    input: str = ""  # folder of test images ("" -> the embedded phantom's test split)
    output: str = "submission.csv"
    device: str = "auto"


def list_images(root: Path) -> list[Path]:
    """Test images sorted by relative path (the submission's row order)."""
    base = root / "DCM" if (root / "DCM").is_dir() else root
    files = [p for p in find_xrays(base) if p.suffix.lower() not in (".nii", ".gz")]
    if not files:
        raise DataError(root, "no radiographs found")
    return sorted(files, key=lambda p: str(p.relative_to(base)))


def main(argv: list[str] | None = None) -> Path:
    argv = sys.argv[1:] if argv is None else argv
    cfg, cks = load_config(PredictConfig, argv)
    config.check_choices(cfg, {"tta": ["none", "hflip"], "vote": ["soft", "hard"]})
    device = pick_device(cfg.device)
    pred = Predictor(cks, device, list(cfg.weights) or None, cfg.tta, cfg.vote, cfg.min_votes, cfg.thresholds or None)
    if pred.in_channels != 1:
        raise DataError(cks[0], f"a submission is made from radiographs (1 channel); this checkpoint takes {pred.in_channels}")
    root = Path(cfg.input) if cfg.input else resolve_root(cfg.data, "test")
    images = list_images(root)
    r = pred.resolution()
    with SubmissionWriter(cfg.output, pred.classes) as w:
        for p in tqdm(images, desc="predict", unit="img"):
            img = read_xray(p)  # float [H, W] in [0, 1]
            if img.ndim != 2:
                raise DataError(p, f"expected a 2D radiograph, got shape {img.shape}")
            u8 = (img * 255).round().clip(0, 255).astype("uint8")
            x = torch.from_numpy(resize_image(u8, r)).float().div(255)[None, None]
            masks = pred.predict(x, img.shape)
            w.add(p, masks.cpu().numpy())
    print(f"wrote {w.n} images x {len(pred.classes)} classes to {cfg.output}")
    return Path(cfg.output)


if __name__ == "__main__":
    run(main)
