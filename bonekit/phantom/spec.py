"""The phantom's spec: the ``data.phantom.*`` keys of every stage and what the generator reads (one type)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

VERSION = 1
VOLUME_LAYOUT = 2  # volumes/<split>/ (1: one volumes/ folder for every split, which leaked test people)
WIDE_VERSION = 2  # bumped whenever the wide variation's draws change, so cached datasets are regenerated


@dataclass
class Spec:
    """The embedded default: a procedural hand phantom generated on first use (bonekit.phantom)."""

    people: int = 24  # training people, two radiographs each (right and left hand)
    test_people: int = 6  # people of the test split, written beside with its labels
    size: int = 512  # radiograph side in pixels (the real data is 2048)
    seed: int = 0  # the whole dataset is a pure function of the spec
    bent_share: float = 0.11  # share of bent/rotated wrists (0.58 mimics the real test set's shift)
    test_bent_share: float | None = None  # the test split's share (None: the same as bent_share)
    volumes: bool = False  # write CT-like NIfTI volumes and train on their slices (data.slices 1: 2D, 3: 2.5D)
    volume_size: int = 128  # side of those volumes, voxels
    variation: str = "classic"  # classic (the first phantom) | wide (children, poses, clutter, exposures: phantom.md)

    def key(self) -> str:
        d = asdict(self)
        if d["volumes"]:
            d["volume_layout"] = VOLUME_LAYOUT
        if d["variation"] == "classic":  # the key of a classic dataset predates the field: keep it
            del d["variation"]
        else:
            d["wide_version"] = WIDE_VERSION
        return hashlib.sha1(json.dumps([VERSION, d], sort_keys=True).encode()).hexdigest()[:10]
