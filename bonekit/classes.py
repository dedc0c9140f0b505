"""The bone registry: the 29 hand bones in competition order, anatomical groups and a palette.

Class names and order come from the data config; ``HAND29`` is the default. Heads are multi-label
(K independent sigmoids) because bones overlap in projection (Pisiform/Triquetrum, Trapezium/Trapezoid).
"""

from __future__ import annotations

import colorsys

FINGERS = [f"finger-{i}" for i in range(1, 20)]
CARPALS = ["Trapezium", "Trapezoid", "Capitate", "Hamate", "Scaphoid", "Lunate", "Triquetrum", "Pisiform"]
FOREARM = ["Radius", "Ulna"]
HAND29: list[str] = FINGERS + CARPALS + FOREARM
CLASS2IND = {c: i for i, c in enumerate(HAND29)}

# Rays run thumb -> little finger; inside a ray the bones run tip -> base (formats.md).
RAYS: dict[str, list[str]] = {
    "thumb": ["finger-1", "finger-2", "finger-3"],
    "index": ["finger-4", "finger-5", "finger-6", "finger-7"],
    "middle": ["finger-8", "finger-9", "finger-10", "finger-11"],
    "ring": ["finger-12", "finger-13", "finger-14", "finger-15"],
    "little": ["finger-16", "finger-17", "finger-18", "finger-19"],
}
# Role of each finger bone inside its ray.
DISTAL = ["finger-1", "finger-4", "finger-8", "finger-12", "finger-16"]
MIDDLE = ["finger-5", "finger-9", "finger-13", "finger-17"]
PROXIMAL = ["finger-2", "finger-6", "finger-10", "finger-14", "finger-18"]
METACARPALS = ["finger-3", "finger-7", "finger-11", "finger-15", "finger-19"]
PHALANGES = DISTAL + MIDDLE + PROXIMAL

# Ready-made partitions for co-supervision experts (cosup, partition.by=bones).
GROUPINGS: dict[str, dict[str, list[str]]] = {
    "regions": {"fingers": FINGERS, "carpals": CARPALS, "forearm": FOREARM},
    "rays": {**RAYS, "carpals": CARPALS, "forearm": FOREARM},
    "single": {"all": HAND29},  # one generalist teacher (the comparison for co-supervision)
}
# The weak classes of a strong model (formats.md): fingertips, Pisiform, Trapezoid.
SMALL_BONES = DISTAL + ["Pisiform", "Trapezoid"]
OVERLAPPING_PAIRS = [("Pisiform", "Triquetrum"), ("Trapezium", "Trapezoid")]


def palette(n: int = len(HAND29)) -> list[tuple[int, int, int]]:
    """``n`` well separated RGB colours (0..255), stable across runs (golden-ratio hue walk)."""
    out = []
    for i in range(n):
        h = (i * 0.61803398875) % 1.0
        r, g, b = colorsys.hsv_to_rgb(h, 0.75, 1.0)
        out.append((int(r * 255), int(g * 255), int(b * 255)))
    return out

