"""``jobs=N``: a study's cells in N processes side by side (finetune/study.py stays the one orchestrator).

The grid is cut into *chains* that share nothing but finished files: per init and seed, the **methods** (the
labelled-only student first, then every arm started from it) and the **references** (the every-label ceiling and
the labelled-only students at ``grid.finetune_fractions``). Each chain is the same study run with a narrowed grid
(``grid.inits=[i] grid.seeds=[s] ...``) in a child process, so a chain resumes like any study, and the parent
writes the one report from the cells' ``result.json`` when every chain has ended.

Why: on a CPU, two one-thread processes side by side train 1.2x faster than one two-thread process (AVX2 machine,
docs/benchmarks.md); on a GPU, small models leave the card mostly idle, and chains fill it. Each child gets its own
slice of the CPU cores (``BONEKIT_THREADS`` and the process's CPU affinity). Longest chains (methods) start first.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bonekit.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def _terminated(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def chains(grid) -> list[tuple[str, list[str]]]:
    """(name, grid overrides) of each chain, methods chains first (they are the longest)."""
    methods, refs = [], []
    for init in grid.inits:
        for seed in grid.seeds:
            base = [f"grid.inits=[{init}]", f"grid.seeds=[{seed}]"]
            if grid.methods and grid.fractions:
                methods.append((f"{init}-s{seed}-methods", [*base, "grid.ceiling=false", "grid.finetune_fractions=[]"]))
            if grid.ceiling or any(f not in grid.fractions for f in grid.finetune_fractions):
                refs.append((f"{init}-s{seed}-references", [*base, "grid.methods=[]"]))
    return methods + refs


def chain_command(argv: list[str], overrides: list[str]) -> list[str]:
    """The child's command: this study's arguments, the chain's narrowed grid, no report of its own."""
    return [sys.executable, str(ROOT / "finetune" / "study.py"), *argv, *overrides, "jobs=1", "browser_check=false",
            "write_report=false"]


def core_slices(jobs: int, cores: list[int]) -> list[list[int] | None]:
    """The cores of each of ``jobs`` slots: disjoint slices where there are enough cores, else no pinning."""
    per = len(cores) // jobs
    if per == 0:
        return [None] * jobs
    return [cores[i * per:(i + 1) * per] for i in range(jobs)]


def run_chains(study, argv: list[str]) -> None:
    """Run ``study``'s grid as chains, ``study.cfg.jobs`` at a time; raises naming the logs of failed chains."""
    c = study.cfg
    if os.environ.get("WORLD_SIZE", "1") != "1":
        raise ConfigError("jobs > 1 runs each chain as one process: launch the study itself with one process")
    for init in c.grid.inits:  # pretraining is shared: once, here, before the chains read it
        study.init_path(init)
    todo = chains(c.grid)
    logs = study.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    slots = core_slices(c.jobs, cores)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    if "BONEKIT_THREADS" not in os.environ:
        env["BONEKIT_THREADS"] = str(max(1, len(cores) // c.jobs))
    free = list(range(c.jobs))
    running: dict[int, tuple[subprocess.Popen, str, float, object]] = {}
    failed = []
    print(f"[study] {len(todo)} chains, {c.jobs} at a time; logs in {logs}")
    previous = signal.signal(signal.SIGTERM, _terminated)  # a scheduler's or timeout's SIGTERM reaches the chains
    try:
        while todo or running:
            while todo and free:
                name, overrides = todo.pop(0)
                slot = free.pop(0)
                log = open(logs / f"{name}.log", "w")  # noqa: SIM115 (open while the chain runs, closed when it ends)
                pin = slots[slot]
                proc = subprocess.Popen(chain_command(argv, overrides), stdout=log, stderr=subprocess.STDOUT, env=env)
                if pin:  # set from here at once (threads the child starts later inherit it); no preexec_fn
                    os.sched_setaffinity(proc.pid, pin)
                running[slot] = (proc, name, time.time(), log)
                print(f"[study] chain {name}: started" + (f" on cores {pin}" if pin else ""))
            time.sleep(1)
            for slot, (proc, name, t0, log) in list(running.items()):
                if proc.poll() is None:
                    continue
                log.close()
                del running[slot]
                free.append(slot)
                minutes = (time.time() - t0) / 60
                if proc.returncode == 0:
                    print(f"[study] chain {name}: done in {minutes:.1f} min")
                else:
                    failed.append(name)
                    tail = (logs / f"{name}.log").read_text(errors="replace").splitlines()[-15:]
                    print(f"[study] chain {name}: FAILED (exit {proc.returncode}) after {minutes:.1f} min; "
                          f"its log ends:\n" + "\n".join(tail))
    finally:  # stopped (Ctrl-C, SIGTERM): the chains stop too, and resume with the study
        signal.signal(signal.SIGTERM, previous)
        for proc, *_ in running.values():
            proc.terminate()
        for proc, _, _, log in running.values():
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
    if failed:
        raise RuntimeError(f"chains {failed} failed: see {', '.join(str(logs / (n + '.log')) for n in failed)}; "
                           "their finished cells are kept, and running the study again resumes them")
