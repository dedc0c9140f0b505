"""The low-label study and the whole-pipeline demo, tiny: pretrain -> experts -> label -> distill -> evaluate ->
report, resumable; the HTML report checked in headless Chromium."""

import csv
import json
import shutil

import pytest
from conftest import ROOT, launch

TINY_STUDY = ["data.phantom.people=6", "data.phantom.test_people=1", "data.phantom.size=96", "data.resolution=64",
              "data.workers=1", "data.folds=2", "steps.pretrain=2", "steps.finetune=2", "steps.experts=2",
              "steps.distill=2", "steps.ceiling=2", "batch_size=2",
              "pretrain_args=[train.batch_size=4,views.size=32,train.workers=0]", "stage_args=[loop.workers=0]", "worst_k=2"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("study")
    cache = tmp / "cache"
    cache.mkdir()
    out = tmp / "demo"
    log = launch("finetune/study.py", [f"study={ROOT / 'configs' / 'demo.yaml'}", f"out_dir={out}"] + TINY_STUDY, cache)
    yield out, cache, log
    shutil.rmtree(tmp, ignore_errors=True)  # CI disks are small: a module's runs go when the module is done


def test_demo_runs_every_stage_and_writes_results(study):
    out, _, log = study
    assert "report ->" in log and (out / "report.html").is_file()
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [(r["method"], r["fraction"]) for r in rows] == [("ceiling", "1.0"), ("finetune", "0.1"), ("cosup", "0.1")]
    assert all(0.0 <= float(r["mean_dice"]) <= 1.0 for r in rows) and rows[2]["pgr_mean"] != ""
    assert (out / "pretrain" / "encoder.safetensors").is_file()  # pretrained once, shared by the cells
    for f in ("dice_vs_fraction.png", "per_bone_heatmap.png", "pgr.png", "pretraining.png"):
        assert (out / "figures" / f).is_file()


def test_pretraining_effect_is_paired_per_seed(tmp_path):
    """pretrained − scratch is taken per seed on the same arm and fraction; unpaired cells stay out."""
    from finetune.report_html import pretraining_effect, write_markdown

    def row(init, method, frac, seed, dice):
        return {"init": init, "method": method, "fraction": frac, "seed": seed, "mean_dice": dice,
                "per_bone": {"a": dice}, "wall_s": 1}

    rows = [row("scratch", "finetune", 0.05, 0, 0.40), row("pretrained", "finetune", 0.05, 0, 0.50),
            row("scratch", "finetune", 0.05, 1, 0.20), row("pretrained", "finetune", 0.05, 1, 0.15),
            row("pretrained", "finetune", 0.05, 2, 0.90),  # no scratch partner: not paired
            row("scratch", "finetune", 0.1, 0, 0.5)]
    effect = pretraining_effect(rows)
    assert [(f, m) for f, m, _ in effect] == [(0.05, "finetune")]
    assert effect[0][2] == pytest.approx([0.10, -0.05])
    md = write_markdown(tmp_path, rows).read_text()
    assert "| 5% | finetune | 2 | +0.0250 ± 0.1061 | 1/2 |" in md
    assert "Mixed precision the cells ran in: not recorded." in md  # cells made before it was recorded
    rows[0]["precision"], rows[1]["precision"] = "bf16", "no"
    assert "bf16, no, not recorded (differs between cells" in write_markdown(tmp_path, rows).read_text()


def test_summary_reads_every_arm_against_the_control_per_seed(tmp_path):
    """summary.md gives each arm's paired difference to the labelled-only student *and* to `pooloff` (the
    like-for-like control); the control and the references get neither against themselves."""
    from finetune.report_html import write_markdown

    def row(method, seed, dice):
        return {"init": "scratch", "method": method, "fraction": 0.05, "seed": seed, "mean_dice": dice,
                "per_bone": {"a": dice}, "wall_s": 1}

    rows = [row("finetune", 0, 0.40), row("finetune", 1, 0.30),
            row("pooloff", 0, 0.50), row("pooloff", 1, 0.40),
            row("bcp", 0, 0.60), row("bcp", 1, 0.38)]
    md = write_markdown(tmp_path, rows).read_text()
    bcp = next(line for line in md.splitlines() if "| bcp |" in line)
    # vs labelled-only: +0.20, +0.08 (2/2); vs the control: +0.10, -0.02 (1/2)
    assert "| +0.1400 ± 0.0849 | 2/2 | +0.0400 ± 0.0849 | 1/2 |" in bcp
    pooloff = next(line for line in md.splitlines() if "| pooloff |" in line)
    assert pooloff.endswith("| +0.1000 ± 0.0000 | 2/2 |  |  |")
    assert "− control (paired)" in md


def test_pretrained_unet_decoder_reaches_the_students(tmp_path):
    """With a mimunet pretraining run, the pretrained cells start from its encoder *and* decoder; with
    pretrained_decoder=false from the encoder alone, and that setting is part of the cells' settings."""
    import yaml

    from bonekit import config
    from finetune.cell_settings import cell_settings, differences, schema_defaults
    from finetune.study import Study, StudyConfig

    cache = tmp_path / "cache"
    cache.mkdir()
    out = tmp_path / "mimunet"
    args = [f"study={ROOT / 'configs' / 'lowlabel.yaml'}", f"out_dir={out}", "grid.fractions=[0.5]", "grid.seeds=[0]",
            "grid.ceiling=false", "grid.finetune_fractions=[]", "grid.inits=[pretrained]", "grid.methods=[finetune]",
            "browser_check=false"] + TINY_STUDY + [
        "pretrain_args=[train.batch_size=4,views.size=32,train.workers=0,method.name=mimunet]",
        "stage_args=[loop.workers=0,eval_resolution=64]"]
    launch("finetune/study.py", args, cache)
    dec = out / "pretrain" / "decoder.safetensors"
    cfg = yaml.safe_load((out / "pretrained" / "finetune" / "f0.5" / "s0" / "config.yaml").read_text())
    assert cfg["model"]["init_decoder"] == str(dec.resolve()) and cfg["model"]["init"].endswith("encoder.safetensors")
    off = config.load(StudyConfig, args[1:] + ["pretrained_decoder=false"])
    assert not any(a.startswith("model.init_decoder") for a in Study(off).init_args("pretrained"))
    assert cell_settings(off, "finetune", "pretrained")["pretrained_decoder"] is False
    on = config.load(StudyConfig, args[1:])
    new = cell_settings(on, "finetune", "pretrained")
    assert new["pretrained_decoder"] is True
    # a cell made before the key existed (its settings lack it) was made with the decoder's default: it still
    # matches a study with the key on, and not one with it off
    older = {k: v for k, v in new.items() if k != "pretrained_decoder"}
    assert not differences(older, new, schema_defaults(on))
    assert differences(older, cell_settings(off, "finetune", "pretrained"), schema_defaults(on))


def test_cells_made_before_a_new_key_still_match_at_its_default(tmp_path):
    """A key a newer bonekit added (model.init_decoder) is no difference while it holds its default: finished cells
    of older studies are reused; set to anything else, the cell is refused, naming the key."""
    from bonekit import config
    from bonekit.errors import ConfigError
    from finetune.cell_settings import cell_settings, claim, schema_defaults
    from finetune.study import StudyConfig

    cfg = config.load(StudyConfig, [])
    new = cell_settings(cfg, "finetune", "scratch")
    old = {k: v for k, v in new.items() if k != "student.init_decoder"}
    cell = tmp_path / "cell"
    cell.mkdir()
    (cell / "settings.json").write_text(json.dumps(old))
    claim(cell, new, defaults=schema_defaults(cfg))  # no error
    with pytest.raises(ConfigError, match="student.init_decoder"):
        claim(cell, {**new, "student.init_decoder": "d.safetensors"}, defaults=schema_defaults(cfg))
    with pytest.raises(ConfigError, match="student.init_decoder"):
        claim(cell, new)  # without the schema's defaults nothing is assumed


def test_stages_in_one_process_may_differ_in_precision(monkeypatch):
    """The study runs pretraining (fp32) and then bf16 students in one process: accelerate used to refuse the
    second precision ("AcceleratorState has already been initialized"), so grid.inits=[pretrained] with the
    benchmark's bf16 stage_args crashed after pretraining."""
    from bonekit.accel import make_accelerator

    monkeypatch.setenv("BONEKIT_CPU_BF16", "1")  # bf16 even on a CPU without it (nothing is computed here)

    assert make_accelerator("no").mixed_precision == "no"
    assert make_accelerator("bf16").mixed_precision == "bf16"
    assert make_accelerator("no").mixed_precision == "no"  # and back, as the next fp32 stage would


def test_rerun_skips_finished_cells(study):
    out, cache, _ = study
    (out / "pretrained" / "cosup" / "f0.1" / "s0" / "result.json").unlink()  # as if stopped in the last cell
    shutil.rmtree(out / "pretrained" / "cosup" / "f0.1" / "s0" / "eval")
    log = launch("finetune/study.py", [f"study={ROOT / 'configs' / 'demo.yaml'}", f"out_dir={out}"] + TINY_STUDY, cache)
    assert log.count("done, skipped") >= 2 and "pretrained/cosup/f0.1/s0: running" in log
    assert json.loads((out / "pretrained" / "cosup" / "f0.1" / "s0" / "result.json").read_text())["method"] == "cosup"


def test_changed_settings_never_reuse_a_cell(study, monkeypatch):
    """A finished cell made with other settings stops the study with the differing key (it used to be skipped and
    reported as if made with the new ones); the settings that made it run on unchanged."""
    from bonekit.errors import ConfigError
    from finetune.study import main

    out, cache, _ = study
    monkeypatch.setenv("BONEKIT_CACHE", str(cache))
    args = [f"study={ROOT / 'configs' / 'demo.yaml'}", f"out_dir={out}", *TINY_STUDY]
    recorded = json.loads((out / "pretrained" / "finetune" / "f0.1" / "s0" / "settings.json").read_text())
    assert recorded["steps.finetune"] == 2 and recorded["steps.pretrain"] == 2 and recorded["data.resolution"] == 64
    with pytest.raises(ConfigError, match=r"pretrained/ceiling/f1/s0: .*steps\.finetune: 2 -> 3"):
        main([*args, "steps.finetune=3"])
    with pytest.raises(ConfigError, match=r"\(data\.resolution: 64 -> 48\)"):
        main([*args, "data.resolution=48"])
    assert "steps.finetune: 3" not in (out / "study.yaml").read_text()  # checked before the study is recorded
    assert json.loads((out / "pretrained" / "finetune" / "f0.1" / "s0" / "settings.json").read_text()) == recorded


def test_reuse_from_copies_finished_cells_of_the_same_settings_only(study, tmp_path, monkeypatch, capsys):
    """reuse_from: an ablation in a new out_dir copies the other study's finished cells made with its settings
    (and its pretraining run) instead of training them again; a cell whose settings differ (the ceiling, with
    another steps.ceiling) is trained anew; the copies' result.json point into the new study."""
    from finetune.study import main

    out, cache, _ = study
    monkeypatch.setenv("BONEKIT_CACHE", str(cache))
    new = tmp_path / "ablation"
    main([f"study={ROOT / 'configs' / 'demo.yaml'}", f"out_dir={new}", *TINY_STUDY, f"reuse_from={out}",
          "grid.methods=[finetune]", "steps.ceiling=3", "browser_check=false"])
    log = capsys.readouterr().out
    assert "pretrain: copied from" in log and "pretrained/finetune/f0.1/s0: copied from" in log
    assert "pretrained/ceiling/f1/s0: running" in log and "ceiling/f1/s0: copied" not in log
    row = json.loads((new / "pretrained" / "finetune" / "f0.1" / "s0" / "result.json").read_text())
    old = json.loads((out / "pretrained" / "finetune" / "f0.1" / "s0" / "result.json").read_text())
    assert row["mean_dice"] == old["mean_dice"] and row["checkpoint"].startswith(str(new.resolve()))
    assert json.loads((new / "pretrained" / "ceiling" / "f1" / "s0" / "settings.json").read_text())["steps.ceiling"] == 3


def test_every_arm_names_the_settings_its_cells_depend_on():
    from finetune.cell_settings import ARM_KEYS
    from finetune.study import METHODS

    assert set(ARM_KEYS) == {"ceiling", "finetune", *METHODS}


def test_report_in_a_real_browser(study):
    from finetune.report_html import browser_check

    out, _, _ = study
    shot = out / "report.png"
    res = browser_check(out / "report.html", shot)
    assert res["images"] >= 5 and res["broken"] == [] and res["console_errors"] == []
    assert shot.is_file() and shot.stat().st_size > 10_000


def test_lowlabel_benchmark_tiny(tmp_path):
    """The benchmark's grid at toy size: every method runs, results carry the gap recovered, summary mean ± sd."""
    cache = tmp_path / "cache"
    cache.mkdir()
    out = tmp_path / "lowlabel"
    args = [f"study={ROOT / 'configs' / 'lowlabel.yaml'}", f"out_dir={out}", "grid.fractions=[0.5]", "grid.seeds=[0,1]",
            "steps.experts=1", "jobs=2"] + TINY_STUDY + ["stage_args=[loop.workers=0,eval_resolution=64]"]
    log = launch("finetune/study.py", args, cache)  # jobs=2: its chains side by side, one report at the end
    assert log.count(": started") == 4 and log.count(": done in") == 4, log
    assert {p.name for p in (out / "logs").iterdir()} == {f"scratch-s{s}-{c}.log" for s in (0, 1)
                                                         for c in ("methods", "references")}
    assert "seeds:\n  - 0\n  - 1\n" in (out / "study.yaml").read_text()  # the whole grid, not a chain's
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert "Mixed precision the cells ran in: no." in (out / "summary.md").read_text()
    methods = [(r["method"], r["fraction"]) for r in rows if r["seed"] == "0"]
    assert methods == [("ceiling", "1.0"), *[(m, "0.5") for m in ("finetune", "pooloff", "selftrain", "meanteacher",
                                                                   "cosup", "bcp")], ("finetune", "0.1")]
    # finished cells keep their models, not their optimizer states; best and last are one file when the same model
    cell = out / "scratch" / "finetune" / "f0.5" / "s0"
    assert (cell / "last.safetensors").is_file() and not (cell / "checkpoints").exists()
    assert not list(out.glob("**/checkpoints/step_*"))
    assert (cell / "last.safetensors").samefile(cell / "best.safetensors")
    bcp_cfg = (out / "scratch" / "bcp" / "f0.5" / "s0" / "student" / "config.yaml").read_text()
    assert "student_init:" in bcp_cfg and "finetune" in bcp_cfg.split("student_init:")[1].splitlines()[0]
    def dice(method, frac, seed):  # unrounded, from the cell's result.json
        return json.loads((out / "scratch" / method / f"f{frac}" / f"s{seed}" / "result.json").read_text())["mean_dice"]

    for r in rows:
        if r["method"] in ("ceiling", "finetune") or r["fraction"] == "0.1":
            assert r["gap_recovered"] == ""
            continue
        c, b, m = dice("ceiling", 1, r["seed"]), dice("finetune", 0.5, r["seed"]), dice(r["method"], 0.5, r["seed"])
        if c - b > 1e-6:
            assert abs(float(r["gap_recovered"]) - (m - b) / (c - b)) < 1e-3
        else:  # the ceiling does not beat the labelled-only student: nothing to recover
            assert r["gap_recovered"] == ""
    summary = (out / "summary.md").read_text()
    assert "gap recovered" in summary and "±" in summary  # two seeds: mean ± sd
    assert "− labelled-only (paired)" in summary and "Wall time per seed" in summary
    assert (out / "figures" / "per_bone_gain.png").stat().st_size > 10_000
    # report_only: the same table from the finished cells, running nothing
    before = sorted(tuple(r.values()) for r in rows)
    (out / "results.csv").unlink()
    out_text = launch("finetune/study.py", [f"out_dir={out}", "report_only=true", "browser_check=false"], cache)
    assert "running" not in out_text
    assert sorted(tuple(r.values()) for r in csv.DictReader(open(out / "results.csv"))) == before


def test_jobs_chains_cover_the_grid_once():
    """The chains of jobs>1, each the study with a narrowed grid, hold every cell of the grid exactly once."""
    from bonekit import config
    from finetune.study import Study, StudyConfig
    from finetune.study_jobs import chains, core_slices

    base = [f"study={ROOT / 'configs' / 'lowlabel.yaml'}".replace("study=", "config="), "grid.inits=[scratch,pretrained]",
            "grid.finetune_fractions=[0.1,0.05]"]
    cfg = config.load(StudyConfig, base)
    parts = chains(cfg.grid)
    assert [n for n, _ in parts][:2] == ["scratch-s0-methods", "scratch-s1-methods"] and len(parts) == 12
    cells = [cell for _, o in parts for cell in Study(config.load(StudyConfig, base + o)).grid_cells()]
    assert sorted(cells) == sorted(Study(cfg).grid_cells()) and len(set(cells)) == len(cells)
    assert core_slices(2, [0, 1]) == [[0], [1]] and core_slices(4, [0, 1]) == [None] * 4


def test_second_round_starts_from_the_first_rounds_student(tmp_path):
    """Round N starts from round N-1's student (bcp3 <- bcp2 <- bcp); the control pooloff2 from the bcp student with
    no loss on the pool; meanteacher2 from the meanteacher student, as a mean teacher again, and its control
    pooloff2mt from it with no loss on the pool; cosupmt from the selftrain round's student (its denoiser) and
    cosup's specialists; cosupmt2's specialists, denoiser, student and EMA teacher from the meanteacher student."""
    import yaml

    cache = tmp_path / "cache"
    cache.mkdir()
    out = tmp_path / "rounds"
    launch("finetune/study.py", [f"study={ROOT / 'configs' / 'lowlabel.yaml'}", f"out_dir={out}", "grid.fractions=[0.5]",
                                 "grid.seeds=[0]", "grid.ceiling=false", "grid.finetune_fractions=[]",
                                 "grid.methods=[bcp3,pooloff2,cosupmt,meanteacher2,cosupmt2,pooloff2mt]",
                                 "browser_check=false"]
           + TINY_STUDY + ["stage_args=[loop.workers=0,eval_resolution=64]"], cache)
    def student(m):
        return out / "scratch" / m / "f0.5" / "s0" / "student"

    kd = {}
    for m, before in (("bcp2", "bcp"), ("bcp3", "bcp2"), ("pooloff2", "bcp"), ("meanteacher2", "meanteacher"),
                      ("pooloff2mt", "meanteacher")):
        cfg = yaml.safe_load((student(m) / "config.yaml").read_text())
        assert cfg["student_init"] == str(student(before) / "round0" / "last.safetensors"), m
        kd[m] = cfg["kd"]
    assert kd["bcp3"]["bcp"] and kd["bcp3"]["ema"] > 0 and kd["bcp3"]["weight_kd"] > 0 and kd["bcp2"] == kd["bcp3"]
    assert not kd["pooloff2"]["bcp"] and kd["pooloff2"]["weight_kd"] == 0
    assert kd["pooloff2mt"]["weight_kd"] == 0 and kd["pooloff2mt"]["ema"] == 0 and not kd["pooloff2mt"]["strong"]
    mt = yaml.safe_load((student("meanteacher") / "config.yaml").read_text())
    assert kd["meanteacher2"] == mt["kd"] and mt["kd"]["ema"] > 0 and mt["kd"]["strong"] and not mt["kd"]["bcp"]
    assert mt["student_init"] == str(out / "scratch" / "finetune" / "f0.5" / "s0" / "last.safetensors")
    # cosupmt: cosup's specialists, denoised by the selftrain student, blended into a mean teacher's targets
    cfg = yaml.safe_load((student("cosupmt") / "config.yaml").read_text())
    assert cfg["kd"]["ema"] > 0 and cfg["kd"]["strong"] and cfg["kd"]["expert_blend"] == 0.5
    assert cfg["experts"] == str(student("cosup").parent / "experts")  # cosup's specialists, trained once
    assert (student("cosup").parent / "experts" / "experts.json").is_file()
    assert not (student("cosupmt").parent / "experts").exists()
    assert cfg["kd_student"] == str(student("selftrain") / "round0" / "last.safetensors")
    # cosupmt2: round 0 is the mean teacher, whose student starts the specialists, denoises and inits the student
    r0 = str(student("meanteacher") / "round0" / "last.safetensors")
    cfg = yaml.safe_load((student("cosupmt2") / "config.yaml").read_text())
    assert cfg["student_init"] == r0 and cfg["kd_student"] == r0 and cfg["kd"]["expert_blend"] == 0.5
    assert {k: v for k, v in cfg["kd"].items() if k != "expert_blend"} == {
        k: v for k, v in mt["kd"].items() if k != "expert_blend"}  # the mean teacher's recipe otherwise
    assert cfg["experts"] == str(student("cosupmt2").parent / "experts")
    ex = yaml.safe_load((student("cosupmt2").parent / "experts" / "config.yaml").read_text())
    assert ex["partition"]["generalist"] == r0 and ex["partition"]["groups"] == "regions"
    with open(out / "results.csv") as f:
        assert [r["method"] for r in csv.DictReader(f)] == ["bcp3", "pooloff2", "cosupmt", "meanteacher2", "cosupmt2",
                                                              "pooloff2mt"]
    # the docs' tables and rounds figure are made from these cells
    import subprocess
    import sys

    env = {"PYTHONPATH": str(ROOT), "PATH": ""}
    tables = subprocess.run([sys.executable, str(ROOT / "bench" / "study_tables.py"), str(out)], env=env,
                            capture_output=True, text=True, check=True).stdout
    assert "| 50% | bcp3 |" in tables and "| 50% | pooloff2 |" in tables
    for family in ("bcp", "meanteacher"):
        png = tmp_path / f"{family}.png"
        subprocess.run([sys.executable, str(ROOT / "bench" / "rounds_figure.py"), str(out), "--fraction", "0.5",
                        "--family", family, "--png", str(png)], env=env, check=True, capture_output=True)
        assert png.stat().st_size > 10_000


@pytest.mark.slow
def test_lowlabel_benchmark_one_seed(tmp_path):
    """One seed of the real benchmark (over an hour on 2 cores at its 1200/3000-step schedule): `pytest -m slow`."""
    cache = tmp_path / "cache"
    cache.mkdir()
    out = tmp_path / "lowlabel"
    launch("finetune/study.py", [f"study={ROOT / 'configs' / 'lowlabel.yaml'}", f"out_dir={out}", "grid.seeds=[0]"],
           cache, timeout=4 * 3600)
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert {r["method"] for r in rows} == {"ceiling", "finetune", "pooloff", "selftrain", "meanteacher", "cosup", "bcp"}
    dice = {(r["method"], r["fraction"]): float(r["mean_dice"]) for r in rows}
    # the benchmark's headroom (#11): every label beats the 5% labelled-only student by at least 0.15
    assert dice[("ceiling", "1.0")] - dice[("finetune", "0.05")] >= 0.15, dice


def test_jobs_stop_their_chains_and_name_a_failed_one(tmp_path, monkeypatch):
    """SIGTERM to a jobs>1 study (a scheduler, `timeout`) stops its chains; a chain that fails is named with its log
    once the others are done."""
    import os
    import signal
    import sys
    import threading
    from types import SimpleNamespace

    from bonekit import config
    from finetune import study_jobs
    from finetune.study import StudyConfig

    cfg = config.load(StudyConfig, ["grid.seeds=[0,1]", "grid.inits=[scratch]", "jobs=2"])
    study = SimpleNamespace(cfg=cfg, out=tmp_path, init_path=lambda init: None)
    pids = tmp_path / "pids"
    pids.mkdir()
    sleeper = f"import os, time; open(os.path.join({str(pids)!r}, str(os.getpid())), 'w').close(); time.sleep(120)"
    monkeypatch.setattr(study_jobs, "chain_command", lambda argv, o: [sys.executable, "-c", sleeper])
    threading.Timer(3, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()
    with pytest.raises(KeyboardInterrupt):
        study_jobs.run_chains(study, [])
    started = [int(p.name) for p in pids.iterdir()]
    assert len(started) == 2  # two at a time
    for pid in started:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # stopped and reaped

    fails = "import sys; print('cannot read the cache'); sys.exit(sys.argv[-1] == 'grid.methods=[]' and 3)"
    monkeypatch.setattr(study_jobs, "chain_command", lambda argv, o: [sys.executable, "-c", fails, *o])
    with pytest.raises(RuntimeError, match=r"\['scratch-s0-references', 'scratch-s1-references'\] failed.*"
                                           r"scratch-s0-references\.log"):
        study_jobs.run_chains(study, [])
    assert "cannot read the cache" in (tmp_path / "logs" / "scratch-s0-references.log").read_text()
