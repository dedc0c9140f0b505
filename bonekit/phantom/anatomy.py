"""The 3D hand: 29 bones as unions of ellipsoids (shaft + flared ends, cortex + marrow), a soft-tissue
envelope, a pose (finger spread and flexion, wrist rotation and deviation) and per-person variation.

Proportions are adult averages in cm (metacarpals 4.6/6.8/6.4/5.8/5.3 for rays 1-5; proximal phalanges
3.2/4.0/4.5/4.2/3.3; middle 2.3/2.8/2.7/1.9 for rays 2-5; distal 2.3/1.7/1.9/1.9/1.7; carpals 1.2-2.5).
The hand is built as a right hand, palm on the detector, thumb towards -x (the image's left); a left hand is
its mirror image, as acquired.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bonekit.classes import HAND29
from bonekit.phantom.geometry import Ellipsoid, frame_along, rotation

MC = [4.6, 6.8, 6.4, 5.8, 5.3]
PP = [3.2, 4.0, 4.5, 4.2, 3.3]
MP = [None, 2.3, 2.8, 2.7, 1.9]
DP = [2.3, 1.7, 1.9, 1.9, 1.7]
# Carpometacarpal joint (x, y) and ray direction (degrees from +y, positive towards the little finger).
CMC = [(-1.55, 1.2), (-1.05, 2.55), (-0.05, 2.75), (0.9, 2.55), (1.7, 2.25)]
RAY_ANGLE = [-38.0, -9.0, -1.5, 5.0, 12.0]
SHAFT_R = {"mc": [0.55, 0.45, 0.44, 0.38, 0.37], "pp": [0.47, 0.42, 0.44, 0.41, 0.36],
           "mp": [0, 0.34, 0.36, 0.34, 0.3], "dp": [0.36, 0.28, 0.29, 0.28, 0.26]}
# Carpals: name -> (x, y, z, full sizes along (x, y, z) in cm, in-plane tilt in degrees).
CARPAL_LAYOUT = {
    "Scaphoid": (-1.25, 0.45, 0.0, (2.4, 1.25, 1.2), -35.0),
    "Lunate": (0.0, 0.3, 0.0, (1.5, 1.4, 1.4), 0.0),
    "Triquetrum": (1.05, 0.5, 0.1, (1.4, 1.15, 1.1), 20.0),
    "Pisiform": (1.3, 0.3, 1.1, (1.05, 0.95, 0.9), 10.0),  # palmar, over the Triquetrum
    "Trapezium": (-1.6, 1.5, 0.15, (1.65, 1.3, 1.3), -25.0),
    "Trapezoid": (-0.85, 1.8, 0.5, (1.15, 1.05, 1.0), -10.0),  # overlaps the Trapezium in projection
    "Capitate": (0.05, 1.55, 0.0, (1.3, 2.2, 1.3), 0.0),
    "Hamate": (1.05, 1.45, 0.05, (1.35, 1.9, 1.2), 12.0),
}
MU = {"cortex": 1.0, "marrow": 0.45, "tissue": 0.13, "metal": 6.0, "plaster": 0.32}  # 1/cm (display units)


@dataclass
class Person:
    """Per-person variation (seeded)."""

    scale: float  # overall size
    finger_scale: float  # relative finger length
    width_scale: float  # bone thickness
    age: int
    sex: str  # "F" | "M"
    weight: float
    height: float
    tissue: float  # soft-tissue thickness factor
    ossification: float = 1.0  # carpal size relative to an adult's (small, late-ossifying carpals in children)
    plate: float = 0.025  # growth-plate thickness, share of the bone's length (children only)

    @classmethod
    def sample(cls, rng: np.random.Generator, wide: bool = False) -> Person:
        if wide:
            return cls.sample_wide(rng)
        sex = "F" if rng.random() < 0.5 else "M"
        age = int(rng.choice([rng.integers(8, 18), rng.integers(18, 75)], p=[0.2, 0.8]))
        base = 0.93 if sex == "F" else 1.0
        if age < 18:
            base *= 0.75 + 0.025 * (age - 8)
        height = float(np.round(rng.normal(160 if sex == "F" else 173, 6) * (base / (0.93 if sex == "F" else 1.0)) ** 0.5, 1))
        weight = float(np.round(rng.normal(55 if sex == "F" else 70, 8) * base, 1))
        return cls(scale=base * rng.uniform(0.95, 1.05), finger_scale=rng.uniform(0.94, 1.06),
                   width_scale=rng.uniform(0.9, 1.1) * (0.95 if sex == "F" else 1.0), age=age, sex=sex,
                   weight=weight, height=height, tissue=rng.uniform(0.85, 1.2))

    @classmethod
    def sample_wide(cls, rng: np.random.Generator) -> Person:
        """The ``variation=wide`` population: a fifth children aged 5-17 (smaller hands, wide growth plates,
        carpals still small), adults to 85; thin to heavy soft tissue."""
        sex = "F" if rng.random() < 0.5 else "M"
        age = int(rng.integers(5, 18)) if rng.random() < 0.2 else int(rng.integers(18, 86))
        base = 0.93 if sex == "F" else 1.0
        if age < 18:  # hand length grows from ~70% of the adult's at 5 to 100% at 17
            base *= 0.7 + 0.3 * (age - 5) / 12
        ossification = float(np.clip(0.45 + 0.55 * (age - 5) / 9, 0.45, 1.0))
        plate = 0.05 - 0.025 * (age - 5) / 12 if age < 17 else 0.025
        height = float(np.round(rng.normal(160 if sex == "F" else 173, 7) * (base / (0.93 if sex == "F" else 1.0)) ** 0.5, 1))
        weight = float(np.round(rng.normal(55 if sex == "F" else 70, 12) * base, 1))
        return cls(scale=base * rng.uniform(0.92, 1.08), finger_scale=rng.uniform(0.9, 1.1),
                   width_scale=rng.uniform(0.85, 1.15) * (0.95 if sex == "F" else 1.0), age=age, sex=sex,
                   weight=weight, height=height, tissue=rng.uniform(0.7, 1.6), ossification=ossification,
                   plate=plate)


@dataclass
class Pose:
    """Per-image pose (seeded). Angles in degrees."""

    spread: float
    flexion: list[list[float]]  # per ray: MCP, PIP, DIP flexion (out of the detector plane)
    thumb_abduction: float
    wrist_rotation: float  # about the forearm's long axis (pronation/supination)
    wrist_deviation: float  # in-plane (radial/ulnar)
    wrist_flexion: float
    bent: bool

    @classmethod
    def sample(cls, rng: np.random.Generator, bent_share: float, wide: bool = False) -> Pose:
        if wide:
            return cls.sample_wide(rng, bent_share)
        bent = bool(rng.random() < bent_share)
        if bent:  # the pose shift of the real test set: a bent or rotated wrist
            rot, dev, flex = rng.uniform(15, 40) * rng.choice([-1, 1]), rng.uniform(10, 25) * rng.choice([-1, 1]), rng.uniform(-25, 25)
        else:
            rot, dev, flex = rng.normal(0, 3), rng.normal(0, 4), rng.normal(0, 4)
        flexion = [[abs(rng.normal(0, 12)), abs(rng.normal(0, 10)), abs(rng.normal(0, 8))] for _ in range(5)]
        return cls(spread=rng.uniform(-0.3, 1.0), flexion=flexion, thumb_abduction=rng.normal(0, 5),
                   wrist_rotation=rot, wrist_deviation=dev, wrist_flexion=flex, bent=bent)

    @classmethod
    def sample_wide(cls, rng: np.random.Generator, bent_share: float) -> Pose:
        """``variation=wide``: fingers from pressed together to splayed, some curled towards a fist (strong
        foreshortening), the thumb from adducted to abducted, and stronger wrist rotation/deviation/flexion."""
        bent = bool(rng.random() < bent_share)
        if bent:
            rot, dev, flex = rng.uniform(15, 50) * rng.choice([-1, 1]), rng.uniform(10, 30) * rng.choice([-1, 1]), rng.uniform(-35, 35)
        else:
            rot, dev, flex = rng.normal(0, 8), rng.normal(0, 8), rng.normal(0, 10)
        flexion = []
        for _ in range(5):
            curl = rng.random() < 0.1
            f = [abs(rng.normal(0, 18)), abs(rng.normal(0, 14)), abs(rng.normal(0, 10))]
            flexion.append([v + (rng.uniform(25, 50) if curl else 0.0) for v in f])
        return cls(spread=rng.uniform(-0.5, 1.5), flexion=flexion, thumb_abduction=rng.normal(0, 10),
                   wrist_rotation=rot, wrist_deviation=dev, wrist_flexion=flex, bent=bent)


@dataclass
class Solid:
    """A labelled bone: outer ellipsoids (periosteal surface), inner ones (marrow), growth plates."""

    label: int
    outer: list[Ellipsoid]
    inner: list[Ellipsoid] = field(default_factory=list)
    plates: list[Ellipsoid] = field(default_factory=list)


@dataclass
class Hand:
    bones: list[Solid]
    tissue: list[Ellipsoid]
    metal: list[tuple[Ellipsoid, Ellipsoid | None, float]]  # (outer, inner or None, attenuation): rings, casts...


def long_bone(label: int, p0: np.ndarray, p1: np.ndarray, r: float, young: bool, kind: str,
              plate: float = 0.025) -> Solid:
    """Shaft + base + head between joint points ``p0`` (proximal) and ``p1`` (distal)."""
    d = p1 - p0
    length = float(np.linalg.norm(d))
    rot = frame_along(d)
    u = d / length
    flat = 0.85  # bones are flatter front-to-back than side-to-side
    base_r = r * (1.45 if kind != "dp" else 1.35)
    head_r = r * (1.3 if kind in ("mc", "pp") else 1.15)
    shaft = Ellipsoid(p0 + 0.5 * d, rot, np.array([r, 0.5 * length, r * flat]))
    base = Ellipsoid(p0 + u * 0.14 * length, rot, np.array([base_r, 0.16 * length, base_r * flat]))
    if kind == "dp":  # distal phalanx: tapers to a tuft
        shaft = Ellipsoid(p0 + 0.45 * d, rot, np.array([r * 0.85, 0.45 * length, r * 0.8]))
        head = Ellipsoid(p1 - u * 0.13 * length, rot, np.array([r * 1.05, 0.13 * length, r * 0.75]))
    else:
        head = Ellipsoid(p1 - u * 0.12 * length, rot, np.array([head_r, 0.13 * length, head_r * flat]))
    outer = [shaft, base, head]
    inner = [shaft.scaled([0.55, 0.9, 0.55]), base.scaled(0.72), head.scaled(0.72)]
    plates = []
    if young:  # open growth plate: a thin low-density disc between the base epiphysis and the shaft
        plates.append(Ellipsoid(p0 + u * 0.22 * length, rot, np.array([base_r * 0.95, plate * length, base_r * 0.8])))
    return Solid(label, outer, inner, plates)


def build_hand(person: Person, pose: Pose, rng: np.random.Generator, ring: bool = False) -> Hand:
    """The posed right hand in world coordinates (cm); wrist centre at the origin, fingers towards +y."""
    s, fs, ws = person.scale, person.scale * person.finger_scale, person.width_scale * person.scale
    young = person.age < 17
    idx = {c: i for i, c in enumerate(HAND29)}
    bones: list[Solid] = []
    tissue: list[Ellipsoid] = []
    metal = []
    # Finger rays: forward kinematics in the hand frame (before the wrist motion).
    names = [["finger-3", "finger-2", None, "finger-1"], ["finger-7", "finger-6", "finger-5", "finger-4"],
             ["finger-11", "finger-10", "finger-9", "finger-8"], ["finger-15", "finger-14", "finger-13", "finger-12"],
             ["finger-19", "finger-18", "finger-17", "finger-16"]]
    for ray in range(5):
        ang = RAY_ANGLE[ray] * (1 + (0.2 if ray == 0 else 0.6) * pose.spread) + (pose.thumb_abduction if ray == 0 else 0)
        cx, cy = CMC[ray]
        p = np.array([cx * s, cy * s, 0.0])
        direction = rotation("z", -ang) @ np.array([0.0, 1.0, 0.0])
        lengths = [MC[ray] * s, PP[ray] * fs, (MP[ray] or 0) * fs, DP[ray] * fs]
        kinds = ["mc", "pp", "mp", "dp"]
        flex = [0.0] + pose.flexion[ray]
        ray_points = [p.copy()]
        for seg in range(4):
            if names[ray][seg] is None:
                continue
            # Flexion turns the segment out of the detector plane (about its in-plane normal): foreshortening.
            axis = np.cross(direction, [0.0, 0.0, 1.0])
            axis /= np.linalg.norm(axis)
            direction = _rodrigues(axis, -flex[seg]) @ direction
            gap = 0.12 * s  # joint space
            p0 = p + direction * gap
            p1 = p0 + direction * lengths[seg]
            r = SHAFT_R[kinds[seg]][ray] * ws
            bones.append(long_bone(idx[names[ray][seg]], p0, p1, r, young, kinds[seg], person.plate))
            p = p1
            ray_points.append(p1.copy())
        # Soft tissue of the finger: one ellipsoid per segment beyond the metacarpal, a little wider than the bone.
        for a, b in zip(ray_points[1:-1], ray_points[2:]):
            rot = frame_along(b - a)
            w = (0.75 if ray else 0.85) * ws * person.tissue
            tissue.append(Ellipsoid((a + b) / 2, rot, np.array([w, np.linalg.norm(b - a) / 2 + 0.35 * s, w * 0.9])))
        if ring and ray == 3:  # a metal ring on the ring finger's proximal phalanx
            a, b = ray_points[1], ray_points[2]
            rot = frame_along(b - a)
            c = a + 0.45 * (b - a)
            w = 0.8 * ws * person.tissue
            metal.append((Ellipsoid(c, rot, np.array([w * 1.05, 0.22, w * 0.95])),
                          Ellipsoid(c, rot, np.array([w * 0.92, 0.22, w * 0.82])), MU["metal"]))
    # Carpals.
    for name, (x, y, z, size, tilt) in CARPAL_LAYOUT.items():
        jitter = rng.normal(0, 0.04, 3) * s
        e = Ellipsoid(np.array([x * s, y * s, z * s]) + jitter, rotation("z", -tilt),
                      np.array(size) / 2 * s * np.array([ws / s, 1.0, ws / s]) * person.ossification)
        bones.append(Solid(idx[name], [e], [e.scaled(0.7)]))
    # Palm tissue.
    tissue.append(Ellipsoid(np.array([0.1, 3.9, 0.3]) * s, np.eye(3), np.array([4.3, 4.4, 1.25]) * s * person.tissue ** 0.5))
    tissue.append(Ellipsoid(np.array([-2.4, 3.0, 0.3]) * s, rotation("z", 40), np.array([1.4, 3.0, 1.2]) * s * person.tissue ** 0.5))
    hand = Hand(bones, tissue, metal)
    # Wrist motion about the wrist centre: flexion (x), rotation about the forearm axis (y), deviation (z).
    rot = rotation("z", -pose.wrist_deviation) @ rotation("y", pose.wrist_rotation) @ rotation("x", pose.wrist_flexion)
    hand = _move(hand, rot, np.zeros(3), np.array([0.0, 0.3 * s, 0.0]))
    # Forearm: distal Radius and Ulna (they do not move with the wrist), entering from the bottom edge.
    rad_head = Ellipsoid(np.array([-0.75, -1.35, 0.0]) * s, rotation("z", 8), np.array([1.55 * ws / s, 0.85, 0.95]) * s)
    rad_shaft = Ellipsoid(np.array([-0.45, -9.0, 0.0]) * s, rotation("z", 3), np.array([0.85 * ws / s, 8.0, 0.75]) * s)
    rad_neck = Ellipsoid(np.array([-0.6, -3.0, 0.0]) * s, rotation("z", 5), np.array([1.15 * ws / s, 1.9, 0.85]) * s)
    ul_head = Ellipsoid(np.array([1.5, -1.75, 0.0]) * s, np.eye(3), np.array([0.82 * ws / s, 0.75, 0.75]) * s)
    ul_shaft = Ellipsoid(np.array([1.45, -9.2, 0.0]) * s, rotation("z", -2), np.array([0.66 * ws / s, 7.8, 0.62]) * s)
    for name, prims in (("Radius", [rad_head, rad_neck, rad_shaft]), ("Ulna", [ul_head, ul_shaft])):
        inner = [prims[0].scaled(0.75)] + [q.scaled([0.55, 0.95, 0.55]) for q in prims[1:]]
        plates = [Ellipsoid(prims[0].center - np.array([0, 0.45 * s, 0]), prims[0].rot,
                            prims[0].axes * np.array([0.95, 0.05, 0.85]))] if young else []
        hand.bones.append(Solid(idx[name], prims, inner, plates))
    hand.tissue.append(Ellipsoid(np.array([0.35, -8.0, 0.2]) * s, np.eye(3), np.array([3.3, 9.0, 2.2]) * s * person.tissue ** 0.5))
    return hand


def _rodrigues(axis: np.ndarray, deg: float) -> np.ndarray:
    t = np.deg2rad(deg)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


def _move(hand: Hand, rot: np.ndarray, shift: np.ndarray, pivot: np.ndarray) -> Hand:
    f = lambda e: e.transformed(rot, shift, pivot)  # noqa: E731
    bones = [Solid(b.label, [f(e) for e in b.outer], [f(e) for e in b.inner], [f(e) for e in b.plates]) for b in hand.bones]
    return Hand(bones, [f(e) for e in hand.tissue], [(f(a), None if b is None else f(b), mu) for a, b, mu in hand.metal])


def mirror(hand: Hand) -> Hand:
    """The left hand: the mirror image in x."""
    m = lambda e: e.mirrored_x()  # noqa: E731
    bones = [Solid(b.label, [m(e) for e in b.outer], [m(e) for e in b.inner], [m(e) for e in b.plates]) for b in hand.bones]
    return Hand(bones, [m(e) for e in hand.tissue], [(m(a), None if b is None else m(b), mu) for a, b, mu in hand.metal])


def rotate_in_plane(hand: Hand, deg: float, pivot: np.ndarray) -> Hand:
    """The whole hand and forearm turned in the detector plane about ``pivot`` (how it lay on the detector)."""
    return _move(hand, rotation("z", -deg), np.zeros(3), pivot)


def add_clutter(hand: Hand, person: Person, rng: np.random.Generator) -> list[str]:
    """``variation=wide``: objects in the beam, each with its own chance: rings on any finger, a watch or bracelet,
    a plaster cast over wrist and forearm, a fixation plate with screws on the Radius. Appends to ``hand.metal``;
    returns the names of what was added."""
    s, ws = person.scale, person.width_scale * person.scale
    added = []
    if rng.random() < 0.2:  # a ring: a thin dense shell around a finger near its base
        b = hand.bones[int(rng.integers(0, 19))]  # a finger bone
        shaft = b.outer[0]
        w = 0.8 * ws * person.tissue
        hand.metal.append((Ellipsoid(shaft.center, shaft.rot, np.array([w * 1.05, 0.22, w * 0.95])),
                           Ellipsoid(shaft.center, shaft.rot, np.array([w * 0.92, 0.22, w * 0.82])), MU["metal"]))
        added.append("ring")
    if rng.random() < 0.12:  # a watch or bracelet around the distal forearm, with a dense case
        y = rng.uniform(-5.5, -3.2) * s
        c = np.array([0.4 * s, y, 0.2 * s])
        hand.metal.append((Ellipsoid(c, np.eye(3), np.array([3.0 * s, 0.7, 2.2 * s])),
                           Ellipsoid(c, np.eye(3), np.array([2.85 * s, 0.7, 2.05 * s])), MU["metal"] * 0.6))
        hand.metal.append((Ellipsoid(c + np.array([rng.uniform(-1, 1) * s, 0, 2.0 * s]), np.eye(3),
                                     np.array([1.6, 1.6, 0.5]) * s), None, MU["metal"] * 0.35))
        added.append("watch")
    if rng.random() < 0.07:  # a plaster cast: a thick low-contrast shell over the wrist and forearm
        c = np.array([0.3 * s, -3.5 * s, 0.2 * s])
        hand.metal.append((Ellipsoid(c, np.eye(3), np.array([4.6, 7.5, 3.4]) * s),
                           Ellipsoid(c, np.eye(3), np.array([3.6, 7.4, 2.5]) * s), MU["plaster"]))
        added.append("cast")
    if rng.random() < 0.05:  # a volar plate with screws on the distal Radius (after a fracture)
        c = np.array([-0.5 * s, -3.2 * s, -0.9 * s])
        hand.metal.append((Ellipsoid(c, rotation("z", 4), np.array([0.9, 2.6, 0.12]) * s), None, MU["metal"]))
        for k in range(4):
            q = c + np.array([rng.uniform(-0.4, 0.4) * s, (-1.8 + 1.1 * k) * s, 0.6 * s])
            hand.metal.append((Ellipsoid(q, rotation("x", 90), np.array([0.13, 0.8, 0.13]) * s), None, MU["metal"]))
        added.append("plate")
    return added
