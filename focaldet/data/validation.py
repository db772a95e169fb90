"""Load and check a COCO / LVIS v1 annotation file once, into flat numpy arrays.

Every problem names the file, the record (``images[3] (id 17)``, ``annotations[52] (id 901)``) and
the field. What is an error and what is a counted recovery:

errors (:class:`DataError`)
    unreadable / non-JSON / truncated file; top level not an object; ``images``, ``annotations`` or
    ``categories`` missing or not lists; a record that is not an object; a field of the wrong type;
    duplicate image, annotation or category ids; an annotation whose ``image_id`` or
    ``category_id`` is unknown; no images or no categories; a ``file_name`` that is absolute or
    resolves (symlinks followed) outside the image root; image files that do not exist; a
    category id beyond 2^53 (and, for training sets only, :func:`check_boxes_per_image`: more
    than ``MAX_BOXES_PER_IMAGE`` boxes in one image).
counted recoveries (``report``)
    boxes partly outside the image are clipped to it; degenerate boxes (width or height <= 0,
    NaN/inf) and boxes entirely outside the image are dropped. With ``strict=True`` a dropped box
    is an error instead. ``iscrowd=1`` boxes go to ``crowd_boxes``; images without annotations are
    kept as negatives.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from focaldet.errors import DataError

_MISSING = object()
_MAX_EXAMPLES = 10  # example messages kept per kind of recovery
# Boxes (crowd included) of one training image. COCO's most crowded image has ~90, LVIS's a few
# hundred; 10^5 would make the batched anchor matching ask for tens of GB.
MAX_BOXES_PER_IMAGE = 2000


@dataclass
class DataReport:
    """What validation found in one annotation file (counts are of annotation records)."""

    ann_file: str
    num_images: int = 0
    num_categories: int = 0
    num_annotations: int = 0
    num_boxes: int = 0  # kept, not crowd
    num_crowd: int = 0  # kept crowd boxes
    num_clipped: int = 0  # partly outside the image, clipped to it
    num_dropped_degenerate: int = 0  # width/height <= 0 or NaN/inf
    num_dropped_outside: int = 0  # nothing left after clipping
    num_negative_images: int = 0  # images without any kept box (crowd boxes do not count)
    max_boxes_per_image: int = 0
    is_lvis: bool = False
    examples: list[str] = field(default_factory=list)  # a few messages naming dropped/clipped records

    @property
    def num_dropped(self) -> int:
        return self.num_dropped_degenerate + self.num_dropped_outside

    def summary(self) -> str:
        """One line for the log."""
        return (f"{self.ann_file}: {self.num_images} images, {self.num_categories} categories, "
                f"{self.num_boxes} boxes + {self.num_crowd} crowd, {self.num_negative_images} images "
                f"without boxes; clipped {self.num_clipped}, dropped {self.num_dropped} "
                f"({self.num_dropped_degenerate} degenerate, {self.num_dropped_outside} outside the image)")

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["num_dropped"] = self.num_dropped
        return d


@dataclass
class CocoAnnotations:
    """A validated annotation file as flat arrays. Boxes are float32 xyxy in original-image pixels,
    sorted by image; image ``i`` owns rows ``box_offsets[i]:box_offsets[i+1]`` (same for crowd)."""

    ann_file: Path
    image_root: Path
    images: list[dict]  # id, file_name, width, height (+ LVIS fields when present)
    image_ids: np.ndarray  # (N,) int64
    heights: np.ndarray  # (N,) int64
    widths: np.ndarray  # (N,) int64
    paths: list[Path]  # (N,) resolved image files, inside image_root
    categories: list[dict]  # sorted by id
    cat_ids: list[int]  # label -> category id
    boxes: np.ndarray  # (M, 4) float32
    labels: np.ndarray  # (M,) int64
    ann_ids: np.ndarray  # (M,) int64
    box_offsets: np.ndarray  # (N+1,) int64
    crowd_boxes: np.ndarray  # (C, 4) float32
    crowd_offsets: np.ndarray  # (N+1,) int64
    report: DataReport


# --------------------------------------------------------------------------------------------
def load_coco_annotations(ann_file: Union[str, os.PathLike], image_root: Union[str, os.PathLike], *,
                          strict: bool = False) -> CocoAnnotations:
    """Read ``ann_file``, check it against the rules in the module docstring and return arrays.

    ``strict``: raise on boxes that would be dropped (degenerate or entirely outside the image)
    instead of dropping and counting them.
    """
    ann_file = Path(ann_file)
    f = str(ann_file)
    images, anns, cats = _top_level(f, _read_json(ann_file))
    report = DataReport(ann_file=f, num_images=len(images), num_categories=len(cats),
                        num_annotations=len(anns))
    categories, sorted_cat_ids = _categories(f, cats)
    image_root = Path(image_root)
    image_records, image_id_arr, widths, heights, paths = _images(f, images, image_root, sorted_cat_ids, report)
    ann_id_arr, bbox, crowd, img_index, labels = _annotations(f, anns, image_id_arr, sorted_cat_ids)
    xyxy, keep = _clean_boxes(f, anns, bbox, widths[img_index], heights[img_index], strict, report)
    box_idx, box_offsets = _group_by_image(keep & ~crowd, img_index, len(images))
    crowd_idx, crowd_offsets = _group_by_image(keep & crowd, img_index, len(images))
    _count_per_image(box_offsets, crowd_offsets, report)
    return CocoAnnotations(
        ann_file=ann_file, image_root=image_root, images=image_records, image_ids=image_id_arr,
        heights=heights, widths=widths, paths=paths, categories=categories,
        cat_ids=sorted_cat_ids.tolist(),
        boxes=xyxy[box_idx].astype(np.float32).reshape(-1, 4),
        labels=labels[box_idx].astype(np.int64), ann_ids=ann_id_arr[box_idx], box_offsets=box_offsets,
        crowd_boxes=xyxy[crowd_idx].astype(np.float32).reshape(-1, 4), crowd_offsets=crowd_offsets,
        report=report)


def _top_level(f: str, data: Any) -> tuple[list, list, list]:
    """``(images, annotations, categories)`` of a parsed file, checked to be non-empty lists."""
    if not isinstance(data, dict):
        raise DataError(f"{f}: top level must be a JSON object with 'images', 'annotations' and "
                        f"'categories', got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise DataError(f"{f}: missing top-level key '{key}'")
        if not isinstance(data[key], list):
            raise DataError(f"{f}: top-level key '{key}' must be a list, got {type(data[key]).__name__}")
    if not data["images"]:
        raise DataError(f"{f}: empty dataset: 'images' is an empty list")
    if not data["categories"]:
        raise DataError(f"{f}: 'categories' is an empty list; at least one category is needed")
    return data["images"], data["annotations"], data["categories"]


def _categories(f: str, cats: list) -> tuple[list[dict], np.ndarray]:
    """Category records sorted by id, and the sorted ids (label -> id)."""
    _require_dicts(f, "categories", cats)
    cat_id_arr = _ints(f, "categories", cats, "id")
    _strs(f, "categories", cats, "name")
    for i, v in enumerate(_optional(cats, "frequency")):
        if v is not None and v not in ("r", "c", "f"):
            raise DataError(f"{f}: {_rec('categories', i, cats[i])}: field 'frequency' must be 'r', 'c' "
                            f"or 'f', got {v!r}")
    _no_duplicates(f, "categories", cat_id_arr)
    too_big = np.flatnonzero(np.abs(cat_id_arr) >= 2**53)
    if too_big.size:
        i = int(too_big[0])
        raise DataError(f"{f}: {_rec('categories', i, cats[i])}: field 'id' = {cats[i]['id']} is beyond 2^53 "
                        "(COCO evaluators hold category ids as doubles)")
    order = np.argsort(cat_id_arr, kind="stable")
    return [dict(cats[i]) for i in order], cat_id_arr[order]


_LVIS_KEYS = ("not_exhaustive_category_ids", "neg_category_ids")


def _images(f: str, images: list, image_root: Path, sorted_cat_ids: np.ndarray, report: DataReport):
    """``(records, ids (N,), widths (N,), heights (N,), resolved paths)`` of the image records."""
    _require_dicts(f, "images", images)
    image_id_arr = _ints(f, "images", images, "id")
    widths = _positive_sizes(f, images, "width")
    heights = _positive_sizes(f, images, "height")
    _no_duplicates(f, "images", image_id_arr)
    report.is_lvis = any("neg_category_ids" in im or "not_exhaustive_category_ids" in im for im in images)
    for key in _LVIS_KEYS:
        _check_cat_id_lists(f, images, key, sorted_cat_ids)
    paths, names = _resolve_image_paths(f, images, image_root)
    records = []
    for im, name, w, h in zip(images, names, widths.tolist(), heights.tolist()):
        rec = {"id": im["id"], "file_name": name, "width": w, "height": h}
        for key in _LVIS_KEYS:
            if key in im:
                rec[key] = list(im[key])
        records.append(rec)
    return records, image_id_arr, widths, heights, paths


def _annotations(f: str, anns: list, image_id_arr: np.ndarray, sorted_cat_ids: np.ndarray):
    """``(ids (M,), bbox xywh (M, 4), crowd (M,) bool, image index (M,), label (M,))``."""
    _require_dicts(f, "annotations", anns)
    ann_id_arr = _ints(f, "annotations", anns, "id")
    _no_duplicates(f, "annotations", ann_id_arr)
    ann_img = _ints(f, "annotations", anns, "image_id")
    ann_cat = _ints(f, "annotations", anns, "category_id")
    bbox = _bboxes(f, anns)
    crowd = np.asarray(_crowd_flags(f, anns), dtype=bool)
    for i, v in enumerate(_optional(anns, "area")):
        if v is not None and type(v) not in (int, float):
            raise DataError(f"{f}: {_rec('annotations', i, anns[i])}: field 'area' must be a number, got {v!r}")
    img_order = np.argsort(image_id_arr, kind="stable")
    img_index = img_order[_lookup(f, "annotations", anns, "image_id", ann_img, image_id_arr[img_order], "image")]
    labels = _lookup(f, "annotations", anns, "category_id", ann_cat, sorted_cat_ids, "category")
    return ann_id_arr, bbox, crowd, img_index, labels


def _clean_boxes(f: str, anns: list, bbox: np.ndarray, W: np.ndarray, H: np.ndarray, strict: bool,
                 report: DataReport) -> tuple[np.ndarray, np.ndarray]:
    """xywh -> xyxy clipped to the image ``(W, H)`` of each box; returns (xyxy (M, 4), keep (M,)):
    degenerate boxes and boxes entirely outside are dropped (counted), or raise when ``strict``."""
    x, y, w, h = bbox.T
    W, H = W.astype(np.float64), H.astype(np.float64)
    with np.errstate(invalid="ignore"):
        degenerate = ~np.isfinite(bbox).all(axis=1) | ~(w > 0) | ~(h > 0)
        xyxy = np.stack([x, y, x + w, y + h], axis=1)
        clipped_xyxy = np.stack([np.clip(xyxy[:, 0], 0, W), np.clip(xyxy[:, 1], 0, H),
                                 np.clip(xyxy[:, 2], 0, W), np.clip(xyxy[:, 3], 0, H)], axis=1)
        changed = (clipped_xyxy != xyxy).any(axis=1) & ~degenerate
        outside = ~degenerate & ((clipped_xyxy[:, 2] <= clipped_xyxy[:, 0]) |
                                 (clipped_xyxy[:, 3] <= clipped_xyxy[:, 1]))
    clipped = changed & ~outside
    if strict and (degenerate.any() or outside.any()):
        i = int(np.flatnonzero(degenerate | outside)[0])
        why = "degenerate (width/height <= 0 or not finite)" if degenerate[i] else "entirely outside the image"
        raise DataError(f"{f}: {_rec('annotations', i, anns[i])}, image_id {anns[i]['image_id']}: field "
                        f"'bbox' {anns[i]['bbox']} is {why} (strict mode)")
    report.num_dropped_degenerate = int(degenerate.sum())
    report.num_dropped_outside = int(outside.sum())
    report.num_clipped = int(clipped.sum())
    for mask, what in ((degenerate, "dropped: degenerate (width/height <= 0 or not finite)"),
                       (outside, "dropped: entirely outside the image"),
                       (clipped, "clipped to the image")):
        for i in np.flatnonzero(mask)[:_MAX_EXAMPLES].tolist():
            report.examples.append(f"{f}: {_rec('annotations', i, anns[i])}, image_id {anns[i]['image_id']}: "
                                   f"field 'bbox' {anns[i]['bbox']} {what} ({int(W[i])}x{int(H[i])})")
    return clipped_xyxy, ~(degenerate | outside)


def _group_by_image(mask: np.ndarray, img_index: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``mask`` sorted by image (stable), and offsets ``(n + 1,)``: image ``i`` owns
    ``idx[offsets[i]:offsets[i + 1]]``."""
    idx = np.flatnonzero(mask)
    idx = idx[np.argsort(img_index[idx], kind="stable")]
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(img_index[idx], minlength=n), out=offsets[1:])
    return idx, offsets


def _count_per_image(box_offsets: np.ndarray, crowd_offsets: np.ndarray, report: DataReport) -> None:
    per_image = np.diff(box_offsets)
    n = len(per_image)
    report.num_boxes = int(box_offsets[-1])
    report.num_crowd = int(crowd_offsets[-1])
    report.num_negative_images = int((per_image == 0).sum())
    report.max_boxes_per_image = int(per_image.max()) if n else 0


def check_boxes_per_image(ann_file, image_ids: list, boxes_per_image: np.ndarray,
                          limit: int = MAX_BOXES_PER_IMAGE) -> None:
    """Refuse a *training* set with an image of more than ``limit`` boxes (crowd included),
    naming it: anchor matching holds a boxes x anchors matrix per image, so 10^5 boxes would ask
    for tens of GB. Loading and evaluating such a file is fine; training on it is not."""
    if not len(boxes_per_image):
        return
    worst = int(np.argmax(boxes_per_image))
    if boxes_per_image[worst] > limit:
        raise DataError(f"{ann_file}: images[{worst}] (id {image_ids[worst]}): {int(boxes_per_image[worst])} boxes in "
                        f"one image; training supports at most {limit} (anchor matching holds a boxes x anchors "
                        "matrix per image)", hint="split the image into tiles, or train on a file without it")


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------
def _read_json(path: Path) -> Any:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: annotation file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a COCO JSON annotation file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read annotation file: {e.strerror or e}") from None
    if not raw.strip():
        raise DataError(f"{path}: annotation file is empty")
    try:
        return json.loads(raw)
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a JSON file (not UTF-8 text at byte {e.start})") from None
    except json.JSONDecodeError as e:
        text = raw.decode("utf-8", "replace")
        truncated = e.pos >= len(text.rstrip()) or e.msg.startswith("Unterminated string") or \
            text.count("{") > text.count("}") or text.count("[") > text.count("]")
        hint = " (the file looks truncated)" if truncated else ""
        raise DataError(f"{path}: not valid JSON{hint}: {e.msg} at line {e.lineno}, column {e.colno}") from None
    except RecursionError:
        raise DataError(f"{path}: not valid JSON: nested too deeply") from None


# --------------------------------------------------------------------------------------------
# Field checks. The fast path checks types over a whole column at C speed; the slow path, taken
# only on failure, finds the first bad record to name it.
# --------------------------------------------------------------------------------------------
def _rec(kind: str, i: int, r: Any) -> str:
    rid = r.get("id", None) if isinstance(r, dict) else None
    return f"{kind}[{i}] (id {rid})" if rid is not None else f"{kind}[{i}]"


def _require_dicts(f: str, kind: str, records: list) -> None:
    if set(map(type, records)) <= {dict}:
        return
    i = next(i for i, r in enumerate(records) if not isinstance(r, dict))
    raise DataError(f"{f}: {kind}[{i}] must be a JSON object, got {type(records[i]).__name__}")


def _column(f: str, kind: str, records: list, key: str, allowed: tuple, desc: str) -> list:
    values = [r.get(key, _MISSING) for r in records]
    if set(map(type, values)) <= set(allowed):
        return values
    for i, v in enumerate(values):
        if v is _MISSING:
            raise DataError(f"{f}: {_rec(kind, i, records[i])}: missing field '{key}'")
        if type(v) not in allowed:
            raise DataError(f"{f}: {_rec(kind, i, records[i])}: field '{key}' must be {desc}, got {v!r}")
    raise AssertionError("unreachable")


def _ints(f: str, kind: str, records: list, key: str) -> np.ndarray:
    """The integer field ``key`` of every record as an int64 array."""
    values = _column(f, kind, records, key, (int,), "an integer")
    try:
        return np.asarray(values, dtype=np.int64)
    except OverflowError:
        i = next(i for i, v in enumerate(values) if not -2**63 <= v < 2**63)
        raise DataError(f"{f}: {_rec(kind, i, records[i])}: field '{key}' = {values[i]} does not fit in "
                        "64 bits") from None


def _strs(f: str, kind: str, records: list, key: str) -> list:
    return _column(f, kind, records, key, (str,), "a string")


def _optional(records: list, key: str) -> list:
    return [r.get(key) for r in records]


def _positive_sizes(f: str, images: list, key: str) -> np.ndarray:
    values = _column(f, "images", images, key, (int, float), "a positive integer")
    arr = np.asarray(values, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bad = ~(arr > 0) | ~(arr < 2**31) | (arr != np.round(arr))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{f}: {_rec('images', i, images[i])}: field '{key}' must be a positive integer, "
                        f"got {values[i]!r}")
    return arr.astype(np.int64)


def _bboxes(f: str, anns: list) -> np.ndarray:
    values = [a.get("bbox", _MISSING) for a in anns]
    ok = set(map(type, values)) <= {list} and set(map(len, values)) <= {4} and \
        set(map(type, chain.from_iterable(values))) <= {int, float}
    if not ok:
        for i, v in enumerate(values):
            if v is _MISSING:
                raise DataError(f"{f}: {_rec('annotations', i, anns[i])}: missing field 'bbox'")
            if not (type(v) is list and len(v) == 4 and all(type(c) in (int, float) for c in v)):
                raise DataError(f"{f}: {_rec('annotations', i, anns[i])}: field 'bbox' must be a list of 4 "
                                f"numbers [x, y, width, height], got {v!r}")
    try:
        return np.asarray(values, dtype=np.float64).reshape(-1, 4)
    except OverflowError:
        i = next(i for i, v in enumerate(values) if any(abs(c) > 1e308 for c in v))
        raise DataError(f"{f}: {_rec('annotations', i, anns[i])}: field 'bbox' has a number too large: "
                        f"{values[i]!r}") from None


def _crowd_flags(f: str, anns: list) -> list:
    values = [a.get("iscrowd", 0) for a in anns]
    if set(map(type, values)) <= {int, bool} and set(values) <= {0, 1}:
        return values
    i = next(i for i, v in enumerate(values) if type(v) not in (int, bool) or v not in (0, 1))
    raise DataError(f"{f}: {_rec('annotations', i, anns[i])}: field 'iscrowd' must be 0 or 1, got {values[i]!r}")


def _no_duplicates(f: str, kind: str, ids: np.ndarray) -> None:
    if len(ids) == 0:
        return
    uniq, first, counts = np.unique(ids, return_index=True, return_counts=True)
    if (counts == 1).all():
        return
    dup = int(uniq[counts > 1][0])
    where = np.flatnonzero(ids == dup)[:2].tolist()
    n_dup = int((counts > 1).sum())
    raise DataError(f"{f}: duplicate {kind} id {dup}: {kind}[{where[0]}] and {kind}[{where[1]}] share field 'id'"
                    + (f" ({n_dup} duplicated ids in all)" if n_dup > 1 else ""))


def _lookup(f: str, kind: str, records: list, key: str, values: np.ndarray, sorted_ids: np.ndarray,
            target: str) -> np.ndarray:
    """Positions of ``values`` in ``sorted_ids``; an unknown value is an error naming the record."""
    pos = np.searchsorted(sorted_ids, values)
    pos_c = np.minimum(pos, len(sorted_ids) - 1)
    found = sorted_ids[pos_c] == values if len(values) else np.zeros(0, bool)
    if not found.all():
        bad = np.flatnonzero(~found)
        i = int(bad[0])
        more = f" ({len(bad)} annotations in all)" if len(bad) > 1 else ""
        raise DataError(f"{f}: {_rec(kind, i, records[i])}: field '{key}' = {int(values[i])} refers to no "
                        f"{target} in the file{more}")
    return pos_c.astype(np.int64)


def _check_cat_id_lists(f: str, images: list, key: str, sorted_cat_ids: np.ndarray) -> None:
    for i, im in enumerate(images):
        v = im.get(key, _MISSING)
        if v is _MISSING:
            continue
        if type(v) is not list or not set(map(type, v)) <= {int}:
            raise DataError(f"{f}: {_rec('images', i, im)}: field '{key}' must be a list of category ids, got {v!r}")
        if v:
            arr = np.asarray(v, dtype=np.int64)
            pos = np.minimum(np.searchsorted(sorted_cat_ids, arr), len(sorted_cat_ids) - 1)
            bad = sorted_cat_ids[pos] != arr
            if bad.any():
                raise DataError(f"{f}: {_rec('images', i, im)}: field '{key}' has unknown category id "
                                f"{int(arr[bad][0])}")


# --------------------------------------------------------------------------------------------
# Image paths
# --------------------------------------------------------------------------------------------
def _real_root(image_root: Path) -> Path:
    return Path(os.path.realpath(image_root))


def _file_name_candidates(im: dict) -> Optional[list[str]]:
    fn = im.get("file_name", _MISSING)
    if fn is not _MISSING:
        return [fn] if isinstance(fn, str) else None
    url = im.get("coco_url")
    if isinstance(url, str) and "/" in url:
        # LVIS v1: 'http://images.cocodataset.org/train2017/000000155379.jpg' -> the split folder
        # and the name; also accept the name alone (all images in one folder).
        parts = url.rstrip("/").split("/")
        return ["/".join(parts[-2:]), parts[-1]]
    return None


def _real_path(root: Path, name: str, real_dirs: dict[str, str]) -> str:
    """``realpath(root / name)``, resolving each folder once (images share a few folders) and
    the file itself only when it is a symlink."""
    parent, base = os.path.split(os.path.normpath(os.path.join(root, name)))
    real_parent = real_dirs.get(parent)
    if real_parent is None:
        real_parent = real_dirs[parent] = os.path.realpath(parent)
    real = os.path.join(real_parent, base)
    return os.path.realpath(real) if os.path.islink(real) else real


def _resolve_image_paths(f: str, images: list, image_root: Path) -> tuple[list[Path], list[str]]:
    """The real path of every image file (symlinks followed; must stay inside the root) and the
    relative name used for it."""
    if not image_root.is_dir():
        raise DataError(f"{image_root}: image root folder not found (images of {f})")
    root = _real_root(image_root)
    prefix = str(root).rstrip(os.sep) + os.sep
    real_dirs: dict[str, str] = {}
    paths: list[Path] = []
    names: list[str] = []
    missing: list[str] = []
    for i, im in enumerate(images):
        cands = _file_name_candidates(im)
        if cands is None:
            fn = im.get("file_name", _MISSING)
            if fn is _MISSING:
                raise DataError(f"{f}: {_rec('images', i, im)}: missing field 'file_name' (or LVIS 'coco_url')")
            raise DataError(f"{f}: {_rec('images', i, im)}: field 'file_name' must be a string, got {fn!r}")
        chosen, name = None, cands[0]
        for c in cands:
            if not c or os.path.isabs(c) or c.startswith(("/", "\\")) or re.match(r"[A-Za-z]:[\\/]", c):
                raise DataError(f"{f}: {_rec('images', i, im)}: field 'file_name' {c!r} is an absolute path or "
                                f"empty; it must be relative to the image root {image_root}")
            real = _real_path(root, c, real_dirs)
            if not real.startswith(prefix):
                raise DataError(f"{f}: {_rec('images', i, im)}: field 'file_name' {c!r} resolves to {real}, "
                                f"outside the image root {root} (refused)")
            if chosen is None or (not os.path.isfile(chosen) and os.path.isfile(real)):
                chosen, name = real, c
        if not os.path.isfile(chosen):
            missing.append(f"{_rec('images', i, im)}: file_name {cands[0]!r}")
        paths.append(Path(chosen))
        names.append(name)
    if missing:
        shown = "; ".join(missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise DataError(f"{f}: {len(missing)} image file(s) not found under {root}: {shown}{more}")
    return paths, names
