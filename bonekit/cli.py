"""How every entry script ends: a known failure (bad config, bad data, a non-finite loss) prints one line naming
the key or file and exits with status 2, without a wall of tracebacks. ``BONEKIT_DEBUG=1`` shows the traceback."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from bonekit.errors import ConfigError, DataError

KNOWN = (ConfigError, DataError, FileNotFoundError, FileExistsError, ValueError, FloatingPointError, PermissionError)


def run(main: Callable[[], object]) -> None:
    try:
        main()
    except KNOWN as e:
        if os.environ.get("BONEKIT_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
