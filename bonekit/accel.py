"""The one Accelerator set-up of every stage: the GPU when there is one (bf16 by default), else CPU processes.

``split_batches=True``: the configured batch size is the global batch, split across processes, so a run means the
same thing on one process or many.
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration

PRECISIONS = ("auto", "bf16", "fp16", "no")


# CPU flags of hardware bf16 arithmetic: x86 AVX512-BF16 / AMX, ARM's BF16 extension ("Features: ... bf16").
BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}


@functools.cache
def _cpuinfo() -> str | None:
    path = Path("/proc/cpuinfo")
    return path.read_text(errors="replace") if path.is_file() else None


def cpu_bf16_native(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes bf16 in hardware (``cpuinfo``: the text of /proc/cpuinfo, read when None).

    Where it does not, torch emulates bf16 autocast: measured 25x *slower* than fp32 per training step on an
    AVX2-only EPYC (docs/benchmarks.md). Without /proc/cpuinfo (macOS, Windows) nothing is known: True."""
    cpuinfo = _cpuinfo() if cpuinfo is None else cpuinfo
    return cpuinfo is None or bool(BF16_FLAGS & set(cpuinfo.split()))


@functools.cache  # once per process: the study starts many stages
def _warn_emulated_bf16() -> None:
    warnings.warn("precision=bf16: this CPU has no hardware bf16 (avx512_bf16 / amx_bf16), where torch's emulated "
                  "bf16 ran 25x slower than fp32; running in fp32 instead (numbers differ from a bf16 run's; "
                  "BONEKIT_CPU_BF16=1 keeps bf16)", stacklevel=3)


def resolve_precision(precision: str, cuda: bool | None = None, cpu_bf16: bool | None = None) -> str:
    """``auto`` -> bf16 on a GPU, fp32 ("no") on a CPU; ``bf16`` on a CPU without hardware bf16 -> fp32, with a
    warning (``BONEKIT_CPU_BF16=1`` keeps the emulated bf16); anything else as given (checked).

    ``cuda`` / ``cpu_bf16``: the machine's answers, looked up when None (tests pass them)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: choose one of {list(PRECISIONS)}")
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if precision == "auto":
        return "bf16" if cuda else "no"
    emulated = precision == "bf16" and not cuda and not (cpu_bf16_native() if cpu_bf16 is None else cpu_bf16)
    if emulated and os.environ.get("BONEKIT_CPU_BF16") != "1":
        _warn_emulated_bf16()
        return "no"
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
