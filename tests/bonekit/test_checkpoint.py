"""Checkpoints are written atomically: a full disk never leaves one that looks whole, nor loses the older one."""

import errno
import json

import pytest

from bonekit import checkpoint
from bonekit.errors import DataError


class FakeAccelerator:
    """Writes a model file like Accelerate's save_state; ``full=True`` fails half-way with ENOSPC."""

    is_main_process = True

    def __init__(self):
        self.full = False

    def save_state(self, path):
        from pathlib import Path

        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "model.safetensors").write_bytes(b"x" * 100)
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        (Path(path) / "optimizer.bin").write_bytes(b"y" * 100)

    def wait_for_everyone(self):
        pass


def test_disk_full_keeps_the_last_complete_checkpoint_and_says_so(tmp_path):
    acc = FakeAccelerator()
    checkpoint.save(acc, tmp_path, 10, {"a": 1})
    acc.full = True
    with pytest.raises(DataError, match="No space left on device.*step_0000010, is intact.*resume=auto"):
        checkpoint.save(acc, tmp_path, 20, {"a": 1})
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_0000010"]  # no half-written folder
    assert checkpoint.latest(tmp_path).name == "step_0000010"
    assert json.loads((checkpoint.latest(tmp_path) / "bonekit.json").read_text())["step"] == 10
    acc.full = False  # space freed: the next save completes and only then prunes the older one
    checkpoint.save(acc, tmp_path, 20, {"a": 1})
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_0000020"]


def test_a_checkpoint_killed_before_its_rename_is_never_resumed(tmp_path):
    acc = FakeAccelerator()
    checkpoint.save(acc, tmp_path, 10, {})
    partial = tmp_path / "checkpoints" / "step_0000020.partial"
    acc.save_state(partial)  # complete files and metadata, but the rename never happened
    (partial / "bonekit.json").write_text(json.dumps({"step": 20, "config": {}, "extra": {}}))
    assert checkpoint.latest(tmp_path).name == "step_0000010"
    checkpoint.save(acc, tmp_path, 20, {})  # saving that step again replaces the leftover
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_0000020"]
