"""One phantom radiograph (and optionally its volume) from a seed: person, pose, view, exposure."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bonekit.classes import HAND29
from bonekit.phantom.anatomy import (
    Hand,
    Person,
    Pose,
    add_clutter,
    build_hand,
    mirror,
    rotate_in_plane,
)
from bonekit.phantom.render import Exposure, View, display, project


@dataclass
class Radiograph:
    image: np.ndarray  # uint8 [S, S]
    labels: np.ndarray  # bool [K, S, S]
    hand: Hand
    view: View
    side: str
    bent: bool


def rng_for(seed: int, *keys: int) -> np.random.Generator:
    """Independent stream per (seed, person, image): the same image whatever order or process makes it."""
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


VARIATIONS = ("classic", "wide")


def person_for(seed: int, person: int, variation: str = "classic") -> Person:
    return Person.sample(rng_for(seed, person, 10_000), wide=variation == "wide")


def make_hand(seed: int, person: int, image: int, side: str, bent_share: float,
              variation: str = "classic") -> tuple[Hand, View, np.random.Generator, bool]:
    """The posed 3D hand of one acquisition and a view placing it in a unit field; returns the image's rng.

    ``variation``: ``classic`` (the first phantom: adults and older children, mild poses, clean acquisitions) or
    ``wide`` (children from 3, curled and splayed fingers, the hand turned on the detector, zoom, clutter and a
    wide range of exposures; see docs/phantom.md)."""
    if variation not in VARIATIONS:
        raise ValueError(f"data.phantom.variation={variation!r}: choose one of {list(VARIATIONS)}")
    wide = variation == "wide"
    p = person_for(seed, person, variation)
    rng = rng_for(seed, person, image)
    pose = Pose.sample(rng, bent_share, wide)
    hand = build_hand(p, pose, rng, ring=bool(rng.random() < 0.07) and not wide)
    if wide:
        add_clutter(hand, p, rng)
        # How the hand lay on the detector: turned in the plane about the palm's centre, off-centre, zoomed.
        hand = rotate_in_plane(hand, float(np.clip(rng.normal(0, 10), -30, 30)), np.array([0.0, 3.0 * p.scale, 0.0]))
    if side == "L":
        hand = mirror(hand)
    if wide:
        fov = rng.uniform(22.0, 30.0) * p.scale
        view = View(size=1, x0=rng.normal(0.0, 0.9) * p.scale - fov / 2, y0=rng.normal(6.1, 0.8) * p.scale + fov / 2,
                    pix=fov)
        return hand, view, rng, pose.bent
    # Field of view: the hand (about 19 cm from wrist to fingertip) plus some forearm, placed with jitter.
    fov = rng.uniform(25.0, 27.0) * p.scale
    cx = rng.normal(0.0, 0.8) * p.scale
    cy = rng.normal(6.1, 0.4) * p.scale
    view = View(size=1, x0=cx - fov / 2, y0=cy + fov / 2, pix=fov)  # one pixel: call .at(size)
    return hand, view, rng, pose.bent


def radiograph(seed: int, person: int, image: int, side: str, size: int, bent_share: float = 0.11,
               variation: str = "classic") -> Radiograph:
    hand, view, rng, bent = make_hand(seed, person, image, side, bent_share, variation)
    view = view.at(size)
    att, labels = project(hand, view, len(HAND29))
    exposure = Exposure.sample_wide(rng) if variation == "wide" else Exposure.sample(rng)
    img = display(att, exposure, rng, side)
    return Radiograph(img, labels, hand, view, side, bent)
