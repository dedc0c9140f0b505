"""Run folders, metrics (CSV + TensorBoard), curves (PNG) and the progress bar shared by every stage."""

from __future__ import annotations

import csv
import math
import os
import time
from datetime import datetime
from pathlib import Path

from tqdm.auto import tqdm


def make_run_dir(run_dir: str, stage: str, accelerator) -> Path:
    """``run_dir`` or ``runs/<stage>/<timestamp>``, the same folder on every process."""
    from accelerate.utils import broadcast_object_list

    name = [run_dir or str(Path("runs") / stage / datetime.now().strftime("%Y%m%d-%H%M%S"))]
    if accelerator.num_processes > 1:
        broadcast_object_list(name, from_process=0)
    path = Path(name[0])
    if accelerator.is_main_process:
        if path.is_symlink() and not path.exists():  # mkdir would only say "File exists"
            from bonekit.errors import ConfigError

            raise ConfigError(f"{path} is a link to {os.readlink(path)}, which does not exist (moved or deleted?): "
                              "restore it, or remove the link to make the run afresh")
        path.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    return path


# Keys that may change between a run and its resumption (they say where and how far, not what is trained).
RESUME_FREE = {"resume", "run_dir", "allow_changed", "loop.stop_at_step", "train.stop_at_step", "out_dir"}


def flat(d: dict, prefix: str = "") -> dict:
    """{"data": {"phantom": {"people": 60}}} -> {"data.phantom.people": 60}, so a difference names its leaf."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat(v, key + "."))
        else:
            out[key] = v
    return out


def changed_keys(old: dict, new: dict, ignore=lambda key: False) -> list[str]:
    """``"key: old -> new"`` for every flat key whose value differs between ``old`` and ``new`` (sorted)."""
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k) and not ignore(k)]


def start_run(cfg, stage: str, accelerator) -> Path:
    """Make the run folder (the same on every process), lock it, and save the resolved config in it.

    Nothing is lost: a folder another live run holds is refused; a folder holding checkpoints is refused unless
    the run resumes (``resume=``); a resumed run with a changed config is refused, naming what changed, unless
    ``allow_changed=true``."""
    import os

    from omegaconf import OmegaConf

    from bonekit import config
    from bonekit.errors import ConfigError

    run_dir = make_run_dir(cfg.run_dir, stage, accelerator)
    if accelerator.is_main_process:
        lock = run_dir / ".lock"
        if lock.is_file():
            try:
                pid = int(lock.read_text().strip() or 0)
            except ValueError:
                pid = 0
            if pid and pid != os.getpid() and _alive(pid):
                raise ConfigError(f"{run_dir} is in use by another run (process {pid}); wait for it or choose "
                                  "another run_dir")
        lock.write_text(str(os.getpid()))
        import atexit

        atexit.register(lambda: lock.unlink(missing_ok=True) if lock.is_file() and
                        lock.read_text().strip() == str(os.getpid()) else None)
        saved = run_dir / "config.yaml"
        resuming = bool(cfg.get("resume"))
        if not resuming and (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir()):
            raise ConfigError(f"{run_dir} holds checkpoints of an earlier run: resume=auto continues it; delete the "
                              "folder or choose another run_dir to start again (nothing is deleted for you)")
        if resuming and saved.is_file() and not cfg.get("allow_changed", False):
            old = flat(OmegaConf.to_container(OmegaConf.load(saved), resolve=True))
            new = flat(config.to_dict(cfg))
            # A key this version added, at its default, behaves as the run did before the key existed.
            schema = OmegaConf.get_type(cfg)
            defaults = flat(OmegaConf.to_container(OmegaConf.structured(schema), resolve=True)) if schema else {}
            changed = changed_keys(old, new, lambda k: k in RESUME_FREE or (
                k not in old and k in defaults and new.get(k) == defaults[k]))
            if changed:
                raise ConfigError(f"resume with a changed config ({len(changed)} key(s)): " + "; ".join(changed[:6])
                                  + ". Use the old values, or allow_changed=true to continue anyway")
        # The precision really used (precision=bf16 runs fp32 on a CPU without hardware bf16): a run resumed on a
        # machine that computes differently would mix two precisions in one result.
        used, mp = run_dir / "precision.txt", str(accelerator.mixed_precision)
        before = used.read_text().strip() if resuming and used.is_file() else mp
        if before != mp and not cfg.get("allow_changed", False):
            raise ConfigError(f"{run_dir} was trained with mixed_precision={before}, and this "
                              f"machine runs {mp} (precision={cfg.get('precision', 'auto')}): resume where it was "
                              "made, or allow_changed=true to continue anyway")
        used.write_text(mp + "\n")
        config.save(cfg, saved)
    accelerator.wait_for_everyone()
    return run_dir


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLog:
    """Appends metric rows to ``metrics.csv`` and TensorBoard (main process only); plots curves at the end.

    On resume, rows logged after the checkpoint's step are dropped so the CSV matches an unbroken run.
    """

    def __init__(self, run_dir: Path, enabled: bool, resume_step: int = 0):
        self.path = run_dir / "metrics.csv"
        self.enabled = enabled
        self.rows: list[dict] = []
        self.tb = None
        if not enabled:
            return
        if self.path.is_file():
            with open(self.path) as f:
                self.rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tb"))
        except Exception:  # tensorboard missing: CSV and PNG still carry everything
            self.tb = None

    def log(self, step: int, **values: float) -> None:
        if not self.enabled:
            return
        vals = {k: float(v) for k, v in values.items()}
        if self.rows and int(self.rows[-1]["step"]) == step:
            self.rows[-1].update(vals)  # one row per step: validation joins the training row
        else:
            self.rows.append({"step": step, **vals})
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(k, float(v), step)

    def flush(self) -> None:
        if not self.enabled or not self.rows:
            return
        keys = []
        for r in self.rows:
            keys += [k for k in r if k not in keys]
        with open(self.path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(self.rows)
        if self.tb is not None:
            self.tb.flush()

    def plot(self, keys: list[str], out: Path, title: str) -> Path | None:
        """Curves of ``keys`` against step as a PNG."""
        if not self.enabled or not self.rows:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        series = {}
        for k in keys:
            pts = [(int(r["step"]), float(r[k])) for r in self.rows if r.get(k) not in (None, "")]
            pts = [(s, v) for s, v in pts if math.isfinite(v)]
            if pts:
                series[k] = pts
        if not series:  # nothing finite to draw: no blank figure
            return None
        fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
        for k, pts in series.items():
            # a single point is drawn as a point (a line through one point is invisible)
            ax.plot(*zip(*pts), label=k, marker="o" if len(pts) < 3 else None)
        ax.set_xlabel("step")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out)
        plt.close(fig)
        return out

    def close(self) -> None:
        self.flush()
        if self.tb is not None:
            self.tb.close()


class Progress:
    """tqdm bar showing loss, images/s and the share of wall time spent waiting for data."""

    def __init__(self, total: int, initial: int, desc: str, enabled: bool):
        self.bar = tqdm(total=total, initial=initial, desc=desc, disable=not enabled, dynamic_ncols=True)
        self.wait = 0.0
        self.busy = 0.0
        self.images = 0
        self.t_last = time.perf_counter()

    def data_ready(self) -> None:
        """Call when a batch arrives: the time since the last step ended was spent waiting for data."""
        now = time.perf_counter()
        self.wait += now - self.t_last
        self.t_last = now

    def step_done(self, images: int, **postfix) -> None:
        now = time.perf_counter()
        self.busy += now - self.t_last
        self.t_last = now
        self.images += images
        self.bar.set_postfix(**postfix, img_s=f"{self.rate:.1f}", wait=f"{self.wait_share:.0%}", refresh=False)
        self.bar.update()

    @property
    def rate(self) -> float:
        return self.images / max(1e-9, self.wait + self.busy)

    @property
    def wait_share(self) -> float:
        return self.wait / max(1e-9, self.wait + self.busy)

    def close(self) -> None:
        self.bar.close()
