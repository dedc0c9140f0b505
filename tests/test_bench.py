"""The bench scripts time the same engine step the mains run: each runs on tiny data and prints its figures."""

import re

from conftest import TINY, launch


def test_train_speed(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    out = launch("bench/train_speed.py", TINY + ["steps=1", "loop.batch_size=2", "data.folds=2",
                                                f"run_dir={tmp_path / 'b'}"], cache)
    m = re.search(r"end-to-end ([\d.]+) img/s .* model-only ([\d.]+) img/s", out)
    assert m and float(m.group(1)) > 0 and float(m.group(2)) > 0
    assert "naive loop" in out and (tmp_path / "b" / "bench.txt").is_file()


def test_pretrain_speed(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    out = launch("bench/pretrain_speed.py", TINY + ["steps=1", "train.batch_size=4", "views.size=32",
                                                   "method.hidden_dim=32", "method.out_dim=16",
                                                   f"run_dir={tmp_path / 'b'}"], cache)
    m = re.search(r"end-to-end ([\d.]+) img/s, model-only ([\d.]+) img/s", out)
    assert m and float(m.group(1)) > 0 and float(m.group(2)) > 0


def test_compare_studies_pairs_cells_by_seed(tmp_path):
    """Two studies compared cell by cell: B − A per seed on the cells both finished, mean ± sd, wins; a cell
    without a partner is counted, not paired; both studies' curves in one figure."""
    import json
    import subprocess
    import sys

    from conftest import ROOT

    def cell(study, method, frac, seed, dice):
        d = tmp_path / study / "scratch" / method / f"f{frac:g}" / f"s{seed}"
        d.mkdir(parents=True)
        (d / "metrics.csv").write_text(f"step,val_dice\n100,{dice / 2}\n200,\n300,{dice}\n")
        (d / "result.json").write_text(json.dumps({"init": "scratch", "method": method, "fraction": frac, "seed": seed,
                                                   "mean_dice": dice, "per_bone": {"a": dice, "b": 0.5},
                                                   "checkpoint": str(d / "last.safetensors")}))

    for s, (a, b) in enumerate([(0.20, 0.25), (0.30, 0.28), (0.40, 0.47)]):
        cell("a", "finetune", 0.05, s, a)
        cell("b", "finetune", 0.05, s, b)
    cell("b", "ceiling", 1.0, 0, 0.9)  # no partner in study a
    png = tmp_path / "curves.png"
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "compare_studies.py"), str(tmp_path / "a"),
                          str(tmp_path / "b"), "--names", "2D", "2.5D", "--png", str(png), "--per-bone"],
                         env={"PYTHONPATH": str(ROOT), "PATH": ""}, capture_output=True, text=True, check=True).stdout
    assert "| 5% | finetune | 0.2000, 0.3000, 0.4000 | 0.2500, 0.2800, 0.4700 |" in out
    assert "| +0.050, -0.020, +0.070 | +0.033 ± 0.047 | 2/3 |" in out
    assert "| a | +0.033 ± 0.047 |" in out and "| b | +0.000 ± 0.000 |" in out  # largest difference first
    assert out.index("| a |") < out.index("| b |")
    assert "1 cells without a partner" in out and "ceiling" not in out.split("(1 cells")[0]
    assert png.stat().st_size > 5_000


def test_study_tables_name_the_init_of_each_row(tmp_path):
    """A study with scratch and pretrained arms: the pretrained labelled-only student is its own named row (it was
    printed as a second, unnamed `finetune` row) and the small-bone table keeps the two inits apart."""
    import json
    import subprocess
    import sys

    from conftest import ROOT

    from bonekit.classes import SMALL_BONES

    def cell(init, method, frac, seed, dice):
        d = tmp_path / init / method / f"f{frac:g}" / f"s{seed}"
        d.mkdir(parents=True)
        (d / "result.json").write_text(json.dumps({"init": init, "method": method, "fraction": frac, "seed": seed,
                                                   "mean_dice": dice, "per_bone": dict.fromkeys(SMALL_BONES, dice),
                                                   "wall_s": 60.0}))

    for s in range(2):
        cell("scratch", "ceiling", 1.0, s, 0.8)
        cell("scratch", "finetune", 0.05, s, 0.4)
        cell("pretrained", "finetune", 0.05, s, 0.5)
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "study_tables.py"), str(tmp_path)],
                         env={"PYTHONPATH": str(ROOT), "PATH": ""}, capture_output=True, text=True, check=True).stdout
    assert "| 5% | finetune | 0.4000, 0.4000 |" in out and "| 5% | pretrained finetune | 0.5000, 0.5000 |" in out
    assert out.index("| 5% | finetune |") < out.index("| 5% | pretrained finetune |")
    assert "| small bone | ceiling | finetune | pretrained finetune |" in out
    assert f"| {SMALL_BONES[0]} | 0.80 ± 0.00 | 0.40 ± 0.00 | 0.50 ± 0.00 |" in out
    # the pretrained student against the scratch one and the scratch ceiling: gap (0.5 - 0.4) / (0.8 - 0.4)
    assert "| pretrained | 5% | finetune | 0.5000, 0.5000 |" in out and "| 0.25, 0.25 | 0.25 ± 0.00 |" in out
    # the gap from another arm (a like-for-like control) to ceilings given per seed, for a study that ran none
    for s in range(2):
        cell("scratch", "pooloff", 0.05, s, 0.5)
        cell("scratch", "bcp", 0.05, s, 0.6 + 0.1 * s)
        (tmp_path / "scratch" / "ceiling" / "f1" / f"s{s}" / "result.json").unlink()
    run = [sys.executable, str(ROOT / "bench" / "study_tables.py"), str(tmp_path), "--baseline", "pooloff"]
    out = subprocess.run([*run, "--ceiling-dice", "0.9", "0.7"], env={"PYTHONPATH": str(ROOT), "PATH": ""},
                         capture_output=True, text=True, check=True).stdout
    # (0.6 - 0.5) / (0.9 - 0.5), (0.7 - 0.5) / (0.7 - 0.5)
    assert "| 5% | bcp | 0.6000, 0.7000 | 0.6500 ± 0.0707 | +0.100, +0.200 | 0.25, 1.00 |" in out
    bad = subprocess.run([*run, "--ceiling-dice", "0.9"], env={"PYTHONPATH": str(ROOT), "PATH": ""},
                         capture_output=True, text=True, check=False)
    assert bad.returncode != 0 and "1 values for 2 seeds" in bad.stderr


def test_pool_targets_tells_identity_errors_from_shape_errors(tmp_path):
    """Targets that give bone B's pixels to bone A count as errors on another bone (not background); keeping the
    largest component removes a stray blob; the script scores a checkpoint on its own pool."""
    import subprocess
    import sys

    import numpy as np
    from conftest import COSUP_ARGS, ROOT

    sys.path.insert(0, str(ROOT / "bench"))
    from pool_targets import target_quality

    gt = np.zeros((1, 2, 16, 16), bool)
    gt[0, 0, 2:6, 2:6] = True  # bone A
    gt[0, 1, 10:14, 10:14] = True  # bone B
    prob = np.zeros((1, 2, 16, 16), np.float32)
    prob[0, 0, 2:6, 2:6] = 0.9  # A found ...
    prob[0, 0, 10:14, 10:14] = 0.8  # ... and A claims B's pixels, where B's own target is weaker
    prob[0, 1, 10:14, 10:14] = 0.6
    prob[0, 1, 0, 15] = 0.7  # a stray pixel of B on background
    dice, err = target_quality(prob, gt)
    assert err == {"fp_background": 1, "fp_other_bone": 16, "fn_empty": 0, "fn_other_bone": 0}
    assert dice["raw"][1] < 1 and dice["largest component"][1] > 0.999  # the stray pixel goes
    # one bone per pixel cannot repair identity: A keeps B's pixels (2*16/48) and B loses them
    assert abs(dice["one bone per pixel"][0] - 2 / 3) < 1e-3 and dice["one bone per pixel"][1] < 0.001

    cache = tmp_path / "cache"
    cache.mkdir()
    ck = tmp_path / "run" / "last.safetensors"
    launch("finetune/train.py", COSUP_ARGS + ["loop.steps=1", f"run_dir={ck.parent}"], cache)
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "pool_targets.py"), "--flip", str(ck)], cwd=tmp_path,
                         env={"PYTHONPATH": str(ROOT), "PATH": "", "BONEKIT_CACHE": str(cache)},
                         capture_output=True, text=True, check=True).stdout
    row = [line for line in out.splitlines() if line.startswith(f"| {ck} |")]
    assert row, out
    pool, *dice_cols = row[0].split("|")[2:6]
    assert int(pool) > 0 and all(0.0 <= float(v) <= 1.0 for v in dice_cols)
    assert row[0].rstrip(" |").endswith(f"of {int(pool)}")  # the mirrored-hand count


def test_a_hand_read_in_mirror_order_is_counted_as_mirrored():
    """A prediction that puts the index ray where the little finger is (and Radius where the Ulna is) is a hand
    taken for its other side; the correct reading and an empty one are not."""
    import sys

    import numpy as np
    from conftest import ROOT

    from bonekit.classes import HAND29

    sys.path.insert(0, str(ROOT / "bench"))
    from pool_targets import mirror_order, read_mirrored

    order = mirror_order(HAND29)
    same, mirror = order
    gt = np.zeros((3, 29, 8, 8), bool)
    for j, c in enumerate(same):  # each ray/forearm bone its own pixel
        gt[:, c, j // 8, j % 8] = True
    pred = gt.copy()
    pred[1][mirror] = gt[1][same]  # image 1: read as the other hand
    pred[2] = False  # image 2: nothing found
    assert read_mirrored(pred, gt, order).tolist() == [False, True, False]
    assert mirror_order(["a", "b"]) is None


def test_anatomical_order_puts_the_index_ray_next_to_the_thumb():
    """Rays labelled in the wrong order (index and little swapped, Radius and Ulna swapped) get anatomy's order
    back: index nearest the thumb, little farthest, the Radius on the thumb's side."""
    import sys

    import numpy as np
    from conftest import ROOT

    from bonekit.classes import HAND29

    sys.path.insert(0, str(ROOT / "bench"))
    from pool_targets import ordered_from_thumb, ray_channels

    rays = ray_channels(HAND29)
    truth = np.zeros((29, 40, 40), np.float32)
    for k, (name, col) in enumerate([("thumb", 2), ("index", 10), ("middle", 18), ("ring", 26), ("little", 34)]):
        truth[rays[name], 5:30, col:col + 3] = 0.9  # rays side by side, thumb at the left
    truth[rays["forearm"][0], 32:38, 4:12] = 0.9  # Radius under the thumb
    truth[rays["forearm"][1], 32:38, 28:36] = 0.9
    swapped = truth.copy()
    swapped[rays["index"]], swapped[rays["little"]] = truth[rays["little"]], truth[rays["index"]]
    swapped[rays["forearm"]] = truth[rays["forearm"][::-1]]
    assert not np.allclose(swapped, truth)
    assert np.allclose(ordered_from_thumb(swapped, rays), truth)
    assert np.allclose(ordered_from_thumb(truth, rays), truth)  # already in order: unchanged


def test_polarity_tells_an_inverted_display_from_a_normal_one():
    import sys

    import numpy as np
    from conftest import ROOT

    sys.path.insert(0, str(ROOT / "bench"))
    from polarity import inverted

    yy, xx = np.mgrid[:32, :32]
    bone = (yy - 16) ** 2 + (xx - 16) ** 2 < 36
    image = np.where(bone, 200, 60).astype(np.uint8) + np.random.default_rng(0).integers(0, 20, (32, 32), np.uint8)
    assert not inverted(image, bone) and inverted(255 - image, bone)
    assert not inverted(image, np.zeros_like(bone))  # no bone: nothing to compare


def test_arm_curves_draws_one_panel_per_seed_with_the_arms_together(tmp_path):
    """bench/arm_curves.py: three arms over two seeds give two panels (the study report would draw three, one per
    method); an arm with no finished cell is a clear error."""
    import json
    import struct
    import subprocess
    import sys

    from conftest import ROOT

    for method in ("finetune", "bcp", "bcpfp"):
        for s in range(2):
            d = tmp_path / "scratch" / method / "f0.05" / f"s{s}"
            d.mkdir(parents=True)
            (d / "metrics.csv").write_text("step,loss,val_dice\n100,1.0,0.2\n200,0.9,\n300,0.8,0.4\n")
            (d / "result.json").write_text(json.dumps({"init": "scratch", "method": method, "fraction": 0.05,
                                                       "seed": s, "mean_dice": 0.4, "per_bone": {},
                                                       "checkpoint": str(d / "last.safetensors")}))
    run = [sys.executable, str(ROOT / "bench" / "arm_curves.py"), str(tmp_path), "--png", str(tmp_path / "c.png")]
    env = {"PYTHONPATH": str(ROOT), "PATH": "", "MPLBACKEND": "Agg"}
    subprocess.run(run + ["--methods", "finetune", "bcp", "bcpfp"], env=env, capture_output=True, check=True)
    width = struct.unpack(">I", (tmp_path / "c.png").read_bytes()[16:20])[0]
    assert width == round((3.2 * 2 + 1) * 110), width  # two panels (seeds), not three (methods)
    p = subprocess.run(run + ["--methods", "meanteacher"], env=env, capture_output=True, text=True, check=False)
    assert p.returncode != 0 and "no finished cell of ['meanteacher']" in p.stderr


def test_bn_adapt_re_estimates_only_the_batch_norm_statistics():
    """bench/bn_adapt.py: the running mean becomes the mean of the layer's input over the given images (two equal
    batches: the plain average of their means), the weights stay, the model is left in eval mode."""
    import sys

    import numpy as np
    import torch
    from conftest import ROOT

    sys.path.insert(0, str(ROOT / "bench"))
    from bn_adapt import recompute_bn

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(1, 3, 3, padding=1)
    model = torch.nn.Sequential(conv, torch.nn.BatchNorm2d(3))
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    images = np.random.default_rng(0).integers(0, 255, (8, 1, 16, 16), dtype=np.uint8)
    assert recompute_bn(model, images, batch=4) == 1
    with torch.no_grad():
        feats = conv(torch.from_numpy(images).float() / 255)
    assert torch.allclose(model[1].running_mean, feats.mean((0, 2, 3)), atol=1e-5)
    assert not model.training and model[1].momentum == 0.1
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())
