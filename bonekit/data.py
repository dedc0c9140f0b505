"""Where a stage's data comes from: the configured folder, or the embedded phantom generated on first use."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from bonekit.phantom import Spec, ensure


def phantom_spec(data: DictConfig) -> Spec:
    return OmegaConf.to_object(data.phantom) if isinstance(data.phantom, DictConfig) else data.phantom


def resolve_root(data: DictConfig, split: str = "train") -> Path:
    """The folder of ``split`` (train | test): ``data.root`` / ``data.test_root`` when set, else the phantom's
    split (its ``volumes/<split>`` with ``data.phantom.volumes``: one frame per slice). A split that does not exist is an error, never another
    split's data under its name."""
    from bonekit.errors import ConfigError

    if split not in ("train", "test"):
        raise ConfigError(f"split={split!r}: train | test")
    if data.root:
        if split == "train":
            return Path(data.root)
        if data.get("test_root"):
            return Path(data.test_root)
        raise ConfigError(f"split=test with data.root={data.root}: set data.test_root=<the test folder> (the "
                          "training folder is not scored under the test split's name)")
    if data.slices > 1 and not data.phantom.volumes:
        raise ValueError("data.slices > 1 needs volumes: set data.phantom.volumes=true (or a NIfTI data.root)")
    root = ensure(phantom_spec(data), data.cache_dir or None, workers=data.workers)
    # With volumes every slice is a frame, whatever data.slices: slices=1 is the 2D model on the very frames the
    # 2.5D model (slices=3) sees, which is what a 2.5D-vs-2D comparison needs.
    return root / "volumes" / split if data.phantom.volumes else root / split
