"""Worker processes that never outlive their parent.

A ``ProcessPoolExecutor``'s workers wait on their call queue; if the main process is killed (``kill -9``, the
OOM killer, a cluster pre-emption) nothing wakes them and they linger, holding memory and file handles. On Linux,
``prctl(PR_SET_PDEATHSIG)`` asks the kernel to send each worker SIGTERM when its parent dies; elsewhere the
workers fall back to the default behaviour.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor

_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        except OSError:  # no glibc (e.g. musl): keep the default
            return
    # The parent may have died between fork and prctl: then the signal was never armed.
    if os.getppid() != parent:
        os._exit(1)


def pool(workers: int) -> ProcessPoolExecutor:
    """A process pool of ``workers`` whose workers end when the process that made it ends."""
    return ProcessPoolExecutor(workers, initializer=_die_with_parent, initargs=(os.getpid(),))
