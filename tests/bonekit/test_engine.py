"""EpochLoader: the stream of micro-batches, one DataLoader per block of epochs, and resume mid-block."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from torch.utils.data import Dataset

from bonekit import engine
from bonekit.datasets import epoch_order


class Items(Dataset):
    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return {"index": torch.tensor(i)}


def reference(n: int, micro: int, seed: int, count: int) -> list[tuple[int, list[int]]]:
    """The stream a DataLoader per epoch gives: each epoch's permutation, cut into full batches (drop_last)."""
    out, epoch = [], 0
    while len(out) < count:
        order = epoch_order(n, seed, epoch)
        for b in range(n // micro):
            out.append((epoch, order[b * micro:(b + 1) * micro].tolist()))
        epoch += 1
    return out[:count]


def stream(loader: engine.EpochLoader, count: int) -> list[tuple[int, list[int]]]:
    out = []
    for _ in range(count):
        epoch, batch = loader.next()
        out.append((epoch, batch["index"].tolist()))
    return out


@pytest.mark.parametrize("n,micro", [(5, 5), (7, 2), (30, 4)])
def test_the_stream_is_the_per_epoch_one_across_blocks(monkeypatch, n, micro):
    monkeypatch.setattr(engine, "BLOCK_BATCHES", 6)  # several blocks in a short stream
    acc = Accelerator(cpu=True)
    got = stream(engine.EpochLoader(acc, Items(n), micro, seed=3, workers=0), 40)
    assert got == reference(n, micro, 3, 40)


def test_one_dataloader_per_block_not_per_epoch(monkeypatch):
    """A 5-image subset is one batch per epoch: 100 steps must not build 100 loaders (worker restarts)."""
    made = []
    real = engine.DataLoader
    monkeypatch.setattr(engine, "DataLoader", lambda *a, **k: made.append(1) or real(*a, **k))
    loader = engine.EpochLoader(Accelerator(cpu=True), Items(5), 5, seed=0, workers=0)
    stream(loader, 100)
    assert len(made) == 1


@pytest.mark.parametrize("start", [0, 1, 5, 6, 13])
def test_resume_at_any_micro_step_continues_the_stream(monkeypatch, start):
    monkeypatch.setattr(engine, "BLOCK_BATCHES", 6)
    acc = Accelerator(cpu=True)
    full = stream(engine.EpochLoader(acc, Items(7), 2, seed=1, workers=0), 24)
    resumed = stream(engine.EpochLoader(acc, Items(7), 2, seed=1, workers=0, start=start), 24 - start)
    assert resumed == full[start:]
    assert np.all([len(b) == 2 for _, b in resumed])


def test_opening_a_loader_leaves_the_global_random_stream_alone():
    """Dropout and copy-paste boxes draw from torch's global generator: a loader opened at resume (another step
    than in the unbroken run) must not draw from it, or the resumed run diverges."""
    torch.manual_seed(0)
    before = torch.get_rng_state()
    stream(engine.EpochLoader(Accelerator(cpu=True), Items(7), 2, seed=1, workers=0, start=5), 3)
    assert torch.equal(torch.get_rng_state(), before)


class EncoderDecoder(torch.nn.Module):
    """The shape of a segmenter for the optimizer: an ``encoder`` and the rest."""

    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
        self.head = torch.nn.Linear(4, 1)

    def forward(self, x):
        return self.head(self.encoder(x))


@pytest.mark.parametrize("scale", [0.0, 0.1])
def test_encoder_lr_scale_slows_the_encoder_only(scale):
    """``encoder_lr_scale`` multiplies the scheduled rate of the encoder's parameters, weight decay split kept; at
    0 the encoder does not move while the head does."""
    torch.manual_seed(0)
    model = EncoderDecoder()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = engine.EngineConfig(steps=5, batch_size=5, lr=0.1, warmup=0, encoder_lr_scale=scale)
    acc = Accelerator(cpu=True)
    model, opt = engine.prepare_training(acc, model, cfg)
    scales = sorted((g["lr_scale"], g["weight_decay"], len(g["params"])) for g in opt.param_groups)
    assert scales == sorted([(scale, cfg.weight_decay, 1), (scale, 0.0, 3), (1.0, cfg.weight_decay, 1), (1.0, 0.0, 1)])
    loader = engine.EpochLoader(acc, Items(5), 5, seed=0, workers=0)
    x = torch.randn(5, 4)
    res = engine.optimizer_step(acc, model, opt, loader, cfg, 1, lambda b, e: model(x[b["index"]]).pow(2).mean())
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(res.lr * g["lr_scale"])
    moved = {k: not torch.equal(before[k], v) for k, v in model.state_dict().items()}
    assert moved["head.weight"] and moved["head.bias"]
    encoder_moved = [m for k, m in moved.items() if k.startswith("encoder.")]
    assert all(encoder_moved) if scale > 0 else not any(encoder_moved)


def test_encoder_lr_scale_needs_an_encoder_and_a_sane_value():
    with pytest.raises(ValueError, match="no `encoder`"):
        engine.param_groups(torch.nn.Linear(2, 2), 1e-4, encoder_lr_scale=0.5)
    from bonekit.errors import ConfigError

    with pytest.raises(ConfigError, match="loop.encoder_lr_scale=-1"):
        engine.check_config(engine.EngineConfig(encoder_lr_scale=-1.0), "loop")
    assert len(engine.param_groups(EncoderDecoder(), 1e-4)) == 2  # the default: the two groups as before
