"""Where a stage's data comes from: the configured folder, or the embedded phantom generated on first use."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from bonekit.phantom import Spec, ensure


def phantom_spec(data: DictConfig) -> Spec:
    return OmegaConf.to_object(data.phantom) if isinstance(data.phantom, DictConfig) else data.phantom


def resolve_root(data: DictConfig, split: str = "train") -> Path:
    """The folder to read: ``data.root`` if set, else the phantom's ``split`` (``volumes`` when slices > 1)."""
    if data.root:
        return Path(data.root)
    root = ensure(phantom_spec(data), data.cache_dir or None, workers=data.workers)
    if data.slices > 1:
        if not data.phantom.volumes:
            raise ValueError("data.slices > 1 needs volumes: set data.phantom.volumes=true (or a NIfTI data.root)")
        return root / "volumes"
    return root / split
