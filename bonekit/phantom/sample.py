"""One phantom radiograph (and optionally its volume) from a seed: person, pose, view, exposure."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bonekit.classes import HAND29
from bonekit.phantom.anatomy import Hand, Person, Pose, build_hand, mirror
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


def person_for(seed: int, person: int) -> Person:
    return Person.sample(rng_for(seed, person, 10_000))


def make_hand(seed: int, person: int, image: int, side: str, bent_share: float) -> tuple[Hand, View, np.random.Generator, bool]:
    """The posed 3D hand of one acquisition and a view placing it in a unit field; returns the image's rng."""
    p = person_for(seed, person)
    rng = rng_for(seed, person, image)
    pose = Pose.sample(rng, bent_share)
    hand = build_hand(p, pose, rng, ring=bool(rng.random() < 0.07))
    if side == "L":
        hand = mirror(hand)
    # Field of view: the hand (about 19 cm from wrist to fingertip) plus some forearm, placed with jitter.
    fov = rng.uniform(25.0, 27.0) * p.scale
    cx = rng.normal(0.0, 0.8) * p.scale
    cy = rng.normal(6.1, 0.4) * p.scale
    view = View(size=1, x0=cx - fov / 2, y0=cy + fov / 2, pix=fov)  # one pixel: call .at(size)
    return hand, view, rng, pose.bent


def radiograph(seed: int, person: int, image: int, side: str, size: int, bent_share: float = 0.11) -> Radiograph:
    hand, view, rng, bent = make_hand(seed, person, image, side, bent_share)
    view = view.at(size)
    att, labels = project(hand, view, len(HAND29))
    img = display(att, Exposure.sample(rng), rng, side)
    return Radiograph(img, labels, hand, view, side, bent)
