"""The bench scripts time the same engine step the mains run: each runs on tiny data and prints its figures."""

import re

from conftest import TINY, launch


def test_train_speed(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    out = launch("bench/train_speed.py", TINY + ["steps=1", "loop.batch_size=2", "data.folds=2",
                                                f"run_dir={tmp_path / 'b'}"], cache)
    m = re.search(r"end-to-end ([\d.]+) img/s .* model-only ([\d.]+) img/s", out)
    assert m and float(m.group(1)) > 0 and float(m.group(2)) > 0
    assert "naive loop" in out and (tmp_path / "b" / "bench.txt").is_file()


def test_pretrain_speed(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    out = launch("bench/pretrain_speed.py", TINY + ["steps=1", "train.batch_size=4", "views.size=32",
                                                   "method.hidden_dim=32", "method.out_dim=16",
                                                   f"run_dir={tmp_path / 'b'}"], cache)
    m = re.search(r"end-to-end ([\d.]+) img/s, model-only ([\d.]+) img/s", out)
    assert m and float(m.group(1)) > 0 and float(m.group(2)) > 0
