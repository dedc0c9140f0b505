"""The one Accelerator set-up of every stage: the GPU when there is one (bf16 by default), else CPU processes.

``split_batches=True``: the configured batch size is the global batch, split across processes, so a run means the
same thing on one process or many.
"""

from __future__ import annotations

import os

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
    from accelerate.state import AcceleratorState

    mp = resolve_precision(precision)
    if AcceleratorState._shared_state.get("_mixed_precision", mp) != mp:
        # finetune/study.py runs stages in one process: pretraining in fp32, then students in bf16. accelerate
        # refuses a second precision; the precision part of its state starts afresh, the process group stays.
        AcceleratorState._reset_state()
    # cpu=True lets torchrun/accelerate start several CPU processes (gloo) when there is no GPU.
    acc = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=mp,
                      dataloader_config=DataLoaderConfiguration(split_batches=True))
    if acc.device.type == "cpu":
        set_cpu_threads(acc.num_processes)
    return acc


def set_cpu_threads(processes: int) -> int:
    """Give each CPU process its share of the cores. ``accelerate launch`` sets OMP_NUM_THREADS=1 for every
    process, which leaves all but one core idle when one process runs (measured: 1.47x slower per step at 128 px
    on 2 cores, docs/benchmarks.md). ``BONEKIT_THREADS=N`` overrides."""
    forced = os.environ.get("BONEKIT_THREADS")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n = int(forced) if forced else max(1, cores // max(1, processes))
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
