"""Who owns what: bone groups (each expert predicts only its channels) or data shards (each expert predicts all
bones but trains on one shard): k-means over encoder embeddings, hierarchical 1 -> 2 -> 4, or a meta field."""

from __future__ import annotations

import numpy as np
import torch

from bonekit.classes import GROUPINGS


def bone_groups(spec, classes: list[str]) -> dict[str, list[str]]:
    """``spec``: a preset name ("regions", "rays") or a mapping name -> bones. Every class must be owned once."""
    groups = dict(GROUPINGS[spec]) if isinstance(spec, str) else {k: list(v) for k, v in spec.items()}
    owned = [b for g in groups.values() for b in g]
    unknown = sorted(set(owned) - set(classes))
    if unknown:
        raise ValueError(f"bone groups name unknown classes {unknown}")
    twice = sorted({b for b in owned if owned.count(b) > 1})
    if twice:
        raise ValueError(f"bones owned by more than one expert: {twice}")
    missing = [c for c in classes if c not in owned]
    if missing:
        raise ValueError(f"bones owned by no expert: {missing}")
    return groups


@torch.no_grad()
def embed(encoder, frames: torch.Tensor, device, batch: int = 16) -> np.ndarray:
    """``frames uint8 [N, C, R, R]`` -> L2-normalised pooled deepest features ``[N, F]``."""
    encoder = encoder.to(device).eval()
    out = []
    for i in range(0, len(frames), batch):
        x = frames[i : i + batch].to(device).float().div(255)
        f = encoder(x)[-1].float().mean((2, 3))
        out.append(torch.nn.functional.normalize(f, dim=1).cpu())
    return torch.cat(out).numpy()


def kmeans(z: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(labels ``[N]``, centroids ``[k, F]``); deterministic for a seed."""
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(z)
    return km.labels_.astype(np.int64), km.cluster_centers_


def hierarchical(z: np.ndarray, levels: int, seed: int = 0) -> np.ndarray:
    """Bisecting k-means, 1 -> 2 -> 4 ...: shard ids ``[N]`` in [0, 2**levels)."""
    ids = np.zeros(len(z), dtype=np.int64)
    for _ in range(levels):
        new = np.zeros_like(ids)
        for s in np.unique(ids):
            m = ids == s
            sub = kmeans(z[m], 2, seed)[0] if m.sum() >= 2 else np.zeros(m.sum(), np.int64)
            new[m] = 2 * s + sub
        ids = new
    return ids


def meta_shards(frames: list[dict], field: str) -> tuple[np.ndarray, list[str]]:
    """Shards from a meta field: ``sex`` (F/M), ``age`` (bands <18, 18-40, >40) or ``side`` (R/L/unknown)."""
    def key(f):
        m = f.get("meta", {})
        if field == "sex":
            return m.get("sex", "?")
        if field == "age":
            a = m.get("age")
            return "?" if a is None else ("<18" if a < 18 else ("18-40" if a <= 40 else ">40"))
        if field == "side":
            return f.get("side") or "?"
        raise ValueError(f"partition.meta_field={field!r}: sex | age | side")

    keys = [key(f) for f in frames]
    names = sorted(set(keys))
    return np.array([names.index(k) for k in keys], dtype=np.int64), names


def centroids(z: np.ndarray, shard: np.ndarray, n: int) -> np.ndarray:
    """Mean embedding per shard (``[n, F]``, normalised) — the reference points for assigning new images."""
    c = np.stack([z[shard == s].mean(0) if (shard == s).any() else np.zeros(z.shape[1]) for s in range(n)])
    return c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)


def assign(z: np.ndarray, cents: np.ndarray) -> np.ndarray:
    """Nearest centroid by cosine similarity: a pure function of the embeddings (stable for a fixed student)."""
    return np.argmax(z @ cents.T, axis=1)
