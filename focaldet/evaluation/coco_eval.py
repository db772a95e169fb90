"""COCO box evaluation through faster-coco-eval; LVIS's federated rules for LVIS files; per-class
AP and the long-tail groups.

With ``useCats`` every (image, category) pair is matched on its own and the precision/recall
curves are accumulated per category, so evaluating groups of categories separately — each on just
the images where its categories have ground truth or detections — gives the same arrays as one run
over everything. COCO-sized sets run in one go; LVIS-sized ones (20k images × 1,203 categories,
where faster-coco-eval would allocate a slot per pair) are split, and each category is then only
evaluated on the images where it matters. The 12 statistics are computed from the assembled arrays
exactly as pycocotools' ``COCOeval.summarize`` does.
"""
from __future__ import annotations

import contextlib
import gc
import math
import os
from dataclasses import dataclass
from typing import Mapping, Optional, Union

import numpy as np
from faster_coco_eval import COCO, COCOeval_faster
from faster_coco_eval.core.cocoeval import Params

from focaldet.evaluation.eval_result import COCO_STATS, EvalResult
from focaldet.evaluation.long_tail import assign_groups, group_ap
from focaldet.evaluation.results import Detections, EvaluationError, detections_from_results, read_json

LVIS_MAX_DETS = 300  # LVIS keeps the 300 highest-scoring detections per image, over all categories
COCO_MAX_DETS = (1, 10, 100)
# (image, category) pairs per evaluator run: faster-coco-eval's Python layer builds a dict entry
# per pair and its C++ side one result slot per pair and area range, so an LVIS-sized grid
# (20k images × 1,203 categories) is split; COCO-sized ones (5k × 80) run in one go.
MAX_GRID_SLOTS = 1_000_000


def _quiet(*args, **kwargs) -> None:
    pass


class _Evaluator(COCOeval_faster):
    """faster-coco-eval's evaluator; the LVIS frequency groups it would build from the
    categories' ``frequency`` field are not needed (groups are computed here, for any file)."""

    def _prepare_freq_group(self) -> list:
        return [[] for _ in self.params.img_count_lbl]


@dataclass
class GroundTruth:
    """A COCO / LVIS ground-truth file as arrays. Annotation arrays are ``(n,)`` / ``(n, 4)``
    (bbox xywh in pixels); ``images`` maps image id → the image record."""

    source: str
    images: dict
    categories: list  # the category records, sorted by id (pycocotools' order)
    ann_id: np.ndarray
    image_id: np.ndarray
    category_id: np.ndarray
    bbox: np.ndarray
    area: np.ndarray
    iscrowd: np.ndarray
    is_lvis: bool


def load_ground_truth(gt: Union[str, os.PathLike, Mapping]) -> GroundTruth:
    """Read and check a COCO / LVIS ground-truth file or dict; errors name file, record, field."""
    if isinstance(gt, (str, os.PathLike)):
        source = str(gt)
        data = read_json(gt, "ground-truth")
    else:
        source, data = "<ground-truth dict>", gt
    if not isinstance(data, Mapping):
        raise EvaluationError(f"{source}: a COCO file is a JSON object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise EvaluationError(f"{source}: field '{key}' is missing or not a list")

    images = {}
    for i, im in enumerate(data["images"]):
        iid = im.get("id") if isinstance(im, Mapping) else None
        if not isinstance(iid, int) or isinstance(iid, bool):
            raise EvaluationError(f"{source}: images[{i}]: field 'id' must be an integer, got {iid!r}")
        if iid in images:
            raise EvaluationError(f"{source}: images[{i}]: duplicate image id {iid}")
        images[iid] = im
    cats = {}
    for i, c in enumerate(data["categories"]):
        cid = c.get("id") if isinstance(c, Mapping) else None
        if not isinstance(cid, int) or isinstance(cid, bool):
            raise EvaluationError(f"{source}: categories[{i}]: field 'id' must be an integer, got {str(cid)[:40]}")
        if abs(cid) >= 2**53:  # the evaluator holds category ids as doubles
            raise EvaluationError(f"{source}: categories[{i}]: field 'id' {cid} is beyond 2^53; category ids "
                                  "must be exactly representable as doubles")
        if cid in cats:
            raise EvaluationError(f"{source}: categories[{i}]: duplicate category id {cid}")
        cats[cid] = c

    anns = data["annotations"]
    n = len(anns)
    try:
        ann_id = np.fromiter((a["id"] for a in anns), np.int64, n)
        image_id = np.fromiter((a["image_id"] for a in anns), np.int64, n)
        category_id = np.fromiter((a["category_id"] for a in anns), np.int64, n)
        bbox = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(n, 4)
        iscrowd = np.fromiter((int(a.get("iscrowd", 0)) for a in anns), np.int64, n)
        # pycocotools uses the file's 'area' for the small/medium/large ranges; w*h where absent
        area = np.fromiter((a["area"] if "area" in a else a["bbox"][2] * a["bbox"][3] for a in anns), np.float64, n)
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise _first_bad_annotation(anns, source) from e
    _check_membership(source, "annotations[{i}]", image_id, np.fromiter(images, np.int64, len(images)), "image_id")
    _check_membership(source, "annotations[{i}]", category_id, np.fromiter(cats, np.int64, len(cats)), "category_id")
    uniq, first = np.unique(ann_id, return_index=True)
    if uniq.size != n:
        dup = np.setdiff1d(np.arange(n), first)[0]
        raise EvaluationError(f"{source}: annotations[{dup}]: duplicate annotation id {ann_id[dup]}")
    is_lvis = bool(images) and all("neg_category_ids" in im and "not_exhaustive_category_ids" in im
                                   for im in images.values())
    return GroundTruth(source, images, [cats[k] for k in sorted(cats)], ann_id, image_id, category_id,
                       bbox, area, iscrowd, is_lvis)


def _first_bad_annotation(anns: list, source: str) -> EvaluationError:
    for i, a in enumerate(anns):
        if not isinstance(a, Mapping):
            return EvaluationError(f"{source}: annotations[{i}] is not an object")
        for field in ("id", "image_id", "category_id", "bbox"):
            if field not in a:
                return EvaluationError(f"{source}: annotations[{i}] (id {a.get('id')}): field '{field}' is missing")
        b = a["bbox"]
        if not isinstance(b, (list, tuple)) or len(b) != 4:
            return EvaluationError(f"{source}: annotations[{i}] (id {a['id']}): field 'bbox' must be [x, y, w, h]")
    return EvaluationError(f"{source}: malformed annotations (a non-numeric id, bbox, area or iscrowd)")


def _check_membership(source, what, values, allowed, field) -> None:
    bad = ~np.isin(values, allowed)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise EvaluationError(f"{source}: {what.format(i=i)}: field '{field}' has unknown id {int(values[i])} "
                              f"(not in the ground truth's {field.split('_')[0]}s)",
                              hint=("results must use the dataset's original category ids"
                                    if field == "category_id" else ""))


def limit_per_image(det: Detections, max_dets: int) -> Detections:
    """Keep each image's ``max_dets`` highest-scoring detections (over all categories; ties keep
    file order), as LVIS does; the survivors stay in their original order."""
    n = len(det)
    if n == 0:
        return det
    order = np.lexsort((np.arange(n), -det.score, det.image_id))  # by image, score desc, file order
    img_sorted = det.image_id[order]
    first = np.searchsorted(img_sorted, img_sorted, side="left")
    keep = np.sort(order[np.arange(n) - first < max_dets])
    return det.take(keep) if keep.size < n else det


@contextlib.contextmanager
def _gc_paused():
    """Pause the cyclic garbage collector: the evaluation allocates ~1M small acyclic dicts and
    lists (annotation records), and the collections their allocation triggers re-scan all of them
    — about a fifth of the CPU time at 500k detections. Nothing here creates reference cycles."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def evaluate_detections(gt, results, *, rare_max: Optional[int] = None, common_max: Optional[int] = None,
                        image_counts: Optional[Mapping[int, int]] = None, num_train_images: Optional[int] = None,
                        federated: Optional[bool] = None) -> EvalResult:
    """Score COCO results against a ground truth.

    Args:
        gt: path to a COCO / LVIS JSON file, or the loaded dict. LVIS v1 files (every image has
            ``neg_category_ids`` and ``not_exhaustive_category_ids``) get LVIS's federated rules
            unless ``federated`` says otherwise.
        results: COCO results (list of dicts, a path, an ``(n, 7)`` array or ``Detections``) with the
            original category ids, boxes xywh in original-image pixels.
        rare_max, common_max: long-tail thresholds in training images (None → see
            :mod:`focaldet.evaluation.long_tail`).
        image_counts: ``{cat_id: training images}``, overriding the categories' ``image_count``.
        num_train_images: size of the training set, for the default thresholds.
    Returns:
        :class:`EvalResult`.
    """
    with _gc_paused():
        return _evaluate_detections(gt, results, rare_max=rare_max, common_max=common_max,
                                    image_counts=image_counts, num_train_images=num_train_images,
                                    federated=federated)


def _evaluate_detections(gt, results, *, rare_max, common_max, image_counts, num_train_images,
                         federated) -> EvalResult:
    g = gt if isinstance(gt, GroundTruth) else load_ground_truth(gt)
    det = detections_from_results(results)
    source = results if isinstance(results, (str, os.PathLike)) else "results"
    if len(det):
        _check_membership(source, "record {i}", det.image_id, np.fromiter(g.images, np.int64, len(g.images)),
                          "image_id")
        _check_membership(source, "record {i}", det.category_id,
                          np.asarray([c["id"] for c in g.categories], np.int64), "category_id")
    federated = g.is_lvis if federated is None else bool(federated)
    if federated:
        det = limit_per_image(det, LVIS_MAX_DETS)
        max_dets = COCO_MAX_DETS + (LVIS_MAX_DETS,)
    else:
        max_dets = COCO_MAX_DETS
    precision, recall, num_gt = _evaluate_by_category(g, det, list(max_dets), federated)

    params = Params(iouType="bbox")
    params.maxDets = list(max_dets)
    stats = summarize(precision, recall, params, max_dets[-1])
    if federated:
        stats["AR300"] = _summarize_one(precision, recall, params, ap=0, max_dets=LVIS_MAX_DETS)

    cat_ids = [c["id"] for c in g.categories]
    counts = []
    for c in g.categories:
        n = image_counts.get(c["id"]) if image_counts is not None else c.get("image_count")
        counts.append(None if n is None else int(n))
    groups, rule = assign_groups(counts, frequencies=[c.get("frequency") for c in g.categories],
                                 rare_max=rare_max, common_max=common_max, num_train_images=num_train_images)
    p_all = precision[:, :, :, 0, -1]  # area "all", most detections
    stats.update(group_ap(p_all, groups))

    per_class = []
    for k, cid in enumerate(cat_ids):
        s = p_all[:, :, k]
        s50 = s[0]  # IoU 0.50 is the first threshold
        per_class.append({
            "cat_id": int(cid), "name": g.categories[k].get("name", str(cid)), "image_count": counts[k],
            "group": groups[k], "num_gt": int(num_gt[k]),
            "AP": float(np.mean(s[s > -1])) if (s > -1).any() else math.nan,
            "AP50": float(np.mean(s50[s50 > -1])) if (s50 > -1).any() else math.nan,
        })
    return EvalResult(stats=stats, per_class=per_class, groups=rule, federated=federated,
                      num_images=len(g.images), num_detections=len(det), max_dets=max_dets[-1])


def _category_chunks(cat_images: list, max_slots: int) -> list:
    """Split categories (in order) into runs whose (image, category) grid — the union of their
    images × their number — stays within ``max_slots``."""
    chunks, cur, cur_imgs = [], [], set()
    for k, imgs in enumerate(cat_images):
        merged = cur_imgs.union(imgs.tolist())
        if cur and len(merged) * (len(cur) + 1) > max_slots:
            chunks.append(cur)
            cur, merged = [], set(imgs.tolist())
        cur.append(k)
        cur_imgs = merged
    if cur:
        chunks.append(cur)
    return chunks


def _evaluate_by_category(g: GroundTruth, det: Detections, max_dets: list, federated: bool):
    """Run faster-coco-eval over groups of categories. Returns ``precision (T, R, K, A, M)``,
    ``recall (T, K, A, M)`` (−1 where a category has no ground truth, as COCO) and ``num_gt (K,)``
    (non-crowd ground truths)."""
    params = Params(iouType="bbox")
    T, R, A, M = len(params.iouThrs), len(params.recThrs), len(params.areaRng), len(max_dets)
    K = len(g.categories)
    precision = -np.ones((T, R, K, A, M))
    recall = -np.ones((T, K, A, M))
    cat_ids = np.asarray([c["id"] for c in g.categories], np.int64)

    # group annotations and detections by category (stable: file order is kept inside a group,
    # which decides ties between equal scores exactly as in pycocotools)
    g_order = np.argsort(g.category_id, kind="stable")
    g_lo, g_hi = np.searchsorted(g.category_id[g_order], np.stack([cat_ids, cat_ids + 1]))
    d_order = np.argsort(det.category_id, kind="stable")
    d_lo, d_hi = np.searchsorted(det.category_id[d_order], np.stack([cat_ids, cat_ids + 1]))
    num_gt = np.bincount(np.searchsorted(cat_ids, g.category_id[g.iscrowd == 0]), minlength=K)
    # a category without ground truth stays at −1 whatever was detected (COCO's rule)
    evaluated = [k for k in range(K) if g_hi[k] > g_lo[k]]
    cat_images = [np.unique(np.concatenate([g.image_id[g_order[g_lo[k]:g_hi[k]]],
                                            det.image_id[d_order[d_lo[k]:d_hi[k]]]])) for k in evaluated]
    d_area = det.bbox[:, 2] * det.bbox[:, 3]  # what pycocotools' loadRes stores as a result's area
    # faster-coco-eval holds ids as doubles: ids >= 2^53 would merge. Hand it dense ids instead —
    # image ids by rank (same order, so the same result), annotation ids by position — and keep
    # the user's ids everywhere else.
    sorted_img_ids = np.fromiter(sorted(g.images), np.int64, len(g.images))
    g_img = np.searchsorted(sorted_img_ids, g.image_id) + 1
    d_img = np.searchsorted(sorted_img_ids, det.image_id) + 1

    for chunk in _category_chunks(cat_images, MAX_GRID_SLOTS):
        ks = [evaluated[j] for j in chunk]
        gi = np.concatenate([g_order[g_lo[k]:g_hi[k]] for k in ks])
        di = np.concatenate([d_order[d_lo[k]:d_hi[k]] for k in ks])
        gts = [{"id": a, "image_id": i, "category_id": c, "bbox": b, "area": ar, "iscrowd": cr}
               for a, i, c, b, ar, cr in zip((gi + 1).tolist(), g_img[gi].tolist(),
                                             g.category_id[gi].tolist(), g.bbox[gi].tolist(),
                                             g.area[gi].tolist(), g.iscrowd[gi].tolist())]
        # result ids are 1-based positions in the results list, as pycocotools' loadRes numbers them
        dts = [{"id": a, "image_id": i, "category_id": c, "bbox": b, "score": sc, "area": ar, "iscrowd": 0}
               for a, i, c, b, sc, ar in zip((di + 1).tolist(), d_img[di].tolist(),
                                             det.category_id[di].tolist(), det.bbox[di].tolist(),
                                             det.score[di].tolist(), d_area[di].tolist())]
        user_ids = np.unique(np.concatenate([cat_images[j] for j in chunk]))
        img_ids = (np.searchsorted(sorted_img_ids, user_ids) + 1).tolist()
        images = [dict(g.images[i], id=d) for i, d in zip(user_ids.tolist(), img_ids)]
        cats = [g.categories[k] for k in ks]
        ev = _Evaluator(_coco(images, cats, gts), _coco(images, cats, dts), "bbox",
                        print_function=_quiet, lvis_style=federated)
        ev.params.imgIds = img_ids
        ev.params.catIds = cat_ids[ks].tolist()
        ev.params.maxDets = list(max_dets)
        ev.evaluate()
        ev.accumulate()
        precision[:, :, ks] = ev.eval["precision"]
        recall[:, ks] = ev.eval["recall"]
    return precision, recall, num_gt


def _coco(images: list, categories: list, annotations: list) -> COCO:
    c = COCO(print_function=_quiet)
    c.dataset = {"images": images, "categories": categories, "annotations": annotations}
    c.createIndex()
    return c


def _summarize_one(precision, recall, params, *, ap: int, iou: Optional[float] = None, area: str = "all",
                   max_dets: int = 100) -> float:
    """One number of pycocotools' ``COCOeval.summarize`` (same slicing, same mean over the
    entries > −1); −1 (nothing to average) → NaN."""
    a = params.areaRngLbl.index(area)
    m = params.maxDets.index(max_dets)
    if ap:
        s = precision
        if iou is not None:
            s = s[np.where(iou == params.iouThrs)[0]]
        s = s[:, :, :, a, m]
    else:
        s = recall
        if iou is not None:
            s = s[np.where(iou == params.iouThrs)[0]]
        s = s[:, :, a, m]
    valid = s[s > -1]
    return float(np.mean(valid)) if valid.size else math.nan


def summarize(precision: np.ndarray, recall: np.ndarray, params, max_dets: int = 100) -> dict:
    """The 12 COCO numbers from ``precision (T, R, K, A, M)`` and ``recall (T, K, A, M)``. AR1 / AR10
    / AR100 use maxDets 1 / 10 / 100; the rest use ``max_dets`` (100 for COCO, 300 for LVIS)."""
    one = lambda **kw: _summarize_one(precision, recall, params, **kw)  # noqa: E731
    values = [
        one(ap=1, max_dets=max_dets), one(ap=1, iou=0.5, max_dets=max_dets), one(ap=1, iou=0.75, max_dets=max_dets),
        one(ap=1, area="small", max_dets=max_dets), one(ap=1, area="medium", max_dets=max_dets),
        one(ap=1, area="large", max_dets=max_dets),
        one(ap=0, max_dets=1), one(ap=0, max_dets=10), one(ap=0, max_dets=100),
        one(ap=0, area="small", max_dets=max_dets), one(ap=0, area="medium", max_dets=max_dets),
        one(ap=0, area="large", max_dets=max_dets),
    ]
    return dict(zip(COCO_STATS, values))
