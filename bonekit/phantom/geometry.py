"""Exact ray geometry of ellipsoids: chord intervals along the projection axis, and point-inside tests.

World units are centimetres; x runs along image columns, y along image rows *upwards*, z towards the source.
Rays are parallel to z (a parallel-beam radiograph), so the line integral through a solid is a chord length.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Ellipsoid:
    """``center [3]``, ``rot [3, 3]`` (columns = local axes in world coords), ``axes [3]`` semi-axes."""

    center: np.ndarray
    rot: np.ndarray
    axes: np.ndarray

    def matrix(self) -> np.ndarray:
        """Quadric matrix M: the solid is ``(p - c)^T M (p - c) <= 1``."""
        return self.rot @ np.diag(1.0 / self.axes**2) @ self.rot.T

    def half_extent(self) -> np.ndarray:
        """Half-size of the world-aligned bounding box, ``[3]`` (exact for an ellipsoid)."""
        return np.sqrt(((self.rot * self.axes[None, :]) ** 2).sum(1))

    def scaled(self, s) -> Ellipsoid:
        """The same ellipsoid shrunk about its own centre (so it lies inside the original for s <= 1)."""
        return Ellipsoid(self.center, self.rot, self.axes * np.asarray(s, dtype=np.float64))

    def transformed(self, rot: np.ndarray, shift: np.ndarray, pivot: np.ndarray) -> Ellipsoid:
        """Rigid motion: rotate by ``rot`` about ``pivot``, then add ``shift``."""
        return Ellipsoid(rot @ (self.center - pivot) + pivot + shift, rot @ self.rot, self.axes)

    def mirrored_x(self) -> Ellipsoid:
        f = np.diag([-1.0, 1.0, 1.0])
        return Ellipsoid(f @ self.center, f @ self.rot, self.axes)


EMPTY = -1e9  # interval bounds of a ray that misses: sorts first and never raises the running maximum


def chord_interval(e: Ellipsoid, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Entry and exit z of the rays through ``(x, y)`` (broadcastable grids) -> ``lo, hi`` (EMPTY where missed)."""
    m = e.matrix()
    dx, dy = x - e.center[0], y - e.center[1]
    a = m[2, 2]
    b = m[0, 2] * dx + m[1, 2] * dy
    c = m[0, 0] * dx * dx + 2 * m[0, 1] * dx * dy + m[1, 1] * dy * dy - 1.0
    disc = b * b - a * c
    hit = disc > 0
    root = np.sqrt(np.where(hit, disc, 0.0))
    lo = np.where(hit, (-b - root) / a + e.center[2], EMPTY)
    hi = np.where(hit, (-b + root) / a + e.center[2], EMPTY)
    return lo, hi


def union_length(los: np.ndarray, his: np.ndarray) -> np.ndarray:
    """Length of the union of intervals ``[los[i], his[i]]`` along axis 0 (exact, any count).

    Up to three intervals: inclusion-exclusion (an intersection of intervals is an interval). More: sorted by
    entry, each interval adds what lies beyond the furthest exit seen so far.
    """
    n = los.shape[0]
    if n == 1:
        return his[0] - los[0]
    if n <= 3:
        from itertools import combinations

        total = np.zeros(los.shape[1:], dtype=los.dtype)
        for r in range(1, n + 1):
            sign = 1.0 if r % 2 else -1.0
            for sub in combinations(range(n), r):
                lo = los[list(sub)].max(0) if r > 1 else los[sub[0]]
                hi = his[list(sub)].min(0) if r > 1 else his[sub[0]]
                total += sign * np.maximum(hi - lo, 0.0)
        return total
    order = np.argsort(los, axis=0)
    lo = np.take_along_axis(los, order, 0)
    hi = np.take_along_axis(his, order, 0)
    total = np.zeros(lo.shape[1:])
    reach = np.full(lo.shape[1:], EMPTY)
    for i in range(lo.shape[0]):
        total += np.maximum(0.0, hi[i] - np.maximum(lo[i], reach))
        reach = np.maximum(reach, hi[i])
    return total


def inside(e: Ellipsoid, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Point-in-solid test on broadcastable coordinate grids."""
    m = e.matrix()
    d = [x - e.center[0], y - e.center[1], z - e.center[2]]
    q = sum(m[i, j] * d[i] * d[j] for i in range(3) for j in range(3))
    return q <= 1.0


def rotation(axis: str, deg: float) -> np.ndarray:
    """Rotation matrix about a world axis ('x', 'y' or 'z') by ``deg`` degrees (right-handed)."""
    t = np.deg2rad(deg)
    c, s = np.cos(t), np.sin(t)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def frame_along(d: np.ndarray) -> np.ndarray:
    """Rotation whose second column is the unit vector ``d`` (the bone's long axis), first column in-plane."""
    d = d / np.linalg.norm(d)
    z = np.array([0.0, 0.0, 1.0])
    ex = np.cross(d, z)
    if np.linalg.norm(ex) < 1e-6:
        ex = np.array([1.0, 0.0, 0.0])
    ex /= np.linalg.norm(ex)
    ez = np.cross(ex, d)
    return np.stack([ex, d, ez], 1)
