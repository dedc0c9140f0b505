"""Every shipped YAML config loads against its stage's typed schema (a typo would be an error naming the key)."""

from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from bonekit import config

STAGES = {
    "pretrain.yaml": ("selfsup.pretrain", "PretrainConfig"),
    "train.yaml": ("finetune.train", "TrainConfig"),
    "experts.yaml": ("cosup.experts", "ExpertsConfig"),
    "distill.yaml": ("finetune.distill", "DistillConfig"),
    "lowlabel.yaml": ("finetune.study", "StudyConfig"),
    "demo.yaml": ("finetune.study", "StudyConfig"),
}


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_configs_load(name):
    import importlib

    mod, cls = STAGES[name]
    schema = getattr(importlib.import_module(mod), cls)
    cfg = config.load(schema, [f"config={ROOT / 'configs' / name}"])
    assert cfg is not None


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "data").glob("*.yaml")))
def test_data_configs_load_into_every_stage(path):
    from finetune.train import TrainConfig

    cfg = config.load(TrainConfig, [f"config={path}"])
    assert cfg.data.resolution > 0


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "accelerate").glob("*.yaml")))
def test_accelerate_configs_are_yaml(path):
    doc = yaml.safe_load(Path(path).read_text())
    assert doc["num_processes"] >= 1 and "distributed_type" in doc


def test_config_reference_escapes_pipes_in_comments():
    """A comment listing choices ("a | b") used to split its table row into extra columns."""
    import re

    from bonekit.configdoc import _table

    row = _table([("partition.shards", "kmeans", "shards: kmeans | hierarchical | meta")])[-1]
    assert len(re.findall(r"(?<!\\)\|", row)) == 4 and "kmeans \\| hierarchical" in row


def test_yaml_boolean_words_stay_strings_in_string_fields():
    """`precision=no` is a documented value; YAML 1.1 reads `no` as False, which made it the string 'False'."""
    from bonekit.config import load
    from finetune.train import TrainConfig

    cfg = load(TrainConfig, ["precision=no", "loop.channels_last=no", "data.skip_bad=yes"])
    assert cfg.precision == "no"
    assert cfg.loop.channels_last is False and cfg.data.skip_bad is True  # bool fields still read YAML booleans
