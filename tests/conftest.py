"""Shared fixtures: tiny data folders in the exact competition layout, made by the tests themselves."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests_helpers

from bonekit.classes import HAND29
from bonekit.formats import competition

# Tests never touch the user's cache.
os.environ.setdefault("BONEKIT_CACHE", str(Path(__file__).parent.parent / ".pytest-cache-bonekit"))

# The suite runs in two pytest-xdist workers (pyproject's addopts): one torch thread each, so the two share the
# cores instead of four threads spinning on two (the launched scripts already get one thread each, see launch).
if os.environ.get("PYTEST_XDIST_WORKER"):
    import torch

    os.environ.setdefault("BONEKIT_THREADS", "1")
    torch.set_num_threads(1)


def random_polygons(rng: np.random.Generator, h: int, w: int, classes=HAND29) -> dict[str, np.ndarray]:
    """One random convex-ish polygon per class (dense points, some touching the border)."""
    out = {}
    for i, c in enumerate(classes):
        cy, cx = rng.uniform(0.15, 0.85) * h, rng.uniform(0.15, 0.85) * w
        r = rng.uniform(0.05, 0.15) * min(h, w)
        t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
        pts = np.stack([cx + r * np.cos(t), cy + r * 0.7 * np.sin(t)], 1)
        if i == 0:  # a polygon that touches the bottom border, like the real data (y = H - 1)
            pts[:, 1] = np.clip(pts[:, 1] + h, 0, h - 1)
        out[c] = np.clip(np.round(pts), 0, [w - 1, h - 1]).astype(np.int32)
    return out


def make_competition(root: Path, people: int = 3, size: int = 64, seed: int = 0, labels: bool = True) -> Path:
    """A split folder ``root`` with DCM/ and outputs_json/ (ID001 gets the _R/_L names) and meta_data.xlsx."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(1, people + 1):
        person = f"ID{p:03d}"
        for j in range(2):
            ts = 1661130828152 + 1000 * (2 * p + j)
            name = f"image{ts}" + (("_R", "_L")[j] if p == 1 else "") + ".png"
            img = rng.integers(0, 255, (size, size), dtype=np.uint8)
            competition.write_sample(root, person, name, img, random_polygons(rng, size, size) if labels else None)
        rows.append({"person": person, "age": 30 + p, "sex": "F" if p % 2 else "M", "weight": 60.0, "height": 170.0})
    competition.write_meta(root / "meta_data.xlsx", rows)
    return root


@pytest.fixture
def comp_dir(tmp_path: Path) -> Path:
    return make_competition(tmp_path / "train")


@pytest.fixture
def cache_root(tmp_path: Path) -> Path:
    return tmp_path / "cache"


ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port the OS says is free now: two test workers' torchrun launches never share one."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(script: str, args: list[str], cache: Path, nproc: int = 1, timeout: int = 600) -> str:
    """Run an entry script the way users do: ``accelerate launch`` (1 process) or ``torchrun`` (2 CPU processes).

    Returns the combined output; a non-zero exit fails the test with that output.
    """
    import subprocess

    # One thread per process, whatever the process count: 1-vs-2-process comparisons then differ only in how the
    # batch is split (a different thread count alone reorders float sums by ~1e-5).
    env = {**os.environ, "BONEKIT_CACHE": str(cache), "OMP_NUM_THREADS": "1", "BONEKIT_THREADS": "1",
           "PYTHONUNBUFFERED": "1"}
    if nproc == 1:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(ROOT / script), *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port",
               str(free_port()), str(ROOT / script), *args]
    p = subprocess.run(cmd, cwd=cache.parent, env=env, capture_output=True, text=True, timeout=timeout)
    out = p.stdout + p.stderr
    if p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd[2:4])} {script} failed ({p.returncode}):\n{out[-6000:]}")
    return out


TINY = ["data.phantom.people=4", "data.phantom.test_people=1", "data.phantom.size=96", "data.resolution=64",
        "data.workers=1"]


def one_vs_two_processes(script: str, args: list[str], tmp: Path, weights: str, rtol: float = 1e-5,
                         atol_weights: float = 5e-4) -> None:
    """Run ``script`` with 1 process and with 2 (same global batch); losses and final weights must agree.

    Float tolerance: batch-norm sums and gradients are reduced in another order over two processes; measured
    here, at most ~1e-4 on weights of size ~0.1-1 after two SGD steps.
    """
    import csv

    import numpy as np
    from safetensors.torch import load_file

    cache = tmp / "cache"
    cache.mkdir(exist_ok=True)
    for name, n in (("one", 1), ("two", 2)):
        launch(script, args + [f"run_dir={tmp / name}"], cache, nproc=n)
    losses = [[float(r["loss"]) for r in csv.DictReader(open(tmp / name / "metrics.csv")) if r.get("loss")]
              for name in ("one", "two")]
    assert len(losses[0]) >= 2 and np.allclose(losses[0], losses[1], rtol=rtol), losses
    a, b = (load_file(str(tmp / name / weights)) for name in ("one", "two"))
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert worst < atol_weights, worst


# Tiny experts (cosup/experts.py through accelerate), shared by the cosup and the distillation tests.
COSUP_ARGS = TINY + ["data.folds=2", "loop.batch_size=2", "loop.workers=0", "loop.val_batch_size=2", "loop.log_every=1",
                    "labels.fraction=0.5"]


@pytest.fixture(scope="session")
def experts(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cosup")
    cache = tmp / "cache"
    cache.mkdir()
    launch("cosup/experts.py",
           COSUP_ARGS + ["loop.steps=2", "partition.crop_groups=[carpals]", f"run_dir={tmp / 'experts'}"],
           cache)
    return tmp, cache


class LocalAccelerator:
    """Stands in for an Accelerator in one process (what setup() and run folders ask of it)."""

    is_main_process = True
    num_processes = 1
    mixed_precision = "no"

    def main_process_first(self):
        import contextlib

        return contextlib.nullcontext()

    def wait_for_everyone(self):
        pass

    def print(self, *a, **k):
        pass


class ConstModel:
    """A stand-in segmenter: logit ``v`` everywhere on ``k`` channels, ``[B, C, H, W] -> [B, k, H, W]``."""

    def __init__(self, k: int, v: float):
        self.k, self.v = k, v

    def __call__(self, x):
        import torch

        return torch.full((x.shape[0], self.k, *x.shape[-2:]), float(self.v))
