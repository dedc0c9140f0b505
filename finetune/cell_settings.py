"""What a study cell was made with: recorded once, checked every time the study meets the cell again.

A study skips finished cells and resumes half-run ones, which is only right if the cell was made with the settings
the study runs with now. Each cell folder holds ``settings.json`` (data, model, batch, stage keys, the arm's own
keys); a later run with other settings stops with a ConfigError naming the differing keys. Cells made before this
file existed have none and are taken as they are (their settings are recorded from then on).
"""

from __future__ import annotations

import json
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
    "meanteacher": ("steps.finetune", "steps.distill", "warm_start", "meanteacher_args"),
    "selftrain": ("steps.finetune", "steps.distill", "warm_start", "kd_args"),
    "cosup": ("steps.finetune", "steps.distill", "warm_start", "kd_args", "groups", "steps.experts"),
    "cosupgate": ("steps.finetune", "steps.distill", "warm_start", "kd_args", "groups", "steps.experts", "gate_folds"),
    **{m: ("steps.finetune", "steps.distill", "bcp_args") for m in ("bcp", "bcp2", "bcp3", "pooloff2")},
    "bcpfp": ("steps.finetune", "steps.distill", "bcp_args", "fp_args"),
}
IGNORED_DATA_KEYS = ("workers", "cache_dir", "skip_bad")  # how data is read, not what a cell learns from


def cell_settings(cfg, arm: str, init: str) -> dict:
    """The settings a cell of ``arm`` (a method, or "ceiling") under ``init`` is made with: dotted key -> value."""
    data = OmegaConf.to_container(cfg.data, resolve=True)
    keys = ["student", "batch_size", "stage_args", *ARM_KEYS[arm]]
    if init == "pretrained":
        keys += ["steps.pretrain", "pretrain_args"]
    picked = {"data": {k: v for k, v in data.items() if k not in IGNORED_DATA_KEYS}}
    for k in keys:
        v = OmegaConf.select(cfg, k)
        picked[k] = OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
    return flat(picked)


def claim(cell: Path, settings: dict, record: bool = True) -> None:
    """Check ``settings`` against what ``cell`` was made with (a ConfigError naming the differing keys: a finished
    or half-run cell of other settings is never reused silently); record them if the cell has none yet."""
    f = cell / "settings.json"
    if f.is_file():
        old = json.loads(f.read_text())
        if old != settings:
            diff = changed_keys(old, settings)
            raise ConfigError(f"{cell}: this cell was made with other settings ({'; '.join(diff)}); "
                              "set a new out_dir, or delete the cell to re-run it")
        return
    if not record:
        return
    cell.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps(settings, indent=1, sort_keys=True))
