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


def test_a_model_file_linked_to_another_is_replaced_not_written_through(tmp_path):
    """last.safetensors may be a hard link to best.safetensors: saving a new best must leave last as it was."""
    import torch
    from safetensors.torch import load_file

    from bonekit.models import link_or_copy, save_model

    net = torch.nn.Linear(2, 2)
    save_model(tmp_path / "best.safetensors", net, {"step": 1})
    link_or_copy(tmp_path / "best.safetensors", tmp_path / "last.safetensors")
    assert (tmp_path / "last.safetensors").samefile(tmp_path / "best.safetensors")
    before = load_file(str(tmp_path / "last.safetensors"))
    with torch.no_grad():
        net.weight.add_(1.0)
    save_model(tmp_path / "best.safetensors", net, {"step": 2})
    after = load_file(str(tmp_path / "last.safetensors"))
    assert torch.equal(before["weight"], after["weight"])
    assert not torch.equal(load_file(str(tmp_path / "best.safetensors"))["weight"], after["weight"])
    assert not list(tmp_path.glob("*.partial"))


def test_load_model_gives_the_saved_model_without_initialising_one(tmp_path, monkeypatch):
    """load_model builds on the meta device and takes the saved tensors: the same outputs, real trainable
    tensors, and no random initialisation (which the weights would overwrite anyway)."""
    import torch

    from bonekit import models

    torch.manual_seed(0)
    net = models.make_segmenter("unet", "resnet18", 1, 3).eval()
    net.decoder.blocks[0].conv1[1].running_mean.fill_(0.25)  # a buffer, not only parameters, must come back
    meta = {"arch": "unet", "encoder": "resnet18", "in_channels": 1, "classes": ["a", "b", "c"]}
    path = models.save_model(tmp_path / "m.safetensors", net, meta)
    inits = []
    monkeypatch.setattr(torch.nn.init, "kaiming_normal_", lambda t, *a, **k: inits.append(t.device.type) or t)
    loaded, _ = models.load_model(path)
    assert inits and set(inits) == {"meta"}  # the initialisers ran on shapes only, touching no real memory
    tensors = [*loaded.parameters(), *loaded.buffers()]
    assert not any(t.is_meta for t in tensors) and all(p.requires_grad for p in loaded.parameters())
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), net(x))
    loaded.train()
    loss = loaded(x).mean()
    loss.backward()  # trainable: a teacher or a warm start may go on learning
    assert all(p.grad is not None for p in loaded.parameters() if p.requires_grad)
