"""Model factory: timm encoders through smp's ``tu-`` bridge, segmentation models, encoder save/load.

An encoder is saved as safetensors with timm's own key names (``encoder.model.state_dict()`` of smp's
``TimmUniversalEncoder``), so ``smp.<Arch>("tu-<name>", encoder_weights=None, in_channels=C)`` loads it strictly.
Nothing is ever downloaded: ``encoder_weights=None`` everywhere.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from bonekit.errors import DataError

ARCHS = {"unet": "Unet", "unetplusplus": "UnetPlusPlus", "deeplabv3plus": "DeepLabV3Plus", "fpn": "FPN",
         "upernet": "UPerNet", "segformer": "Segformer", "manet": "MAnet", "linknet": "Linknet", "pan": "PAN"}


@dataclass
class ModelConfig:
    """The ``model.*`` keys of every segmentation stage."""

    arch: str = "unet"  # unet | unetplusplus | deeplabv3plus | fpn | upernet | segformer | manet | linknet | pan
    encoder: str = "resnet18"  # any timm encoder smp takes as tu-<name>
    init: str = "scratch"  # scratch | path to a selfsup encoder.safetensors (strict load)
    init_decoder: str = ""  # "" | a selfsup decoder.safetensors (method mimunet): the U-Net decoder too (unet only)
    decoder_channels: list[int] = field(default_factory=list)  # Unet/Unet++ decoder widths, deepest first ([]: smp's)


def make_encoder(name: str, in_channels: int, depth: int = 5) -> nn.Module:
    """smp's timm bridge for ``name`` (any timm CNN: resnet18/34/50, efficientnet_b0, convnext_tiny, ...).

    ``forward(x [B, C, H, W])`` returns the feature pyramid, deepest last.
    """
    return smp.encoders.get_encoder(f"tu-{name}", in_channels=in_channels, depth=depth, weights=None)


def build_segmenter(mcfg: ModelConfig, in_channels: int, n_out: int, device) -> nn.Module:
    """The segmenter ``mcfg`` names, its encoder loaded from ``mcfg.init`` unless scratch, batch norm synchronised
    across processes (:mod:`bonekit.distributed`)."""
    from bonekit.distributed import sync_batchnorm

    model = make_segmenter(mcfg.arch, mcfg.encoder, in_channels, n_out, list(mcfg.decoder_channels))
    if mcfg.init not in ("", "scratch"):
        load_encoder(model, mcfg.init, mcfg.encoder, in_channels)
    if mcfg.init_decoder:
        load_decoder(model, mcfg.init_decoder, mcfg, in_channels)
    return sync_batchnorm(model, device)


def make_segmenter(arch: str, encoder: str, in_channels: int, classes: int,
                   decoder_channels: list[int] | None = None) -> nn.Module:
    """``[B, C, H, W] -> [B, K, H, W]`` logits (K independent sigmoids; bones overlap). ``decoder_channels``
    (Unet, Unet++: one width per decoder stage, deepest first) makes a lighter or heavier decoder."""
    key = arch.lower().replace("_", "")
    if key not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHS)}")
    cls = getattr(smp, ARCHS[key])
    extra = {}
    if decoder_channels:
        if key not in ("unet", "unetplusplus"):
            raise ValueError(f"model.decoder_channels is for unet/unetplusplus, not {arch!r}")
        if len(decoder_channels) != 5:
            raise ValueError(f"model.decoder_channels needs 5 widths (one per decoder stage), got {decoder_channels}")
        extra["decoder_channels"] = list(decoder_channels)
    return cls(encoder_name=f"tu-{encoder}", encoder_weights=None, in_channels=in_channels, classes=classes, **extra)


def encoder_of(model: nn.Module) -> nn.Module:
    """The timm model inside an smp model or a bare smp encoder (where the timm key names live)."""
    enc = getattr(model, "encoder", model)
    return getattr(enc, "model", enc)


def save_encoder(path: str | Path, encoder: nn.Module, name: str, in_channels: int, extra: dict | None = None) -> Path:
    """Write ``encoder_of(encoder).state_dict()`` (timm keys) with metadata naming the encoder and channels."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().contiguous().cpu() for k, v in encoder_of(encoder).state_dict().items()}
    meta = {"encoder": name, "in_channels": str(in_channels), "format": "bonekit-encoder-v1"}
    if extra:
        meta["extra"] = json.dumps(extra)
    save_file(sd, str(path), metadata=meta)
    return path


def read_encoder_meta(path: str | Path) -> dict:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return dict(f.metadata() or {})
    except FileNotFoundError:
        raise DataError(path, "file does not exist") from None
    except Exception as e:  # noqa: BLE001  safetensors' errors never name the file
        raise DataError(path, f"not a readable safetensors file ({type(e).__name__}: {str(e)[:120]})") from None


def _load_weights(path: str | Path) -> dict:
    """safetensors -> state dict; a damaged file or non-finite weights are errors naming the file."""
    try:
        sd = load_file(str(path))
    except Exception as e:  # noqa: BLE001
        raise DataError(path, f"not a readable safetensors file ({type(e).__name__}: {str(e)[:120]})") from None
    bad = [k for k, v in sd.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise DataError(path, f"{len(bad)} weight tensor(s) hold NaN or infinity (first: {bad[0]}): the run that "
                              "wrote it diverged")
    return sd


def load_encoder(model: nn.Module, path: str | Path, encoder_name: str | None = None, in_channels: int | None = None) -> None:
    """Strictly load an ``encoder.safetensors`` into ``model`` (an smp model or encoder).

    A file for another encoder or channel count is an error naming the file and both values.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "encoder file does not exist")
    meta = read_encoder_meta(path)
    if encoder_name and meta.get("encoder") not in (None, encoder_name):
        raise DataError(path, f"encoder is {meta.get('encoder')!r}, the model uses {encoder_name!r}")
    if in_channels and meta.get("in_channels") not in (None, str(in_channels)):
        raise DataError(path, f"encoder takes {meta.get('in_channels')} input channels, the model {in_channels}")
    sd = _load_weights(path)
    try:
        encoder_of(model).load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise DataError(path, f"encoder weights do not fit the model: {str(e).splitlines()[0]}") from None


DECODER_FORMAT = "bonekit-unet-decoder-v1"


def save_decoder(path: str | Path, decoder: nn.Module, encoder: str, in_channels: int,
                 decoder_channels: list[int], extra: dict | None = None) -> Path:
    """Write a U-Net decoder's state dict (smp ``Unet.decoder`` key names) with what it was built for: the encoder
    whose pyramid it reads, the input channels and the decoder widths ([] = smp's)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().contiguous().cpu() for k, v in decoder.state_dict().items()}
    meta = {"format": DECODER_FORMAT, "arch": "unet", "encoder": encoder, "in_channels": str(in_channels),
            "decoder_channels": json.dumps(list(decoder_channels))}
    if extra:
        meta["extra"] = json.dumps(extra)
    save_file(sd, str(path), metadata=meta)
    return path


def load_decoder(model: nn.Module, path: str | Path, mcfg: ModelConfig, in_channels: int) -> None:
    """Strictly load a pretrained ``decoder.safetensors`` into ``model.decoder`` (its output head stays new). A file
    for another architecture, encoder, channel count or decoder width is an error naming the file and both values."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "decoder file does not exist (model.init_decoder)")
    meta = read_encoder_meta(path)
    if meta.get("format") != DECODER_FORMAT:
        raise DataError(path, f"not a pretrained U-Net decoder (format {meta.get('format')!r}, expected "
                              f"{DECODER_FORMAT!r}: the decoder.safetensors of selfsup/pretrain.py method.name=mimunet)")
    if mcfg.arch.lower() != "unet":
        raise DataError(path, f"a U-Net decoder cannot initialise model.arch={mcfg.arch!r}")
    want = {"encoder": mcfg.encoder, "in_channels": str(in_channels),
            "decoder_channels": json.dumps(list(mcfg.decoder_channels))}
    for key, value in want.items():
        if meta.get(key) != value:
            raise DataError(path, f"decoder was built for {key} {meta.get(key)}, the model has {value}")
    try:
        model.decoder.load_state_dict(_load_weights(path), strict=True)
    except RuntimeError as e:
        raise DataError(path, f"decoder weights do not fit the model: {str(e).splitlines()[0]}") from None


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: the GPU when there is one, else the CPU; any other value is taken as a torch device name."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# ------------------------------------------------------------------------------------------ whole models
def model_meta(mcfg: ModelConfig, in_channels: int, classes: list[str], resolution: int, config: dict,
               **extra) -> dict:
    """What a saved segmentation model carries to be rebuilt (:func:`load_model`) and understood later."""
    return {"arch": mcfg.arch, "encoder": mcfg.encoder, "in_channels": in_channels,
            "decoder_channels": list(mcfg.decoder_channels), "classes": list(classes), "resolution": resolution,
            "config": config, **extra}



def save_model(path: str | Path, model: nn.Module, meta: dict) -> Path:
    """Segmentation weights + what is needed to rebuild the model: ``meta`` holds arch, encoder, in_channels,
    classes (names, in output order) and the resolved config."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    # Written beside and renamed: a kill mid-write never leaves a torn file under the real name, and a file
    # that shares its data with another name (last.safetensors linked to best.safetensors) is replaced, not
    # overwritten through the link.
    tmp = path.with_name(path.name + ".partial")
    save_file(sd, str(tmp), metadata={"format": "bonekit-model-v1", "meta": json.dumps(meta)})
    os.replace(tmp, path)
    return path


def link_or_copy(src: str | Path, dst: str | Path) -> Path:
    """``dst`` holds the same bytes as ``src``: a hard link where the file system allows (no second copy on
    disk), else a copy; replaced atomically either way."""
    src, dst = Path(src), Path(dst)
    tmp = dst.with_name(dst.name + ".partial")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    return dst


def read_model_meta(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "checkpoint does not exist")
    m = read_encoder_meta(path)
    if m.get("format") != "bonekit-model-v1":
        raise DataError(path, "not a bonekit model checkpoint (expected best.safetensors/last.safetensors of a run)")
    return json.loads(m["meta"])


def load_model(path: str | Path, classes: list[str] | None = None, in_channels: int | None = None) -> tuple[nn.Module, dict]:
    """Rebuild and load a saved segmentation model. A checkpoint for another class list or channel count is an
    error naming the file and both values."""
    meta = read_model_meta(path)
    if classes is not None and list(meta["classes"]) != list(classes):
        raise DataError(path, f"checkpoint predicts {len(meta['classes'])} classes {meta['classes'][:3]}..., "
                              f"the data has {len(classes)} {list(classes)[:3]}...")
    if in_channels is not None and int(meta["in_channels"]) != in_channels:
        raise DataError(path, f"checkpoint takes {meta['in_channels']} input channels, the data gives {in_channels}")
    args = (meta["arch"], meta["encoder"], int(meta["in_channels"]), len(meta["classes"]),
            meta.get("decoder_channels") or None)
    sd = _load_weights(path)
    # Built on the meta device and given the saved tensors: no random initialisation that the checkpoint would
    # overwrite (0.4 s of a resnet18 Unet per load; evaluation, teachers and reports load many).
    with torch.device("meta"):
        model = make_segmenter(*args)
    model.load_state_dict(sd, strict=True, assign=True)
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):  # a buffer the checkpoint does not hold
        model = make_segmenter(*args)
        model.load_state_dict(sd, strict=True)
    return model, meta


def init_from_model(model: nn.Module, path: str | Path, out_index: list[int]) -> None:
    """Start ``model`` from a saved segmentation model (e.g. a generalist teacher): every weight copied, the
    output head keeping only the channels ``out_index`` (positions in the saved model's class list)."""
    sd = _load_weights(path)
    own = model.state_dict()
    for k, v in sd.items():
        if k in own and own[k].shape != v.shape and v.shape[0] >= len(out_index) and own[k].shape[0] == len(out_index):
            sd[k] = v[out_index]  # the head: [K, ...] -> [K_out, ...]
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise DataError(path, f"weights do not fit the expert's model: {str(e).splitlines()[0]}") from None


def segmentation_choices(prefix: str = "loop") -> dict[str, list[str]]:
    """The fixed-choice keys every segmentation stage shares (model, loss, precision, optimizer), for
    :func:`bonekit.config.check_choices` before anything is written."""
    from bonekit.accel import PRECISIONS
    from bonekit.engine import OPTIMIZERS
    from bonekit.losses import LOSSES

    return {"model.arch": sorted(ARCHS), "loss": list(LOSSES), "precision": list(PRECISIONS),
            f"{prefix}.optimizer": list(OPTIMIZERS)}
