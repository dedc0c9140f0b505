"""Checkpoints through Accelerate's ``save_state`` (model, optimizer, RNG states) plus the step and config.

Layout: ``<run_dir>/checkpoints/step_0000120/`` (Accelerate's files + ``bonekit.json``). The newest ``keep``
are kept. ``resume=auto`` continues from the newest; the learning rate, momentum and data order are pure
functions of the step, so the resumed run reproduces the unbroken one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from bonekit.errors import DataError


def checkpoints(run_dir: str | Path) -> list[Path]:
    d = Path(run_dir) / "checkpoints"
    if not d.is_dir():
        return []
    return sorted(p for p in d.glob("step_*") if p.suffix != ".partial" and (p / "bonekit.json").is_file())


def latest(run_dir: str | Path) -> Path | None:
    c = checkpoints(run_dir)
    return c[-1] if c else None


def save(accelerator, run_dir: Path, step: int, config: dict, keep: int = 1, extra: dict | None = None) -> Path:
    """Write the checkpoint of ``step`` atomically: into ``step_N.partial`` first, renamed when complete, so a
    full disk or a kill mid-write never leaves a checkpoint that looks whole, and the older ones are pruned only
    after the new one is complete."""
    path = Path(run_dir) / "checkpoints" / f"step_{step:07d}"
    tmp = path.with_name(path.name + ".partial")
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)  # left by a run killed mid-write
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(tmp))
        if accelerator.is_main_process:
            (tmp / "bonekit.json").write_text(json.dumps({"step": step, "config": config, "extra": extra or {}},
                                                         indent=1))
    except OSError as e:
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        prev = latest(run_dir)
        raise DataError(tmp, f"could not write the checkpoint of step {step} ({e.strerror or e}); "
                             + (f"the newest complete one, {prev.name}, is intact: " if prev else
                                "no complete checkpoint exists yet: ")
                             + "free space and run again with resume=auto") from None
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if path.exists():
            shutil.rmtree(path)  # the same step saved again (e.g. after a resume)
        tmp.rename(path)
        for old in checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return path


def prune_finished(run_dir: str | Path, accelerator=None) -> None:
    """Delete the resumable checkpoints of a finished sub-run (an expert, a distillation round): its
    ``last.safetensors`` is what later stages read, and the optimizer state is twice the weights' size."""
    if accelerator is not None and not accelerator.is_main_process:
        return
    if (Path(run_dir) / "last.safetensors").is_file():
        shutil.rmtree(Path(run_dir) / "checkpoints", ignore_errors=True)


def load(accelerator, path: str | Path) -> int:
    """Restore the state saved at ``path``; returns its step."""
    return load_with_extra(accelerator, path)[0]


def load_with_extra(accelerator, path: str | Path) -> tuple[int, dict]:
    """Restore the state saved at ``path``; returns (step, the extra dict saved with it)."""
    path = Path(path)
    meta = path / "bonekit.json"
    if not meta.is_file():
        raise FileNotFoundError(f"{path}: not a bonekit checkpoint (no bonekit.json)")
    accelerator.load_state(str(path))
    doc = json.loads(meta.read_text())
    return int(doc["step"]), doc.get("extra", {})


def _run_of(p: Path) -> Path | None:
    """The run folder holding ``p`` (the nearest folder, ``p`` itself included, with a config.yaml)."""
    for q in [p, *p.parents]:
        if (q / "config.yaml").is_file():
            return q
    return None


def stage_runs(stage: str) -> list[Path]:
    """``runs/<stage>/*`` run folders, oldest first (for ``resume=auto`` without ``run_dir``)."""
    base = Path("runs", stage)
    return sorted(p for p in base.glob("*") if p.is_dir()) if base.is_dir() else []


def find_resume(resume: str, run_dir: str, stage: str) -> tuple[str, Path | None]:
    """What ``resume`` means, the same in every stage:

    - ``""``: a fresh run;
    - ``auto``: the newest checkpoint of ``run_dir``, or of the newest run of this stage when ``run_dir`` is empty;
    - a checkpoint folder (``<run>/checkpoints/step_N``): that checkpoint, in its run folder;
    - a run folder: its newest checkpoint.

    Returns (run_dir to use, checkpoint or None)."""
    if not resume:
        return run_dir, None
    if resume != "auto":
        p = Path(resume)
        if (p / "bonekit.json").is_file():
            return run_dir or str(p.parent.parent), p
        if p.is_dir() and (p / "config.yaml").is_file():
            return run_dir or str(p), latest(p)
        raise FileNotFoundError(f"{resume}: not a bonekit checkpoint folder (no bonekit.json) nor a run folder "
                                "(no config.yaml)")
    if run_dir:
        return run_dir, latest(run_dir)
    for r in reversed(stage_runs(stage)):
        if latest(r):
            return str(r), latest(r)
    return run_dir, None


def find_resume_run(resume: str, run_dir: str, stage: str) -> str:
    """``resume`` for stages that train several models in one run folder (experts, distillation rounds): the run
    folder to continue (each model inside resumes from its own newest checkpoint). ``auto``: ``run_dir`` or the
    newest run of this stage; a path: the run folder holding it (a run folder or any checkpoint inside it)."""
    if not resume:
        return run_dir
    if resume == "auto":
        if run_dir:
            return run_dir
        runs = stage_runs(stage)
        return str(runs[-1]) if runs else ""
    run = _run_of(Path(resume))
    if run is None:
        raise FileNotFoundError(f"{resume}: not inside a bonekit run folder (no config.yaml above it)")
    return run_dir or str(run)
