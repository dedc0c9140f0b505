"""Run folders: a dangling link names itself instead of failing with "File exists"."""

import pytest
from conftest import LocalAccelerator

from bonekit.errors import ConfigError
from bonekit.runlog import make_run_dir


def test_run_dir_that_is_a_dangling_link_is_named(tmp_path):
    link = tmp_path / "pretrain"
    link.symlink_to(tmp_path / "gone")  # e.g. a study's pretraining run linked from another study, then deleted
    with pytest.raises(ConfigError, match="link to .*gone.*does not exist"):
        make_run_dir(str(link), "pretrain", LocalAccelerator())
    (tmp_path / "gone").mkdir()
    assert make_run_dir(str(link), "pretrain", LocalAccelerator()) == link  # a live link is used as it is


def test_resume_in_another_precision_is_refused(tmp_path):
    """precision=bf16 runs fp32 on a CPU without hardware bf16: resuming a bf16 run there would mix the two."""
    from dataclasses import dataclass

    from omegaconf import OmegaConf

    from bonekit.runlog import start_run

    @dataclass
    class Cfg:
        run_dir: str = ""
        resume: str = ""
        precision: str = "bf16"
        allow_changed: bool = False

    cfg = OmegaConf.structured(Cfg(run_dir=str(tmp_path / "run")))
    bf16 = LocalAccelerator()
    bf16.mixed_precision = "bf16"
    start_run(cfg, "train", bf16)
    assert (tmp_path / "run" / "precision.txt").read_text().strip() == "bf16"
    cfg.resume = "auto"
    with pytest.raises(ConfigError, match="mixed_precision=bf16.*runs no"):
        start_run(cfg, "train", LocalAccelerator())
    start_run(cfg, "train", bf16)  # the same precision resumes
    cfg.allow_changed = True
    start_run(cfg, "train", LocalAccelerator())  # asked for
    assert (tmp_path / "run" / "precision.txt").read_text().strip() == "no"
