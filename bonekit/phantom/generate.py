"""Write a phantom dataset in exactly the competition layout (formats.md), plus optional NIfTI volumes.

```
<out>/meta_data.xlsx
<out>/train/DCM/IDxxx/image<13-digit ms>.png      (ID001: image..._R.png / image..._L.png)
<out>/train/outputs_json/IDxxx/image<...>.json
<out>/test/DCM/...                                 test IDs interleave with train IDs
<out>/test/outputs_json/...                        the test labels, written beside so submissions can be scored
<out>/volumes/<split>/IDxxx_<side>.nii, IDxxx_<side>_label.nii     (with volumes=True; per split, so no
                                                                   test person reaches training)
```
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from bonekit.classes import HAND29
from bonekit.formats import competition
from bonekit.phantom.sample import make_hand, person_for, radiograph, rng_for
from bonekit.phantom.spec import VERSION, Spec
from bonekit.workers import pool

BASE_TS = 1661130828152


def _check(spec: Spec) -> None:
    if spec.people < 1:
        raise ValueError(f"--people must be >= 1, got {spec.people}")
    if spec.test_people < 0:
        raise ValueError(f"--test-people must be >= 0, got {spec.test_people}")
    if not 64 <= spec.size <= 2048:
        raise ValueError(f"--size must be in [64, 2048], got {spec.size}")
    if spec.variation not in ("classic", "wide"):
        raise ValueError(f"variation must be classic or wide, got {spec.variation!r}")
    if not 0.0 <= spec.bent_share <= 1.0:
        raise ValueError(f"--bent-share must be in [0, 1], got {spec.bent_share}")


def plan(spec: Spec) -> list[dict]:
    """Every image to write: person number, split, side, file name (deterministic from the seed)."""
    total = spec.people + spec.test_people
    rng = rng_for(spec.seed, 999_999)
    test_ids = set((rng.permutation(total)[: spec.test_people] + 1).tolist())
    jobs = []
    for pid in range(1, total + 1):
        person = f"ID{pid:03d}"
        split = "test" if pid in test_ids else "train"
        for j, side in enumerate(("R", "L")):
            ts = BASE_TS + pid * 86_400_000 // 7 + j * 61_000 + int(rng.integers(0, 999))
            name = f"image{ts}" + (f"_{side}" if pid == 1 else "") + ".png"
            jobs.append({"pid": pid, "person": person, "split": split, "side": side, "image": j, "name": name})
    return jobs


def _write_one(args: tuple[Spec, dict, str]) -> dict:
    spec, job, out = args
    bent = spec.bent_share if job["split"] == "train" or spec.test_bent_share is None else spec.test_bent_share
    r = radiograph(spec.seed, job["pid"], job["image"], job["side"], spec.size, bent, spec.variation)
    polys = {}
    for k, c in enumerate(HAND29):
        poly = competition.mask_to_polygon(r.labels[k])
        if len(poly) >= 3:
            polys[c] = poly
    competition.write_sample(Path(out) / job["split"], job["person"], job["name"], r.image, polys)
    if spec.volumes:
        from bonekit.phantom.volume import voxelise, write_volume

        hand, view, _, _ = make_hand(spec.seed, job["pid"], job["image"], job["side"], bent, spec.variation)
        view = view.at(spec.volume_size)
        mu, lab = voxelise(hand, view, len(HAND29))
        write_volume(Path(out) / "volumes" / job["split"] / f"{job['person']}_{job['side']}", mu, lab, view.pix * 10)
    return {"name": job["name"], "bent": r.bent, "classes": len(polys)}


def generate(out: str | Path, spec: Spec, workers: int = 1, progress: bool = True) -> Path:
    """Write the dataset ``spec`` into ``out`` (which must not exist or be empty). Returns ``out``."""
    _check(spec)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out}: output folder exists and is not empty")
    jobs = plan(spec)
    args = [(spec, j, str(out)) for j in jobs]
    bar = tqdm(total=len(jobs), desc="phantom", unit="img", disable=not progress)
    results = []
    if workers > 1:
        with pool(workers) as ex:
            for res in ex.map(_write_one, args, chunksize=4):
                results.append(res)
                bar.update()
    else:
        for a in args:
            results.append(_write_one(a))
            bar.update()
    bar.close()
    people = sorted({(j["pid"], j["person"]) for j in jobs})
    rows = []
    for pid, person in people:
        p = person_for(spec.seed, pid, spec.variation)
        rows.append({"person": person, "age": p.age, "sex": p.sex, "weight": p.weight, "height": p.height})
    competition.write_meta(out / "meta_data.xlsx", rows)
    (out / "phantom.json").write_text(json.dumps({"version": VERSION, **asdict(spec)}, indent=1, sort_keys=True))
    return out


def ensure(spec: Spec, root: str | Path | None = None, workers: int | None = None) -> Path:
    """The phantom dataset for ``spec``, generated on first use (with a progress bar) and reused after.

    Generation goes to a temporary folder renamed at the end, so a crash never leaves a half dataset behind.
    """
    from bonekit.cache import default_root

    base = Path(root) if root else default_root()
    out = base / f"phantom-{spec.key()}"
    if (out / "phantom.json").is_file():
        return out
    tmp = base / f".phantom-{spec.key()}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"[bonekit] generating the phantom dataset ({spec.people} + {spec.test_people} people, "
          f"{spec.size}px) in {out} - once, reused after")
    generate(tmp, spec, workers=workers or min(4, os.cpu_count() or 1))
    try:
        tmp.rename(out)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def stats(root: str | Path, split: str = "train") -> dict:
    """Figures of a written dataset: pixel mean/std, class presence, areas, overlaps (read back from files)."""
    recs = competition.scan(Path(root) / split)
    means, stds, areas, present = [], [], [], []
    ov = {pair: 0 for pair in [("Pisiform", "Triquetrum"), ("Trapezium", "Trapezoid")]}
    for r in recs:
        img = competition.read_image(r.image).astype(np.float64) / 255
        means.append(img.mean())
        stds.append(img.std())
        m = competition.read_mask(r.label, *img.shape)
        areas.append(m.reshape(29, -1).sum(1))
        present.append(m.reshape(29, -1).any(1).all())
        for a, b in ov:
            ov[(a, b)] += bool((m[HAND29.index(a)] & m[HAND29.index(b)]).any())
    areas = np.array(areas)
    return {"images": len(recs), "size": img.shape[0], "mean": float(np.mean(means)), "std": float(np.mean(stds)),
            "all_classes": float(np.mean(present)), "area": dict(zip(HAND29, areas.mean(0).tolist())),
            "overlap": {f"{a}/{b}": v / len(recs) for (a, b), v in ov.items()}}
