"""Typed configs: dataclass defaults, merged with an optional YAML file and ``key=value`` overrides.

Every stage script calls :func:`load` with its own schema::

    cfg = load(PretrainConfig, sys.argv[1:])      # argv like ["config=configs/pretrain.yaml", "train.lr=0.1"]

An unknown key or a value of the wrong type raises :class:`ConfigError` naming the key; the resolved config is
saved in the run folder (:func:`save`) and in every checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from bonekit.classes import HAND29
from bonekit.errors import ConfigError
from bonekit.phantom.spec import Spec

T = TypeVar("T")


@dataclass
class DataConfig:
    """Where samples come from and how they are cached. ``root=""`` means the phantom below."""

    root: str = ""  # competition split folder (holding DCM/ and outputs_json/), COCO json, mask folder, raw folder
    test_root: str = ""  # the test split's folder when data.root is set (evaluate split=test, predict)
    pool_root: str = ""  # unlabelled X-rays (any format selfsup reads) added to the co-supervision pool, never to folds
    phantom: Spec = field(default_factory=Spec)
    classes: list[str] = field(default_factory=lambda: list(HAND29))
    resolution: int = 256  # training resolution (square); evaluation goes back to each label's own size
    slices: int = 1  # 2k+1 adjacent slices as channels; 1 for plain radiographs (or one slice of a volume)
    cache_dir: str = ""  # "" -> $BONEKIT_CACHE or ~/.cache/bonekit
    folds: int = 5
    fold: int = 0  # validation fold (person-grouped)
    skip_bad: bool = False  # skip unreadable files (counted in the log) instead of stopping
    workers: int = 2  # processes that build the cache


@dataclass
class LabelsConfig:
    """Which training images keep their labels (``labels.*``)."""

    fraction: float = 1.0  # nested label subset of the training folds; the rest is the unlabelled pool
    seed: int = 0
    # A low-label 2.5D study labels whole volumes: per frame, neighbouring slices of every volume are labelled.
    unit: str = "frame"  # what the fraction counts: frame (a radiograph or one slice) or volume (all its slices)


# YAML 1.1 reads these words as booleans: `precision=no` would become the string "False".
_YAML_BOOL_WORDS = {"yes", "no", "on", "off", "y", "n", "true", "false"}


def _keep_string(cfg: DictConfig, item: str) -> str:
    """``key=value`` with ``value`` quoted where ``key`` is a string field and YAML would read a boolean."""
    key, value = item.split("=", 1)
    if value.strip().lower() in _YAML_BOOL_WORDS:
        try:
            current = OmegaConf.select(cfg, key, throw_on_missing=False)
        except OmegaConfBaseException:
            return item  # an unknown key: the merge below names it
        if isinstance(current, str):
            return f"{key}='{value.strip()}'"
    return item


def load(schema: type[T], argv: Sequence[str] = (), base: dict | None = None) -> DictConfig:
    """Build the config for ``schema`` from ``argv`` (``config=FILE.yaml`` and ``key=value`` items).

    Order of precedence: dataclass defaults < ``base`` < YAML file < ``key=value`` overrides.
    """
    if any(a in ("--help", "-h", "help") for a in argv):
        import sys

        from bonekit.confighelp import format_help

        script = Path(sys.argv[0]).as_posix() if sys.argv and sys.argv[0].endswith(".py") else "<stage>.py"
        print(format_help(schema, f"usage: accelerate launch {script} [config=FILE.yaml] [key=value ...]\n"))
        raise SystemExit(0)
    cfg = OmegaConf.structured(schema)
    OmegaConf.set_struct(cfg, True)
    overrides = []
    yaml_files = []
    for item in argv:
        if "=" not in item:
            raise ConfigError(f"argument {item!r} is not key=value (use config=FILE.yaml for a file)")
        key, _ = item.split("=", 1)
        if key in ("config", "--config"):
            yaml_files.append(item.split("=", 1)[1])
        else:
            overrides.append(_keep_string(cfg, item.lstrip("-")))
    layers: list[Any] = []
    if base:
        layers.append(OmegaConf.create(base))
    for f in yaml_files:
        p = Path(f)
        if not p.is_file():
            raise ConfigError(f"config file {f} does not exist")
        layers.append(OmegaConf.load(p))
    if overrides:
        try:
            layers.append(OmegaConf.from_dotlist(overrides))
        except OmegaConfBaseException as e:
            raise ConfigError(f"cannot parse overrides {overrides}: {e}") from None
    for layer in layers:
        try:
            cfg = OmegaConf.merge(cfg, layer)
        except OmegaConfBaseException as e:
            from bonekit.confighelp import did_you_mean

            key = getattr(e, "full_key", None) or ""
            raise ConfigError(f"config key {key!r}: {_first_line(e)}{did_you_mean(key, schema)}") from None
    return cfg


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0]


def save(cfg: DictConfig, path: str | Path) -> Path:
    """Write the resolved config as YAML; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return path


def to_dict(cfg: DictConfig) -> dict:
    """Plain dict (for checkpoints and JSON)."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def check_choices(cfg: DictConfig, choices: dict[str, Sequence[str]]) -> None:
    """Stop before anything is written when a key with a fixed set of values holds another one (lists: every
    item). ``choices``: dotted key -> allowed values."""
    import difflib

    for key, allowed in choices.items():
        value = OmegaConf.select(cfg, key)
        for v in (list(value) if isinstance(value, (list, tuple)) or OmegaConf.is_list(value) else [value]):
            if v not in allowed:
                close = difflib.get_close_matches(str(v), [str(a) for a in allowed], n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(f"{key}={v!r} is not one of {list(allowed)}{hint}")
