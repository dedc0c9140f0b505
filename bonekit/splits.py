"""Person-grouped folds and nested label-fraction subsets, deterministic by seed."""

from __future__ import annotations

import math

import numpy as np


def group_folds(persons: list[str], n_folds: int, seed: int = 0) -> np.ndarray:
    """Fold number ``[N]`` of each image; all images of a person share a fold (GroupKFold by person).

    People are shuffled by ``seed`` then dealt round-robin, so folds differ in size by at most one person.
    """
    uniq = sorted(set(persons))
    if n_folds < 2:
        raise ValueError(f"folds must be >= 2, got {n_folds}")
    if len(uniq) < n_folds:
        raise ValueError(f"{len(uniq)} people cannot fill {n_folds} person-grouped folds")
    order = np.random.default_rng(seed).permutation(len(uniq))
    fold_of = {uniq[j]: i % n_folds for i, j in enumerate(order)}
    return np.array([fold_of[p] for p in persons], dtype=np.int64)


def train_val(persons: list[str], n_folds: int, fold: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices of training and validation images for ``fold``."""
    f = group_folds(persons, n_folds, seed)
    if not 0 <= fold < n_folds:
        raise ValueError(f"fold {fold} is not in [0, {n_folds})")
    return np.flatnonzero(f != fold), np.flatnonzero(f == fold)


def label_subset(train_idx: np.ndarray, fraction: float, seed: int = 0,
                 groups: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(labelled, unlabelled pool) indices of ``train_idx``.

    Nested: the subset for a smaller fraction is a prefix of the one for a larger fraction with the same seed
    (one seeded permutation, cut at ``ceil(fraction * N)``, at least one). ``groups[j]`` names the unit frame
    ``train_idx[j]`` is labelled with (its volume, for ``labels.unit=volume``): the permutation and the cut are over
    units, in order of first appearance, and a unit's frames are labelled together. Where every frame is its own
    unit (radiographs) the result is the per-frame one.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"labels.fraction must be in (0, 1], got {fraction}")
    idx = np.asarray(train_idx)
    if groups is not None and len(groups) != len(idx):
        raise ValueError(f"{len(groups)} unit names for {len(idx)} frames")
    if groups is None:
        groups = list(range(len(idx)))  # every frame its own unit
    units = list(dict.fromkeys(groups))
    order = np.random.default_rng(seed).permutation(len(units))
    n = max(1, math.ceil(round(fraction * len(units), 9)))
    keep = {units[u] for u in order[:n]}
    mask = np.array([g in keep for g in groups], dtype=bool)
    return np.sort(idx[mask]), np.sort(idx[~mask])
