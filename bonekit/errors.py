"""Error types. Every data error names the file and the problem, so a user can find and fix it."""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """Bad input data: ``DataError(path, problem)`` prints as ``<path>: <problem>``."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{path}: {problem}")

    def __reduce__(self):
        # Raised inside cache-building worker processes: default pickling passes only the message, and the error
        # then fails to unpickle in the parent (BrokenProcessPool naming no file); rebuild it from (path, problem).
        return (DataError, (self.path, self.problem))


class ConfigError(ValueError):
    """A config key that does not exist, has the wrong type, or a value out of range."""