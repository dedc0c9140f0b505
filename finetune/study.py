"""Low-label study: label fractions x init {scratch, pretrained} x methods x seeds.

    accelerate launch finetune/study.py [study=configs/lowlabel.yaml] [key=value ...]
    accelerate launch finetune/study.py study=configs/demo.yaml        # the whole-pipeline demo

Each cell is a run folder under ``runs/study/<name>/``; a finished cell holds ``result.json`` and is skipped when
the study runs again, so a stopped study continues where it was. Each cell also records the settings it was made
with (``settings.json``: data, model, schedule, the arm's kd keys); a later run whose settings differ stops with the
differing keys instead of reusing or resuming that cell (a new ``out_dir`` keeps both). Pretraining runs once and
is shared. Outputs: ``results.csv`` (one row per cell), plots (Dice vs label fraction with seed spread, per-bone
heatmap, PGR per bone) and one self-contained ``report.html``. ``jobs=N`` runs the grid's chains (per init and
seed: the methods, the references) in N processes side by side (``finetune/study_jobs.py``).

Methods: ``finetune/arms.py`` (the labelled-only student, the control, and each semi-supervised arm).
``warm_start=true`` starts every distilled student from the ``finetune`` student of its cell (``bcp`` always does).
A ceiling (every label) per init and seed gives PGR = (student - teacher) / (ceiling - teacher) and the gap
recovered = (method - finetune) / (ceiling - finetune).
"""

from __future__ import annotations

import csv
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from bonekit import checkpoint, config
from bonekit.cli import run
from bonekit.config import DataConfig
from bonekit.errors import ConfigError
from bonekit.models import ModelConfig
from finetune.arms import METHODS, PREVIOUS_ROUND
from finetune.cell_settings import adopt_pretraining, cell_settings, claim, schema_defaults


@dataclass
class Grid:
    fractions: list[float] = field(default_factory=lambda: [0.05, 0.25])
    inits: list[str] = field(default_factory=lambda: ["scratch", "pretrained"])
    methods: list[str] = field(default_factory=lambda: ["finetune", "cosup", "selftrain"])
    seeds: list[int] = field(default_factory=lambda: [0])
    ceiling: bool = True
    # label fractions where only the labelled-only student runs (reference points for a curve, no methods)
    finetune_fractions: list[float] = field(default_factory=list)


@dataclass
class Steps:
    pretrain: int = 60
    finetune: int = 150
    experts: int = 100
    distill: int = 150
    ceiling: int = 0  # steps of the every-label ceiling (0: steps.finetune); it needs more to converge


@dataclass
class StudyConfig:
    study: str = ""  # a YAML file with any of the keys below (same as config=)
    name: str = "study"
    out_dir: str = ""  # default runs/study/<name>
    grid: Grid = field(default_factory=Grid)
    data: DataConfig = field(default_factory=lambda: DataConfig(resolution=128))
    student: ModelConfig = field(default_factory=ModelConfig)
    groups: str = "regions"  # bone groups of the co-supervising specialists: regions | rays
    kd_args: list[str] = field(default_factory=list)  # extra kd.* keys for selftrain and the cosup students
    meanteacher_args: list[str] = field(default_factory=lambda: ["kd.ema=0.99", "kd.strong=true", "kd.rampup=0.3"])
    bcp_args: list[str] = field(default_factory=lambda: ["kd.ema=0.99", "kd.bcp=true"])
    fp_args: list[str] = field(default_factory=lambda: ["kd.fp=0.5"])  # bcpfp: bcp_args plus these
    blend_args: list[str] = field(default_factory=lambda: ["kd.expert_blend=0.5"])  # cosupmt(2): with meanteacher_args
    gate_folds: int = 5  # cosupgate: folds of the per-bone CV gate over the labelled images (at most one per image)
    warm_start: bool = False  # distilled students start from the cell's labelled-only student (bcp always does)
    steps: Steps = field(default_factory=Steps)
    batch_size: int = 8
    pretrain_args: list[str] = field(default_factory=list)  # extra key=value for selfsup/pretrain.py
    pretrained_decoder: bool = True  # init=pretrained: the U-Net decoder too, where pretraining made one (mimunet)
    stage_args: list[str] = field(default_factory=list)  # extra key=value for every segmentation stage
    worst_k: int = 4
    browser_check: bool = True  # open the report in headless Chromium (where installed) and save report.png
    report_only: bool = False  # run nothing: results, summary and report from the finished cells under out_dir
    jobs: int = 1  # processes running the grid's chains side by side (study_jobs.py), each on its share of the cores
    write_report: bool = True  # results.csv, summary.md, report.html at the end (jobs' chains leave it to the parent)
    reuse_from: str = ""  # another study's out_dir: its finished cells of identical settings are copied, not re-run


def dotlist(prefix: str, node) -> list[str]:
    """``data`` config -> ["data.resolution=128", "data.phantom.people=24", ...] for a stage's argv."""
    out = []
    for k, v in OmegaConf.to_container(node, resolve=True).items():
        key = f"{prefix}.{k}"
        if isinstance(v, dict):
            out += dotlist(key, OmegaConf.create(v))
        elif isinstance(v, list):
            out.append(f"{key}=[{','.join(str(x) for x in v)}]")
        elif v == "":
            out.append(f"{key}=''")
        elif v is None:
            out.append(f"{key}=null")
        else:
            out.append(f"{key}={v}")
    return out


class Study:
    def __init__(self, cfg):
        self.cfg = cfg
        self.out = Path(cfg.out_dir or Path("runs") / "study" / cfg.name)
        self.data_args = dotlist("data", cfg.data)
        self.defaults = schema_defaults(cfg)  # keys newer than a cell, at their default, still match it

    def claim(self, cell: Path, arm: str, init: str, record: bool = True) -> None:
        """``cell_settings.claim`` for a cell of ``arm``, copying it from ``reuse_from`` where that has it done."""
        src = Path(self.cfg.reuse_from) / cell.relative_to(self.out) if self.cfg.reuse_from else None
        claim(cell, cell_settings(self.cfg, arm, init), record, src, self.defaults)

    # ---------------------------------------------------------------- stages, called in-process
    def _seg_common(self, seed: int) -> list[str]:
        c = self.cfg
        return self.data_args + [f"loop.batch_size={c.batch_size}", f"loop.seed={seed}", "loop.eval_every=0",
                                 *c.stage_args]

    def precision(self) -> str:
        """The mixed precision the segmentation stages run in here (``precision=`` of stage_args, else auto)."""
        from bonekit.accel import resolve_precision

        return resolve_precision(str(OmegaConf.from_dotlist(list(self.cfg.stage_args)).get("precision", "auto")))

    def init_path(self, init: str) -> str:
        if init == "scratch":
            return "scratch"
        if init != "pretrained":
            raise ValueError(f"grid.inits: scratch | pretrained, got {init!r}")
        enc = self.out / "pretrain" / "encoder.safetensors"
        if not enc.is_file() and self.cfg.reuse_from:
            adopt_pretraining(self.out, Path(self.cfg.reuse_from), self.cfg)
        if not enc.is_file():
            from selfsup.pretrain import main as pretrain

            c = self.cfg
            args = self.data_args + [f"encoder={c.student.encoder}", f"train.steps={c.steps.pretrain}",
                                     f"run_dir={self.out / 'pretrain'}", *c.pretrain_args]
            pretrain(args)
        return str(enc.resolve())

    def init_args(self, init: str) -> list[str]:
        """``model.init`` for ``init``, and ``model.init_decoder`` where the pretraining trained a U-Net decoder
        (``method.name=mimunet``) and ``pretrained_decoder`` is on."""
        args = [f"model.init={self.init_path(init)}"]
        dec = self.out / "pretrain" / "decoder.safetensors"
        if init == "pretrained" and self.cfg.pretrained_decoder and dec.is_file():
            args.append(f"model.init_decoder={dec.resolve()}")
        return args

    def finetune(self, cell: Path, fraction: float, init: str, seed: int, steps: int = 0) -> Path:
        from finetune.train import main as train

        c = self.cfg
        if not (cell / "last.safetensors").is_file():
            train(self._seg_common(seed) + [f"labels.fraction={fraction}", f"labels.seed={seed}",
                                           f"model.arch={c.student.arch}", f"model.encoder={c.student.encoder}",
                                           *self.init_args(init), f"loop.steps={steps or c.steps.finetune}",
                                           f"run_dir={cell}", "resume=auto"])
        return cell / "last.safetensors"

    def experts(self, out: Path, fraction: float, init: str, seed: int, groups: str, generalist: str,
                steps: int, extra: tuple[str, ...] = ()) -> Path:
        """Experts owning ``groups``, each started from the ``generalist`` model (steps=0: taken as it is)."""
        from cosup.experts import main as experts

        c = self.cfg
        if not (out / "experts.json").is_file():
            experts(self._seg_common(seed) + [f"labels.fraction={fraction}", f"labels.seed={seed}",
                                             f"partition.groups={groups}", f"partition.generalist={generalist}",
                                             f"model.arch={c.student.arch}", f"model.encoder={c.student.encoder}",
                                             *self.init_args(init), f"loop.steps={steps}",
                                             f"run_dir={out}", "resume=auto", *extra])
        return out

    def distilled(self, cell: Path, fraction: float, init: str, seed: int, experts: Path | None,
                  extra: list[str], ceiling: str, warm: Path | None = None) -> Path:
        """A student from ``experts`` (or, without, a pool-only loop: mean teacher or pooloff), ``extra`` kd keys."""
        from finetune.distill import main as distill

        c = self.cfg
        st = cell / "student"
        last = st / "round0" / "last.safetensors"
        if not last.is_file() or not (st / "report.csv").is_file():
            args = self._seg_common(seed) + [
                f"loop.batch_size={2 * c.batch_size}", "kd.labelled_share=0.5", f"labels.fraction={fraction}",
                f"labels.seed={seed}", f"model.arch={c.student.arch}", f"model.encoder={c.student.encoder}",
                *self.init_args(init), f"loop.steps={c.steps.distill}", f"run_dir={st}",
                "resume=auto", *extra]
            if experts is not None:
                args.append(f"experts={experts}")
            if warm is not None:
                args.append(f"student_init={warm}")
            base = self.cell_dir(init, "finetune", fraction, seed) / "last.safetensors"
            if base.is_file():
                args.append(f"report.baseline={base}")
            if ceiling:
                args.append(f"report.ceiling={ceiling}")
            distill(args)
        return last

    def method(self, method: str, cell: Path, frac: float, init: str, seed: int, ceiling: str) -> Path:
        """One semi-supervised arm (see the module doc); its generalist is the ``finetune`` cell's student."""
        c = self.cfg
        base = self.cell_dir(init, "finetune", frac, seed)
        self.claim(base, "finetune", init)
        generalist = self.finetune(base, frac, init, seed)
        warm = generalist if c.warm_start else None
        if method == "pooloff":
            return self.distilled(cell, frac, init, seed, None, ["kd.weight_kd=0"], ceiling, warm)
        if method == "meanteacher":
            return self.distilled(cell, frac, init, seed, None, list(c.meanteacher_args), ceiling, warm)
        if method in ("bcp", "bcpfp"):
            extra = [*c.bcp_args, *(c.fp_args if method == "bcpfp" else ())]
            return self.distilled(cell, frac, init, seed, None, extra, ceiling, generalist)
        if method in PREVIOUS_ROUND:  # a later round, or its control with no loss on the pool (pooloff2*)
            prev = self.earlier(PREVIOUS_ROUND[method], frac, init, seed, ceiling)
            extra = (["kd.weight_kd=0"] if method.startswith("pooloff") else
                     list(c.meanteacher_args) if method == "meanteacher2" else list(c.bcp_args))
            return self.distilled(cell, frac, init, seed, None, extra, ceiling, prev)
        if method == "cosupmt2":  # round 0: the mean teacher; its student is generalist, denoiser and init
            r0 = self.earlier("meanteacher", frac, init, seed, ceiling)
            ex = self.experts(cell / "experts", frac, init, seed, c.groups, str(r0), c.steps.experts)
            extra = [*c.kd_args, *c.meanteacher_args, *c.blend_args, f"kd_student={r0}"]
            return self.distilled(cell, frac, init, seed, ex, extra, ceiling, r0)
        if method == "selftrain":
            ex = self.experts(cell / "experts", frac, init, seed, "single", str(generalist), 0)
            return self.distilled(cell, frac, init, seed, ex, list(c.kd_args), ceiling, warm)
        # cosup: round 0 is the self-trained student; round 1's specialists start from the generalist and are
        # routed and denoised by that student.
        round0 = self.earlier("selftrain", frac, init, seed, ceiling)
        gate = (f"gate.folds={c.gate_folds}", f"gate.generalist_steps={c.steps.finetune}") if method == "cosupgate" else ()
        ex_cell = cell
        if method == "cosupmt":  # cosup's specialists (same generalist, groups, steps): trained once for both arms
            ex_cell = self.cell_dir(init, "cosup", frac, seed)
            self.claim(ex_cell, "cosup", init)
        ex = self.experts(ex_cell / "experts", frac, init, seed, c.groups, str(generalist), c.steps.experts, gate)
        mt = [*c.meanteacher_args, *c.blend_args] if method == "cosupmt" else []  # the experts under a mean teacher
        return self.distilled(cell, frac, init, seed, ex, [*c.kd_args, *mt, f"kd_student={round0}"], ceiling, warm)

    def earlier(self, arm: str, frac: float, init: str, seed: int, ceiling: str) -> Path:
        """The student of ``arm``'s cell (an earlier round a cell builds on), claimed and run if not done yet."""
        cell = self.cell_dir(init, arm, frac, seed)
        self.claim(cell, arm, init)
        return self.method(arm, cell, frac, init, seed, ceiling)

    def evaluate(self, checkpoint: Path, out: Path) -> dict:
        from finetune.evaluate import main as evaluate

        if not (out / "per_bone.csv").is_file():
            evaluate([f"checkpoint={checkpoint}", f"out_dir={out}", "split=val", f"worst_k={self.cfg.worst_k}"])
        with open(out / "per_bone.csv") as f:
            return {r["class"]: float(r["dice"]) for r in csv.DictReader(f)}

    # ---------------------------------------------------------------- the grid
    def run(self, argv: list[str] | None = None) -> Path:
        """Run the grid (``argv``: the study's own arguments, which ``jobs`` > 1 hands to its chains)."""
        c = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        if not c.report_only:
            for init, name, frac, seed in self.grid_cells():  # before anything is recorded or run
                self.claim(self.cell_dir(init, name, frac, seed), name, init, record=False)
            if c.write_report:  # a chain of jobs>1 (write_report=false) leaves the study's own record alone
                config.save(c, self.out / "study.yaml")
            if c.jobs > 1:
                from finetune.study_jobs import run_chains

                run_chains(self, list(argv or []))
        if c.report_only:  # every finished cell, whatever grid made it (e.g. several partial runs side by side)
            rows = [json.loads(p.read_text()) for p in sorted(self.out.glob("*/*/*/s*/result.json"))]
            if not rows:
                raise FileNotFoundError(f"{self.out}: no finished cell (result.json) to report")
            order = {m: i for i, m in enumerate(["ceiling", "finetune", *METHODS])}
            rows.sort(key=lambda r: (r["init"], r["seed"], -r["fraction"] if r["method"] == "ceiling" else 0,
                                     r["fraction"], order.get(r["method"], 99)))
        elif c.jobs > 1:  # the chains ran the cells: theirs, in the grid's order
            rows = [json.loads((self.cell_dir(*cell) / "result.json").read_text()) for cell in self.grid_cells()]
        else:
            rows, ceilings = [], {}  # (init, seed) -> the ceiling row, whose checkpoint that seed's students report
            for init, name, frac, seed in self.grid_cells():
                if name == "ceiling":
                    rows.append(self.cell("finetune", 1.0, init, seed, ceiling_row=True))
                    ceilings[init, seed] = rows[-1]
                else:
                    rows.append(self.cell(name, frac, init, seed, ceiling=ceilings.get((init, seed))))
        if not c.write_report:
            return self.out
        from finetune.report_html import add_pgr, gap_recovered, write_report

        add_pgr(rows)  # recomputed from the rows, so cells written by older versions agree
        gap_recovered(rows)
        self.write(rows)

        html = write_report(self.out, rows, c)
        print(f"study: {len(rows)} cells -> {self.out / 'results.csv'}; report -> {html.resolve()}")
        if c.browser_check:
            import shutil

            from finetune.report_html import browser_check

            chromium = shutil.which("chromium") or shutil.which("chromium-browser")
            try:
                import playwright  # noqa: F401
            except ImportError:
                chromium = None
            if chromium:
                res = browser_check(html, self.out / "report.png", chromium)
                bad = res["broken"] or res["console_errors"]
                print(f"browser check ({chromium}): {res['images']} images, "
                      + (f"PROBLEMS: {res}" if bad else f"all loaded, no console error; screenshot {res['screenshot']}"))
            else:
                print("browser check skipped: no Chromium/playwright here (browser_check=false silences this)")
        return html

    def cell_dir(self, init: str, name: str, frac: float, seed: int) -> Path:
        return self.out / init / name / f"f{frac:g}" / f"s{seed}"

    def grid_cells(self) -> list[tuple[str, str, float, int]]:
        """(init, arm, fraction, seed) of every cell the grid asks for, in the order they run."""
        g = self.cfg.grid
        out = []
        for init in g.inits:
            for seed in g.seeds:
                out += [(init, "ceiling", 1.0, seed)] if g.ceiling else []
                out += [(init, m, f, seed) for f in g.fractions for m in g.methods]
                out += [(init, "finetune", f, seed) for f in g.finetune_fractions if f not in g.fractions]
        return out

    def cell(self, method: str, frac: float, init: str, seed: int, ceiling: dict | None = None,
             ceiling_row: bool = False) -> dict:
        name = "ceiling" if ceiling_row else method
        cell = self.cell_dir(init, name, frac, seed)
        done = cell / "result.json"
        self.claim(cell, name, init)
        if done.is_file():
            print(f"[study] {init}/{name}/f{frac:g}/s{seed}: done, skipped")
            return json.loads(done.read_text())
        print(f"[study] {init}/{name}/f{frac:g}/s{seed}: running")
        t0 = time.time()
        teacher = None
        if method == "finetune":
            ck = self.finetune(cell, frac, init, seed, self.cfg.steps.ceiling if ceiling_row else 0)
        elif method in METHODS:
            ck = self.method(method, cell, frac, init, seed, ceiling["checkpoint"] if ceiling else "")
            with open(cell / "student" / "report.csv") as f:
                rep = {r["model"]: r for r in csv.DictReader(f)}
            if "teacher" in rep:
                teacher = {k: float(v) for k, v in rep["teacher"].items() if k not in ("model", "mean") and v != ""}
        else:
            raise ValueError(f"grid.methods: choose from {['finetune', *METHODS]}, got {method!r}")
        per_bone = self.evaluate(ck, cell / "eval")
        row = {"fraction": frac, "init": init, "method": name, "seed": seed,
               "mean_dice": float(np.mean(list(per_bone.values()))), "per_bone": per_bone, "teacher": teacher,
               "checkpoint": str(ck.resolve()), "eval": str((cell / "eval").resolve()),
               "wall_s": round(time.time() - t0, 1), "precision": self.precision()}
        done.parent.mkdir(parents=True, exist_ok=True)
        done.write_text(json.dumps(row, indent=1))
        # A finished cell is never resumed: its optimizer state (twice the weights) goes; last.safetensors stays.
        checkpoint.prune_finished(cell)
        return row

    def write(self, rows: list[dict]) -> None:
        names = list(rows[0]["per_bone"]) if rows else []
        with open(self.out / "results.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["fraction", "init", "method", "seed", "mean_dice", "pgr_mean", "gap_recovered", "wall_s"] + names
                       + [f"pgr:{n}" for n in names])
            for r in rows:
                p = r.get("pgr") or {}
                w.writerow([r["fraction"], r["init"], r["method"], r["seed"], f"{r['mean_dice']:.4f}",
                            "" if r.get("pgr_mean") is None else f"{r['pgr_mean']:.4f}",
                            "" if r.get("gap") is None else f"{r['gap']:.4f}", r["wall_s"]]
                           + [f"{r['per_bone'][n]:.4f}" for n in names]
                           + ["" if p.get(n) is None else f"{p[n]:.4f}" for n in names])


def main(argv: list[str] | None = None) -> Path:
    argv = sys.argv[1:] if argv is None else argv
    # study=FILE.yaml is the documented spelling of config=FILE.yaml.
    argv = [("config=" + a.split("=", 1)[1]) if a.startswith("study=") else a for a in argv]
    cfg = config.load(StudyConfig, argv)
    config.check_choices(cfg, {"grid.methods": ["finetune", *METHODS], "grid.inits": ["scratch", "pretrained"],
                               "groups": ["regions", "rays"]})
    if cfg.jobs < 1:
        raise ConfigError(f"jobs={cfg.jobs}: at least 1")
    return Study(cfg).run(argv)


if __name__ == "__main__":
    run(main)
