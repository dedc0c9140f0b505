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
