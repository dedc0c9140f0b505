"""cosup/gate.py: the per-bone CV gate. Folds cover the labelled images once; a bone whose specialist loses the
cross-validation is labelled by the generalist; the gate runs end to end through accelerate on tiny data."""

import json

import numpy as np
import pytest
import torch
from conftest import COSUP_ARGS, ConstModel, launch

from cosup.gate import decide, fold_split
from cosup.teachers import Teachers


def test_folds_hold_out_every_labelled_image_once():
    folds = fold_split([3, 9, 12, 40, 41], 2, seed=0)
    assert sorted(f for fold in folds for f in fold) == [3, 9, 12, 40, 41] and {len(f) for f in folds} == {2, 3}
    assert fold_split([3, 9, 12, 40, 41], 2, seed=0) == folds  # seeded: resume sees the same split
    assert len(fold_split(list(range(5)), 5, seed=1)) == 5  # leave-one-out


def test_gate_keeps_a_specialist_only_where_it_wins():
    gen = np.array([[0.5, 0.5, 0.5], [0.5, 0.7, 0.5]])
    spec = np.array([[0.6, 0.5, 0.5], [0.6, 0.5, 0.52]])
    assert decide(gen, spec, 0.0).tolist() == [True, False, True]
    assert decide(gen, spec, 0.02).tolist() == [True, False, False]  # a tie within the margin is not a win


def test_gated_out_bones_take_the_generalists_targets():
    t = Teachers.__new__(Teachers)
    t.classes, t.partition, t.crops = ["a", "b", "c"], "bones", {}
    t.experts = [(ConstModel(2, 3.0), [0, 2], None), (ConstModel(1, -3.0), [1], None)]
    t.fallback = (ConstModel(3, 1.0), [1], [1])  # bone b lost the CV: the generalist (logit 1) labels it
    p = t.predict(torch.zeros(1, 1, 4, 4))
    assert torch.allclose(p[0, 1], torch.sigmoid(torch.tensor(1.0)))
    assert torch.allclose(p[0, 0], torch.sigmoid(torch.tensor(3.0)))  # the winners keep their specialists


def test_gate_end_to_end(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    base = COSUP_ARGS + ["loop.steps=2"]
    launch("finetune/train.py", base + [f"run_dir={tmp_path / 'gen'}"], cache)
    gen = tmp_path / "gen" / "last.safetensors"
    out = launch("cosup/experts.py", base + [f"partition.generalist={gen}", "gate.folds=2", "gate.generalist_steps=3",
                                             f"run_dir={tmp_path / 'ex'}"], cache)
    assert "gate (2-fold CV" in out
    g = json.loads((tmp_path / "ex" / "gate.json").read_text())
    assert len(g["bones"]) == 29 and sorted(f for fold in g["folds"] for f in fold) == json.loads(
        (tmp_path / "ex" / "experts.json").read_text())["labelled"]
    m = json.loads((tmp_path / "ex" / "experts.json").read_text())
    assert m["gate"]["use"] == {c: v["use_specialist"] for c, v in g["bones"].items()}
    assert m["gate"]["fallback"] == str(gen.resolve())
    steps = [int(r.split(",")[0]) for r in (tmp_path / "ex" / "gate" / "fold0" / "generalist" / "metrics.csv")
             .read_text().splitlines()[1:] if r.split(",")[1]]
    assert max(steps) == 3  # the fold generalists get their own schedule


def test_gate_needs_a_generalist():
    from bonekit import config
    from bonekit.errors import ConfigError
    from cosup.experts import ExpertsConfig
    from cosup.gate import check

    check(config.load(ExpertsConfig, []))  # no gate: nothing asked
    with pytest.raises(ConfigError, match="partition.generalist"):
        check(config.load(ExpertsConfig, ["gate.folds=2"]))
    with pytest.raises(ConfigError, match="partition.by=bones"):
        check(config.load(ExpertsConfig, ["gate.folds=2", "partition.by=shards", "partition.generalist=g"]))
