"""What a study cell was made with: recorded once, checked every time the study meets the cell again.

A study skips finished cells and resumes half-run ones, which is only right if the cell was made with the settings
the study runs with now. Each cell folder holds ``settings.json`` (data, model, batch, stage keys, the arm's own
keys); a later run with other settings stops with a ConfigError naming the differing keys. Cells made before this
file existed have none and are taken as they are (their settings are recorded from then on).

With the study's ``reuse_from=<another study's out_dir>``, a cell this study lacks is copied from the same place
there when that one is finished (``result.json``) and was made with exactly these settings: an ablation in a new
out_dir reuses the references (labelled-only students, ceilings, unchanged arms) instead of training them again.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from omegaconf import OmegaConf

from bonekit.errors import ConfigError
from bonekit.runlog import changed_keys, flat

# The study keys each arm's cells depend on, beyond data, model, batch and stage keys (pretraining's for
# init=pretrained). A later round depends on its earlier rounds' keys, cosup on selftrain's.
ARM_KEYS = {
    "finetune": ("steps.finetune",),
    "ceiling": ("steps.ceiling", "steps.finetune"),  # steps.ceiling=0 means steps.finetune
    "pooloff": ("steps.finetune", "steps.distill", "warm_start"),
    **{m: ("steps.finetune", "steps.distill", "warm_start", "meanteacher_args")
       for m in ("meanteacher", "meanteacher2", "pooloff2mt")},
    "selftrain": ("steps.finetune", "steps.distill", "warm_start", "kd_args"),
    "cosup": ("steps.finetune", "steps.distill", "warm_start", "kd_args", "groups", "steps.experts"),
    **{m: ("steps.finetune", "steps.distill", "warm_start", "kd_args", "groups", "steps.experts",
           "meanteacher_args", "blend_args") for m in ("cosupmt", "cosupmt2")},
    "cosupgate": ("steps.finetune", "steps.distill", "warm_start", "kd_args", "groups", "steps.experts", "gate_folds"),
    **{m: ("steps.finetune", "steps.distill", "bcp_args") for m in ("bcp", "bcp2", "bcp3", "pooloff2")},
    "bcpfp": ("steps.finetune", "steps.distill", "bcp_args", "fp_args"),
}
IGNORED_DATA_KEYS = ("workers", "cache_dir", "skip_bad")  # how data is read, not what a cell learns from


def _picked(cfg, keys) -> dict:
    """The study's data keys (less how data is read) and ``keys``: dotted key -> value."""
    data = OmegaConf.to_container(cfg.data, resolve=True)
    picked = {"data": {k: v for k, v in data.items() if k not in IGNORED_DATA_KEYS}}
    for k in keys:
        v = OmegaConf.select(cfg, k)
        picked[k] = OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
    return flat(picked)


def pretrain_settings(cfg) -> dict:
    """What a study's shared pretraining run is made with (data, encoder, its steps and keys)."""
    return _picked(cfg, ("student.encoder", "steps.pretrain", "pretrain_args"))


def cell_settings(cfg, arm: str, init: str) -> dict:
    """The settings a cell of ``arm`` (a method, or "ceiling") under ``init`` is made with: dotted key -> value."""
    keys = ["student", "batch_size", "stage_args", *ARM_KEYS[arm]]
    if init == "pretrained":
        keys += ["steps.pretrain", "pretrain_args", "pretrained_decoder"]
    return _picked(cfg, keys)


def schema_defaults(cfg) -> dict:
    """The study schema's defaults, flat (dotted key -> value): what a key added after a cell was made stood for."""
    schema = OmegaConf.get_type(cfg)
    return flat(OmegaConf.to_container(OmegaConf.structured(schema), resolve=True)) if schema else {}


def differences(old: dict, new: dict, defaults: dict | None = None) -> list[str]:
    """``"key: old -> new"`` where the settings differ; a key ``old`` lacks (a newer version of bonekit added it)
    counts as the same when ``new`` holds its default, which behaves as the cell was made."""
    defaults = defaults or {}
    return changed_keys(old, new, lambda k: k not in old and k in defaults and new.get(k) == defaults[k])


def claim(cell: Path, settings: dict, record: bool = True, source: Path | None = None,
          defaults: dict | None = None) -> None:
    """Check ``settings`` against what ``cell`` was made with (a ConfigError naming the differing keys: a finished
    or half-run cell of other settings is never reused silently); record them if the cell has none yet. A missing
    cell is first copied from ``source`` (the same cell of another study) if that one qualifies (``adopt``).
    ``defaults`` (:func:`schema_defaults`): keys newer than the cell, at their default, are no difference."""
    if source is not None and not cell.exists():
        adopt(cell, source, settings, defaults)
    f = cell / "settings.json"
    if f.is_file():
        old = json.loads(f.read_text())
        diff = differences(old, settings, defaults)
        if diff:
            raise ConfigError(f"{cell}: this cell was made with other settings ({'; '.join(diff)}); "
                              "set a new out_dir, or delete the cell to re-run it")
        return
    if not record:
        return
    cell.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps(settings, indent=1, sort_keys=True))


def adopt_pretraining(out: Path, source: Path, cfg) -> bool:
    """Copy the pretraining run of the study in ``source`` to ``out/pretrain`` if that study (its study.yaml) made
    it with this study's pretraining settings, so copied and new pretrained cells share one encoder."""
    enc, made = source / "pretrain" / "encoder.safetensors", source / "study.yaml"
    if not enc.is_file() or not made.is_file() or pretrain_settings(OmegaConf.load(made)) != pretrain_settings(cfg):
        return False
    shutil.copytree(source / "pretrain", out / "pretrain")
    print(f"[study] {out / 'pretrain'}: copied from {source / 'pretrain'} (same pretraining settings)")
    return True


def adopt(cell: Path, source: Path, settings: dict, defaults: dict | None = None) -> bool:
    """Copy the finished cell ``source`` to ``cell`` if it was made with ``settings`` (True if copied). Its
    ``result.json`` is rewritten to point at the copy's own checkpoint and evaluation."""
    done, made = source / "result.json", source / "settings.json"
    if not done.is_file() or not made.is_file() or differences(json.loads(made.read_text()), settings, defaults):
        return False
    shutil.copytree(source, cell)
    row = json.loads(done.read_text())
    src, dst = source.resolve(), cell.resolve()
    for key in ("checkpoint", "eval"):  # absolute paths into the source study
        old = Path(row.get(key) or "")
        if old.is_relative_to(src):
            row[key] = str(dst / old.relative_to(src))
    (cell / "result.json").write_text(json.dumps(row, indent=1))
    print(f"[study] {cell}: copied from {source} (finished, same settings)")
    return True
