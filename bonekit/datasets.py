"""Datasets over the cache: uint8 frames (and packed masks) leave the worker processes as they are stored;
conversion to float, unpacking and augmentation happen on the device, batched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from bonekit.cache import Cache


class CachedFrames(Dataset):
    """Items ``{"image": uint8 [2k+1, R, R], "words": int32 [W, R, R], "labelled": bool, "index": int}``.

    ``indices`` select frames of the cache; ``index`` is the frame number (a stable key for augmentation seeds).
    Unlabelled frames (or ``with_masks=False``) carry all-zero words and ``labelled=False``.
    """

    def __init__(self, cache: Cache, indices: np.ndarray | list[int] | None = None, slices: int = 1,
                 with_masks: bool = True):
        if slices < 1 or slices % 2 == 0:
            raise ValueError(f"data.slices must be odd (2k+1), got {slices}")
        self.cache = cache
        self.indices = np.arange(len(cache)) if indices is None else np.asarray(indices, dtype=np.int64)
        self.k = slices // 2
        self.with_masks = with_masks and cache.masks is not None
        self.words = cache.masks.shape[1] if cache.masks is not None else 1

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        f = int(self.indices[i])
        img, words = self.cache.read(f, self.k)
        labelled = words is not None and self.with_masks
        if not labelled:
            r = self.cache.resolution
            words = np.zeros((self.words, r, r), np.int32)
        return {"image": torch.from_numpy(img), "words": torch.from_numpy(words), "labelled": labelled, "index": f}


def volume_name(frame: dict) -> str:
    """The volume a cache frame is a slice of (its file name), "" for a frame that is a whole image. Slices of one
    volume are scored together in 3D (:func:`bonekit.metrics.volume_dice`)."""
    return Path(frame["image"]).name if frame.get("kind") == "volume" else ""


class PairedFrames(Dataset):
    """Validation items: the input at training resolution, the label words at the label's own resolution."""

    def __init__(self, inputs, labels, input_indices, label_indices, slices: int = 1):
        self.inputs, self.labels = inputs, labels
        self.indices = np.asarray(input_indices, dtype=np.int64)
        self.label_indices = np.asarray(label_indices, dtype=np.int64)
        self.k = slices // 2

    def __len__(self):
        return len(self.indices)

    def volume_of(self) -> dict[int, str] | None:
        """Frame number -> its volume (:func:`volume_name`), where every frame is a slice of a volume (else None):
        validation then scores each volume in 3D, as evaluate.py does."""
        names = {int(f): volume_name(self.inputs.frames[int(f)]) for f in self.indices}
        return names if names and all(names.values()) else None

    def __getitem__(self, i):
        f = int(self.indices[i])
        img, _ = self.inputs.read(f, self.k)
        _, words = self.labels.read(int(self.label_indices[i]), 0)
        if words is None:
            raise ValueError(f"validation frame {self.labels.frames[f]['image']} has no label")
        return {"image": torch.from_numpy(img), "words": torch.from_numpy(words), "index": f}


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled order of epoch ``epoch``: a pure function of (seed, epoch), so resume sees the same order."""
    return np.random.default_rng(np.random.SeedSequence([seed, 7_777, epoch])).permutation(n)
