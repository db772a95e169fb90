"""The embedded long-tailed benchmark generator: determinism, long-tail shape, box geometry,
train/val separation, offline sources, COCO validity, caching and the CLI.

References are independent of the generator: pycocotools, NumPy recounts of the JSON, tight
boxes recomputed from the per-pixel instance map, and the rules as written in the spec."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from focaldet.data import benchmark as bm
from focaldet.data.benchmark import backgrounds as bgs
from focaldet.data.benchmark.compose import plan_labels, render_image, zipf_probabilities
from focaldet.data.benchmark.sources_stamps import is_photographic, stamps_available

KINDS = ["lt-digits"] + (["lt-stamps"] if stamps_available() else [])
COCO_SMALL, COCO_LARGE = 32 ** 2, 96 ** 2


def _digest(folder: Path) -> dict[str, str]:
    """md5 of every output file except meta.json (which records the wall time)."""
    return {str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "meta.json"}


def _load(path: Path) -> dict:
    return json.loads(Path(path).read_text())


# ---------------------------------------------------------------- determinism


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_bytes_different_seed_different(tmp_path, kind):
    args = dict(train=5, val=3, size=128)
    a = bm.make_benchmark(kind, tmp_path / "a", seed=3, **args)
    b = bm.make_benchmark(kind, tmp_path / "b", seed=3, **args)
    c = bm.make_benchmark(kind, tmp_path / "c", seed=4, **args)
    da, db, dc = _digest(tmp_path / "a"), _digest(tmp_path / "b"), _digest(tmp_path / "c")
    assert len(da) == 5 + 3 + 2 and da == db
    assert da.keys() == dc.keys()
    # a different seed changes every image and the annotations
    assert all(da[k] != dc[k] for k in da if k.endswith(".jpg"))
    assert _load(a.train_ann)["annotations"] != _load(c.train_ann)["annotations"]
    # decoded pixels are identical too, not only the files
    assert np.array_equal(np.asarray(Image.open(a.train_images / "000000.jpg")),
                          np.asarray(Image.open(b.train_images / "000000.jpg")))


def test_parallel_workers_give_the_same_output(tmp_path):
    args = dict(train=12, val=2, size=96, seed=1)
    bm.make_benchmark("lt-digits", tmp_path / "serial", **args)
    bm.make_benchmark("lt-digits", tmp_path / "forked", workers=2, **args)
    assert _digest(tmp_path / "serial") == _digest(tmp_path / "forked")


# ---------------------------------------------------------------- COCO validity


def _check_coco(ann_file: Path, image_dir: Path, size: int):
    from pycocotools.coco import COCO

    coco = COCO(str(ann_file))
    data = _load(ann_file)
    assert len(coco.getImgIds()) == len(data["images"]) > 0
    assert sorted(coco.getCatIds()) == list(range(1, len(data["categories"]) + 1))
    ids = [a["id"] for a in data["annotations"]]
    assert len(set(ids)) == len(ids)
    for im in data["images"]:
        assert (im["width"], im["height"]) == (size, size)
        with Image.open(image_dir / im["file_name"]) as f:
            assert f.size == (size, size) and f.mode == "RGB"
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        assert a["iscrowd"] == 0 and a["category_id"] in coco.cats
        assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= size and y + h <= size
        assert 0 < a["area"] <= w * h  # visible pixels inside their own tight box
    for c in data["categories"]:
        assert {"id", "name", "supercategory", "image_count", "instance_count", "frequency"} <= c.keys()
    return coco, data


def test_tiny_benchmark_fixture_is_valid_coco(tiny_benchmark, tiny_benchmark_kind):
    coco, data = _check_coco(tiny_benchmark.train_ann, tiny_benchmark.train_images, 160)
    _check_coco(tiny_benchmark.val_ann, tiny_benchmark.val_images, 160)
    assert len(data["images"]) == 24 and data["info"]["generator"]["kind"] == tiny_benchmark_kind
    assert len(_load(tiny_benchmark.val_ann)["images"]) == 8


def test_category_statistics_match_a_recount(tiny_benchmark):
    data = _load(tiny_benchmark.train_ann)
    n_train = len(data["images"])
    # the documented rule (LVIS's 10 / 100 images, scaled down for small sets), written out again:
    # rare ≤ min(10, max(1, N/100)) < common ≤ min(100, max(rare+1, N/10))
    rare_max = min(10, max(1, round(n_train / 100)))
    common_max = min(100, max(rare_max + 1, round(n_train / 10)))
    for c in data["categories"]:
        anns = [a for a in data["annotations"] if a["category_id"] == c["id"]]
        assert c["instance_count"] == len(anns)
        assert c["image_count"] == len({a["image_id"] for a in anns})
        want = "r" if c["image_count"] <= rare_max else "c" if c["image_count"] <= common_max else "f"
        assert c["frequency"] == want, c


def test_digits_kind_is_valid_coco(tmp_path):
    p = bm.make_benchmark("lt-digits", tmp_path / "d", train=8, val=3, size=128, seed=0)
    _, data = _check_coco(p.train_ann, p.train_images, 128)
    assert [c["name"] for c in data["categories"]] == [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    _check_coco(p.val_ann, p.val_images, 128)


# ---------------------------------------------------------------- long tail


@pytest.mark.parametrize("num_classes, exponent", [(28, 1.3), (10, 2.2)])
def test_planned_class_histogram_is_zipf_at_default_size(num_classes, exponent):
    probs = zipf_probabilities(num_classes, exponent)
    plan = plan_labels(600, probs, 4.0, np.random.default_rng(0))
    assert len(plan) == 600 and all(len(p) >= 1 for p in plan)
    counts = np.bincount(np.concatenate(plan), minlength=num_classes).astype(float)
    assert counts.min() >= 1  # every class appears
    # least-squares slope of log(count) against log(rank), ranks 1..K
    rank = np.arange(1, num_classes + 1)
    slope = np.polyfit(np.log(rank), np.log(counts), 1)[0]
    assert abs(-slope - exponent) < 0.1, slope
    assert counts[0] >= 500  # head: hundreds of instances
    assert counts[-1] <= 20  # tail: a handful
    assert np.all(np.diff(counts) <= 0)


def test_generated_histogram_is_long_tailed(tmp_path):
    kind = bm.default_kind()
    p = bm.make_benchmark(kind, tmp_path / "lt", train=120, val=4, size=128, seed=0)
    data = _load(p.train_ann)
    counts = np.array([c["instance_count"] for c in data["categories"]], float)  # ids in Zipf rank order
    k = len(counts)
    slope = np.polyfit(np.log(np.arange(1, k + 1)), np.log(np.maximum(counts, 0.5)), 1)[0]
    expected = {"lt-stamps": 1.3, "lt-digits": 2.2}[kind]
    assert abs(-slope - expected) < 0.3, (slope, counts)
    assert counts[0] >= 20 * max(1.0, counts[-3:].mean())  # head ≫ tail
    # LVIS-like tail: the rarest classes also have few distinct exemplars
    ex = [c["exemplar_count"]["train"] for c in data["categories"]]
    assert max(ex[-3:]) <= 4 and ex[0] >= 4 * max(ex[-3:])
    # LVIS's rule scaled to 120 images (rare ≤ 1 image): the head is frequent, the tail is not
    assert data["categories"][0]["frequency"] == "f" and data["categories"][-1]["frequency"] in ("r", "c")


def test_all_coco_size_ranges_at_default_image_size(tmp_path):
    p = bm.make_benchmark(bm.default_kind(), tmp_path / "s", train=30, val=2, size=288, seed=0)
    areas = np.array([a["area"] for a in _load(p.train_ann)["annotations"]])
    small, large = (areas < COCO_SMALL).mean(), (areas > COCO_LARGE).mean()
    medium = 1 - small - large
    assert min(small, medium, large) >= 0.05, (small, medium, large)


# ---------------------------------------------------------------- geometry and occlusion


def _pools(kind: str):
    classes, distractors, _ = bm._load_sources(kind)
    order = bm._class_order(classes)
    quotas = np.full(len(order), 1000)
    return bm.split_object_pools(classes, distractors, order, quotas, seed=0, tint=kind == "lt-digits"), len(order)


def test_boxes_are_tight_around_visible_pixels_and_occluded_objects_dropped():
    pools, k = _pools(bm.default_kind())
    backgrounds = bgs.load_backgrounds("train")
    kept = dropped = 0
    for i in range(12):
        rng = np.random.default_rng([99, i])
        labels = rng.integers(0, k, size=8)  # crowded images: plenty of occlusion
        r = render_image(pools["train"], labels, backgrounds, 160, rng)
        assert r.image.shape == (160, 160, 3) and r.image.dtype == np.uint8
        by_index = {inst.paste_index: inst for inst in r.instances}
        for j, p in enumerate(r.pasted):
            visible = r.instance_map == j + 1
            n_vis = int(visible.sum())
            if j in by_index:
                inst = by_index[j]
                ys, xs = np.nonzero(visible)
                assert inst.bbox == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
                assert inst.area == n_vis and inst.label == p["label"] >= 0
                assert n_vis / p["full_area"] >= 0.25
                kept += 1
            elif p["label"] >= 0:
                ys, xs = np.nonzero(visible)
                too_small = n_vis == 0 or min(np.ptp(xs) + 1, np.ptp(ys) + 1) < 4
                assert too_small or n_vis / p["full_area"] < 0.25
                dropped += 1
    assert kept > 50 and dropped > 0  # the drop rule was exercised


# ---------------------------------------------------------------- sources


def test_train_and_val_backgrounds_are_disjoint_and_bundled():
    train, val = bgs.available_sources("train"), bgs.available_sources("val")
    assert train and val
    assert not {s.name for s in train} & {s.name for s in val}
    assert not {s.path().resolve() for s in train} & {s.path().resolve() for s in val}
    # pixel-level: no val background is a copy of a train background
    tr = {hashlib.md5(a.tobytes()).hexdigest() for _, a in bgs.load_backgrounds("train")}
    va = {hashlib.md5(a.tobytes()).hexdigest() for _, a in bgs.load_backgrounds("val")}
    assert not tr & va
    # images that show benchmark classes are never backgrounds
    files = {Path(s.relpath).name for s in bgs.SOURCES}
    assert not files & {"chelsea.png", "coffee.png", "coins.png", "flower.jpg", "china.jpg", "horse.png"}


def test_every_skimage_background_ships_in_the_installed_wheel():
    import skimage

    data_dir = Path(skimage.__file__).parent / "data"
    for s in bgs.SOURCES:
        if s.package == "skimage":
            assert (data_dir / Path(s.relpath).name).is_file(), s.name


def test_generation_works_with_network_and_pooch_disabled(tmp_path):
    """A fresh interpreter where any socket connection raises and ``import pooch`` fails.
    lt-digits is the pip-only path (stamps are local Debian files; backgrounds are shared)."""
    code = f"""
import socket, sys
def _refuse(*a, **k):
    raise RuntimeError("network access attempted")
socket.socket.connect = _refuse
socket.create_connection = _refuse
sys.modules["pooch"] = None  # 'import pooch' now raises ImportError
# the generator needs no torch: skip focaldet.data's __init__ (the dataset layer) to start fast
import types, pathlib, focaldet
_data = types.ModuleType("focaldet.data")
_data.__path__ = [str(pathlib.Path(focaldet.__file__).parent / "data")]
sys.modules["focaldet.data"] = _data
from focaldet.data.benchmark import make_benchmark
make_benchmark("lt-digits", {str(tmp_path)!r} + "/d", train=3, val=2, size=96, seed=0)
assert "pooch" not in sys.modules or sys.modules["pooch"] is None
assert "torch" not in sys.modules
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")


def test_val_exemplars_disjoint_from_train_where_a_class_has_enough():
    for kind in KINDS:
        classes, distractors, _ = bm._load_sources(kind)
        order = bm._class_order(classes)
        pools = bm.split_object_pools(classes, distractors, order, np.full(len(order), 10 ** 6), seed=5)
        for k, name in enumerate(order):
            tr = {e.key for e in pools["train"].exemplars[k]}
            va = {e.key for e in pools["val"].exemplars[k]}
            assert tr and va
            if len(classes[name]) >= 4:
                assert not tr & va, name
        assert not {e.key for e in pools["train"].distractors} & {e.key for e in pools["val"].distractors}


@pytest.mark.skipif(not stamps_available(), reason="tuxpaint stamps not installed")
def test_stamp_classes_are_photographs_with_distractors():
    from focaldet.data.benchmark.sources_stamps import load_stamp_sources

    classes, distractors, _ = load_stamp_sources()
    assert 25 <= len(classes) <= 30 and len(distractors) >= 40
    keys = [e.key for ex in classes.values() for e in ex] + [e.key for e in distractors]
    assert len(keys) == len(set(keys))  # no stamp is both a class and a distractor
    assert not any("/cartoon/" in k for k in keys)
    # the statistic rejects flat-colour drawings: a synthetic two-colour drawing ...
    drawing = np.zeros((60, 60, 4), np.uint8)
    drawing[10:50, 10:50] = (200, 30, 30, 255)
    drawing[20:40, 20:40] = (20, 20, 200, 255)
    assert not is_photographic(drawing)
    # ... and a real cartoon from the tree
    from focaldet.data.benchmark.sources_stamps import STAMPS_ROOT, load_cutout
    assert not is_photographic(load_cutout(STAMPS_ROOT / "food/fruit/cartoon/apple.png"))
    assert is_photographic(load_cutout(STAMPS_ROOT / "animals/birds/crow.png"))


# ---------------------------------------------------------------- caching, CLI


def test_ensure_benchmark_caches_and_redoes_an_interrupted_run(tmp_path):
    args = dict(train=4, val=2, size=96, seed=0)

    def interrupt(split, done, total):
        if split == "val":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        bm.ensure_benchmark("lt-digits", tmp_path, progress=interrupt, **args)
    assert list(tmp_path.iterdir()) == []  # nothing half-made is left to be used

    p = bm.ensure_benchmark("lt-digits", tmp_path, **args)
    stamp = p.train_ann.stat().st_mtime_ns
    calls = []
    q = bm.ensure_benchmark("lt-digits", tmp_path, progress=lambda *a: calls.append(a), **args)
    assert q == p and calls == [] and p.train_ann.stat().st_mtime_ns == stamp  # cached
    meta = _load(p.train_ann.parent.parent / "meta.json")
    assert meta["complete"] and (meta["train"], meta["val"], meta["size"], meta["seed"]) == (4, 2, 96, 0)

    # a folder without its completion record is regenerated, not trusted
    (p.train_ann.parent.parent / "meta.json").unlink()
    r = bm.ensure_benchmark("lt-digits", tmp_path, **args)
    assert r == p and bm.is_complete(p.train_ann.parent.parent)


def test_bad_parameters_raise_focaldet_errors(tmp_path):
    from focaldet.errors import FocaldetError

    with pytest.raises(FocaldetError, match="lt-cats"):
        bm.ensure_benchmark("lt-cats", tmp_path)
    with pytest.raises(FocaldetError, match="size"):
        bm.ensure_benchmark("lt-digits", tmp_path, train=2, val=1, size=8)


def test_cli_make(tmp_path, capsys):
    from focaldet.cli.main import main

    out = tmp_path / "bench"
    argv = ["data", "make", "lt-digits", "--out", str(out), "--train", "4", "--val", "2", "--size", "96",
            "--quiet"]
    assert main(argv) == 0
    assert bm.is_complete(out)
    _check_coco(out / "annotations" / "train.json", out / "train", 96)
    assert main(argv) == 2  # refuses to overwrite
    assert str(out) in capsys.readouterr().err
    assert main(argv + ["--force"]) == 0


@pytest.mark.skipif(not stamps_available(), reason="tuxpaint stamps not installed")
def test_instance_classes_are_seed_independent_and_seen_in_both_splits(tmp_path):
    a = bm.make_benchmark("lt-stamps", tmp_path / "a", train=40, val=8, size=128, seed=0, classes="instance")
    b = bm.make_benchmark("lt-stamps", tmp_path / "b", train=40, val=8, size=128, seed=5, classes="instance")
    ca, cb = _load(a.train_ann)["categories"], _load(b.train_ann)["categories"]
    # same class list and Zipf order for every data seed: a checkpoint transfers between seeds
    assert [c["name"] for c in ca] == [c["name"] for c in cb]
    assert len(ca) >= 50 and len({c["name"] for c in ca}) == len(ca)
    # at most two cut-outs per stamp category, each class exactly one cut-out in both splits
    sup = [c["supercategory"] for c in ca]
    assert max(sup.count(s) for s in set(sup)) <= 2
    assert all(c["exemplar_count"] == {"train": 1, "val": 1} for c in ca)
    meta = json.loads((tmp_path / "a" / "meta.json").read_text())
    gen = _load(a.val_ann)["info"]["generator"]
    assert meta["classes"] == gen["classes"] == "instance" and gen["val_exemplars"] == "seen"
    # the cache folder name records the option
    assert "_instance_" in bm.benchmark_dirname("lt-stamps", train=1, val=1, size=128, seed=0, classes="instance")
    assert "_instance_" not in bm.benchmark_dirname("lt-stamps", train=1, val=1, size=128, seed=0)


@pytest.mark.skipif(not stamps_available(), reason="tuxpaint stamps not installed")
def test_instance_benchmark_is_deeply_long_tailed(tmp_path):
    p = bm.make_benchmark("lt-stamps", tmp_path / "i", train=400, val=4, size=128, seed=0, classes="instance")
    counts = np.array([c["instance_count"] for c in _load(p.train_ann)["categories"]], float)
    slope = np.polyfit(np.log(np.arange(1, len(counts) + 1)), np.log(np.maximum(counts, 0.5)), 1)[0]
    assert abs(-slope - bm.INSTANCE_ZIPF_EXPONENT) < 0.3, slope
    assert counts[0] >= 50 * counts[-3:].mean()  # head/tail ≥ 50×
    # every LVIS group is populated (rare ≤ 4 training images, common ≤ 40 at 400 images)
    assert {c["frequency"] for c in _load(p.train_ann)["categories"]} == {"r", "c", "f"}


def test_instance_classes_need_lt_stamps(tmp_path):
    with pytest.raises(bm.BenchmarkError, match="instance"):
        bm.make_benchmark("lt-digits", tmp_path / "d", train=2, val=1, size=96, seed=0, classes="instance")
    with pytest.raises(bm.BenchmarkError, match="classes"):
        bm.check_parameters(2, 1, 96, 0, "species")
