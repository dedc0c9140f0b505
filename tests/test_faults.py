"""The fault suite: bad input ends in one message naming the file (or key) and the problem, nothing earlier is
lost, and results never claim data they did not come from. Tiny data; most faults hit the library directly,
a few go through ``accelerate launch`` to check the exit status and that no traceback wall reaches the user."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, LocalAccelerator, make_competition

from bonekit import cache as C
from bonekit import config
from bonekit.classes import HAND29
from bonekit.errors import ConfigError, DataError
from bonekit.formats import competition, discover

ANN = lambda label, pts: {"label": label, "points": pts}  # noqa: E731
TRI = [[2, 2], [40, 2], [40, 40]]


def _split(tmp_path, people=2, size=64):
    return make_competition(tmp_path / "train", people=people, size=size)


def _first_json(split):
    return sorted((split / "outputs_json").rglob("*.json"))[0]


def _first_png(split):
    return sorted((split / "DCM").rglob("*.png"))[0]


def _build(split, tmp_path, workers=2, skip_bad=False):
    return C.build(discover(split), 32, HAND29, tmp_path / "cache", workers=workers, skip_bad=skip_bad, progress=False)


# ------------------------------------------------------------------ images
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("damage", ["zero-byte", "truncated", "text", "random-bytes"])
def test_bad_png_names_the_file_in_every_worker_mode(tmp_path, damage, workers):
    split = _split(tmp_path)
    png = _first_png(split)
    data = png.read_bytes()
    png.write_bytes({"zero-byte": b"", "truncated": data[: len(data) // 3], "text": b"not an image",
                     "random-bytes": os.urandom(200)}[damage])
    with pytest.raises(DataError) as e:
        _build(split, tmp_path, workers=workers)
    assert png.name in str(e.value)
    assert not list((tmp_path / "cache").glob("*.tmp*"))  # no half-built folder left behind


def test_data_error_survives_pickling():
    e = pickle.loads(pickle.dumps(DataError("a/b.png", "corrupt")))
    assert isinstance(e, DataError) and e.path == "a/b.png" and str(e) == "a/b.png: corrupt"


def test_skip_bad_skips_and_counts_but_not_every_file(tmp_path):
    split = _split(tmp_path)
    pngs = sorted((split / "DCM").rglob("*.png"))
    pngs[0].write_bytes(b"")
    c = _build(split, tmp_path, skip_bad=True)
    assert len(c) == len(pngs) - 1
    for p in pngs:
        p.write_bytes(b"")
    with pytest.raises(DataError, match="every one of the"):
        C.build(discover(split), 32, HAND29, tmp_path / "cache2", workers=1, skip_bad=True, progress=False)


def test_strict_run_never_reuses_a_skip_bad_cache(tmp_path):
    split = _split(tmp_path)
    _first_png(split).write_bytes(b"")
    _build(split, tmp_path, skip_bad=True)
    with pytest.raises(DataError):  # same files, strict: a different cache key, so the bad file is read again
        _build(split, tmp_path, skip_bad=False)


def test_upper_case_png_is_read(tmp_path):
    split = _split(tmp_path)
    png = _first_png(split)
    png.rename(png.with_suffix(".PNG"))
    assert any(r.image.suffix == ".PNG" for r in discover(split))


def test_empty_folder(tmp_path):
    (tmp_path / "train" / "DCM").mkdir(parents=True)
    with pytest.raises(DataError, match="empty data folder"):
        discover(tmp_path / "train")


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        discover(tmp_path / "nope")


def test_image_without_json(tmp_path):
    split = _split(tmp_path)
    _first_json(split).unlink()
    with pytest.raises(DataError, match="has no annotation JSON"):
        discover(split)


def test_json_without_image(tmp_path):
    split = _split(tmp_path)
    _first_png(split).unlink()
    with pytest.raises(DataError, match="has no image"):
        discover(split)


# ------------------------------------------------------------------ annotations
@pytest.mark.parametrize("doc, match", [
    ("{not json", "not valid JSON"),
    ("[]", "no 'annotations'"),
    (json.dumps({"annotations": "x"}), "not a list"),
    (json.dumps({"annotations": ["Ulna"]}), "is a str"),
    (json.dumps({"annotations": [ANN("finger-99", TRI)]}), "unknown label"),
    (json.dumps({"annotations": [ANN("Ulna", [[0, 0], [1, 1]])]}), "at least 3"),
    (json.dumps({"annotations": [ANN("Ulna", [["a", "b"], [1, 1], [2, 2]])]}), "not a list of numeric"),
    (json.dumps({"annotations": [ANN("Ulna", [[1, 2, 3], [1, 1], [2, 2]])]}), "ragged"),
    (json.dumps({"annotations": [ANN("Ulna", [[1, 2, 3], [1, 1, 1], [2, 2, 2]])]}), "at least 3 \\[x, y\\]"),
    (json.dumps({"annotations": [ANN("Ulna", [[1, 2], [1], [2, 2]])]}), "ragged or non-numeric"),
    (json.dumps({"annotations": [ANN("Ulna", TRI), ANN("Ulna", TRI)]}), "appears twice"),
    (json.dumps({"annotations": [ANN("Ulna", [[0, 0], [500, 0], [0, 500]])]}), "outside"),
    (json.dumps({"annotations": [ANN("Ulna", [[1, 1], [10, 1], [10, 10]])]}), "top-left quarter"),
])
def test_bad_annotation_names_the_file(tmp_path, doc, match):
    p = tmp_path / "bad.json"
    p.write_text(doc)
    with pytest.raises(DataError, match=match) as e:
        competition.read_mask(p, 64, 64)
    assert "bad.json" in str(e.value)


@pytest.mark.parametrize("workers", [1, 2])
def test_bad_annotation_through_the_cache_build(tmp_path, workers):
    split = _split(tmp_path)
    js = _first_json(split)
    js.write_text(json.dumps({"annotations": [ANN("Ulna", [["a", 1], [1, 1], [2, 2]])]}))
    with pytest.raises(DataError) as e:
        _build(split, tmp_path, workers=workers)
    assert js.name in str(e.value) and "numeric" in str(e.value)


# ------------------------------------------------------------------ caches and checkpoints
def test_corrupt_cache_index(tmp_path):
    split = _split(tmp_path)
    c = _build(split, tmp_path)
    (c.root / "index.json").write_text("{broken")
    with pytest.raises(DataError, match="damaged cache index"):
        C.Cache.open(c.root)


def test_damaged_cache_memmap(tmp_path):
    c = _build(_split(tmp_path), tmp_path)
    with open(c.root / "images.u8", "ab") as f:
        f.write(b"x")
    with pytest.raises(DataError, match="damaged"):
        C.Cache.open(c.root)


def _model(tmp_path):
    from bonekit.models import make_segmenter, save_model

    m = make_segmenter("unet", "resnet18", 1, 2)
    return save_model(tmp_path / "m.safetensors", m, {"arch": "unet", "encoder": "resnet18", "in_channels": 1,
                                                       "classes": ["a", "b"]}), m


def test_pickle_renamed_safetensors(tmp_path):
    from bonekit.models import load_model

    p = tmp_path / "fake.safetensors"
    torch.save({"w": torch.zeros(2)}, p)
    with pytest.raises(DataError, match="fake.safetensors"):
        load_model(p)


def test_truncated_checkpoint(tmp_path):
    from bonekit.models import load_model

    p, _ = _model(tmp_path)
    p.write_bytes(p.read_bytes()[:1000])
    with pytest.raises(DataError, match="m.safetensors"):
        load_model(p)


def test_nan_weights_are_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    from bonekit.models import load_model, read_encoder_meta

    p, _ = _model(tmp_path)
    sd = load_file(str(p))
    k = next(k for k, v in sd.items() if v.is_floating_point())
    sd[k] = sd[k] * float("nan")
    save_file(sd, str(p), metadata=read_encoder_meta(p))
    with pytest.raises(DataError, match="NaN or infinity"):
        load_model(p)


def test_wrong_class_list(tmp_path):
    from bonekit.models import load_model

    p, _ = _model(tmp_path)
    with pytest.raises(DataError, match="predicts 2 classes"):
        load_model(p, ["x", "y", "z"])


def test_missing_checkpoint(tmp_path):
    from bonekit.models import load_model

    with pytest.raises(DataError, match="does not exist"):
        load_model(tmp_path / "none.safetensors")


def test_thresholds_file_covering_one_class(tmp_path):
    from finetune.infer import Predictor

    p, _ = _model(tmp_path)
    t = tmp_path / "thr.json"
    t.write_text(json.dumps({"a": 0.4}))
    with pytest.raises(DataError, match="lacks 1 of the model's 2 classes"):
        Predictor([str(p)], torch.device("cpu"), thresholds=str(t))


def test_submission_is_atomic(tmp_path):
    from bonekit.submission import SubmissionWriter

    out = tmp_path / "sub.csv"
    out.write_text("the old, complete submission\n")
    with pytest.raises(RuntimeError):
        with SubmissionWriter(out, ["a"]) as w:
            w.add("x.png", np.zeros((1, 4, 4), bool))
            raise RuntimeError("the run fails half-way")
    assert out.read_text() == "the old, complete submission\n"  # untouched
    assert not list(tmp_path.glob(".*partial"))


# ------------------------------------------------------------------ config
@pytest.mark.parametrize("argv, match", [
    (["loop.step=3"], "did you mean 'loop.steps'"),
    (["loop.steps=abc"], "loop.steps"),
    (["nonsense"], "not key=value"),
    (["config=/no/such.yaml"], "does not exist"),
])
def test_config_errors_name_the_key(argv, match):
    from finetune.train import TrainConfig

    with pytest.raises(ConfigError, match=match):
        config.load(TrainConfig, argv)


@pytest.mark.parametrize("key, value, match", [
    ("model.arch", "unett", "did you mean 'unet'"),
    ("loss", "dicee", "did you mean 'dice'"),
    ("precision", "fp64", "precision"),
])
def test_choices_are_checked(key, value, match):
    from bonekit.models import segmentation_choices
    from finetune.train import TrainConfig

    cfg = config.load(TrainConfig, [f"{key}={value}"])
    with pytest.raises(ConfigError, match=match):
        config.check_choices(cfg, segmentation_choices())


@pytest.mark.parametrize("key, value", [("batch_size", 0), ("accumulate", 0), ("lr", 0.0), ("steps", -1)])
def test_engine_values_are_checked(key, value):
    from bonekit.engine import EngineConfig, check_config

    with pytest.raises(ConfigError, match=key):
        check_config(EngineConfig(**{key: value}), "loop")


def test_labelled_share_of_one():
    from finetune.distill_task import KDConfig, check_kd

    with pytest.raises(ConfigError, match="labelled_share"):
        check_kd(KDConfig(labelled_share=1.0))


# ------------------------------------------------------------------ run folders: nothing is lost


def _cfg(run_dir, **kw):
    from finetune.train import TrainConfig

    return config.load(TrainConfig, [f"run_dir={run_dir}"] + [f"{k}={v}" for k, v in kw.items()])


def test_rerun_without_resume_never_deletes_checkpoints(tmp_path):
    from bonekit.runlog import start_run

    run = tmp_path / "run"
    (run / "checkpoints" / "step_0000010").mkdir(parents=True)
    with pytest.raises(ConfigError, match="resume=auto continues it"):
        start_run(_cfg(run), "train", LocalAccelerator())
    assert (run / "checkpoints" / "step_0000010").is_dir()


def test_resume_with_a_changed_config_is_refused(tmp_path):
    from bonekit.runlog import start_run

    run = tmp_path / "run"
    start_run(_cfg(run), "train", LocalAccelerator())
    with pytest.raises(ConfigError, match=r"loop.lr: 0.002 -> 0.1"):
        start_run(_cfg(run, **{"resume": "auto", "loop.lr": 0.1}), "train", LocalAccelerator())
    start_run(_cfg(run, **{"resume": "auto", "loop.lr": 0.1, "allow_changed": True}), "train", LocalAccelerator())


def test_resume_across_a_version_that_added_a_key(tmp_path):
    """A run saved before a key existed resumes when the key is at its default (the same behaviour), and is
    refused when it is not."""
    from omegaconf import OmegaConf

    from bonekit.runlog import start_run

    run = tmp_path / "run"
    start_run(_cfg(run), "train", LocalAccelerator())
    saved = OmegaConf.load(run / "config.yaml")
    del saved.data["pool_root"]  # as written by a version without data.pool_root
    OmegaConf.save(saved, run / "config.yaml")
    start_run(_cfg(run, resume="auto"), "train", LocalAccelerator())
    OmegaConf.save(saved, run / "config.yaml")
    with pytest.raises(ConfigError, match=r"data.pool_root: None -> 'x'"):
        start_run(_cfg(run, **{"resume": "auto", "data.pool_root": "x"}), "train", LocalAccelerator())


def test_a_run_folder_in_use_is_refused(tmp_path):
    from bonekit.runlog import start_run

    run = tmp_path / "run"
    run.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (run / ".lock").write_text(str(other.pid))
        with pytest.raises(ConfigError, match="in use by another run"):
            start_run(_cfg(run), "train", LocalAccelerator())
    finally:
        other.kill()
        other.wait()
    start_run(_cfg(run), "train", LocalAccelerator())  # the holder is gone: the stale lock is taken over


def test_test_split_with_data_root_needs_a_test_folder(tmp_path):
    from bonekit.data import resolve_root

    split = _split(tmp_path)
    cfg = config.load(__import__("finetune.train", fromlist=["TrainConfig"]).TrainConfig, [f"data.root={split}"])
    assert resolve_root(cfg.data, "train") == split
    with pytest.raises(ConfigError, match="data.test_root"):
        resolve_root(cfg.data, "test")


# ------------------------------------------------------------------ through accelerate launch
def _launch(args, tmp_path):
    env = {**os.environ, "BONEKIT_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1", "--num_machines",
           "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(ROOT / "finetune" / "train.py"), *args]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_cli_bad_image_exits_nonzero_naming_the_file(tmp_path):
    split = _split(tmp_path)
    png = _first_png(split)
    png.write_bytes(b"garbage")
    p = _launch([f"data.root={split}", "data.resolution=32", "data.folds=2", "loop.steps=1"], tmp_path)
    assert p.returncode != 0 and f"error: {png}" in p.stderr
    assert "Traceback" not in p.stderr.split("error:")[0]  # the script's own output holds no traceback


def test_cli_help_exits_zero(tmp_path):
    p = _launch(["--help"], tmp_path)
    assert p.returncode == 0 and "loop.steps" in p.stdout and "[loop]" in p.stdout


def test_a_missing_bone_is_never_silent(tmp_path, capsys):
    split = _split(tmp_path)
    js = _first_json(split)
    doc = json.loads(js.read_text())
    doc["annotations"] = [a for a in doc["annotations"] if a["label"] != "Pisiform"]
    js.write_text(json.dumps(doc))
    _build(split, tmp_path, workers=1)
    out = capsys.readouterr().out
    assert "lack some bones" in out and js.name in out and "Pisiform" in out
