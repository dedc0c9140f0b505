"""Worker processes end with their parent (kill -9 of the main process left cache-building workers alive)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import os, time
from bonekit.workers import pool
ex = pool(2)
futs = [ex.submit(time.sleep, 60) for _ in range(2)]
pids = list(ex._processes)  # the worker pids, once they have started
while len(pids) < 2:
    time.sleep(0.05); pids = list(ex._processes)
print(" ".join(map(str, pids)), flush=True)
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (dead, not yet reaped by init) counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_pool_workers_die_when_the_main_process_is_killed():
    p = subprocess.Popen([sys.executable, "-c", CHILD], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    pids = [int(x) for x in p.stdout.readline().split()]
    assert len(pids) == 2 and all(_alive(q) for q in pids)
    p.send_signal(signal.SIGKILL)
    p.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(q) for q in pids):
        time.sleep(0.1)
    left = [q for q in pids if _alive(q)]
    for q in left:  # never leave them behind, even when the test fails
        os.kill(q, signal.SIGKILL)
    assert not left, f"workers {left} outlived their killed parent"
