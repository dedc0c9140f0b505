"""The one Accelerator set-up of every stage: the GPU when there is one (bf16 by default), else CPU processes.

``split_batches=True``: the configured batch size is the global batch, split across processes, so a run means the
same thing on one process or many.
"""

from __future__ import annotations

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration

PRECISIONS = ("auto", "bf16", "fp16", "no")


def resolve_precision(precision: str) -> str:
    """``auto`` -> bf16 on a GPU, fp32 ("no") on a CPU; anything else as given (checked)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: choose one of {list(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if torch.cuda.is_available() else "no"
    return precision


def make_accelerator(precision: str = "auto") -> Accelerator:
    # cpu=True lets torchrun/accelerate start several CPU processes (gloo) when there is no GPU.
    return Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=resolve_precision(precision),
                       dataloader_config=DataLoaderConfiguration(split_batches=True))
