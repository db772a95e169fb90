"""LVIS v1 federated evaluation on a hand-checkable file."""
from __future__ import annotations

import math

import pytest

from focaldet.evaluation import evaluate_detections, limit_per_image
from focaldet.evaluation.results import detections_from_results

R = 101


def _box(x):
    return [float(x), 20.0, 80.0, 80.0]


def _lvis_case():
    """Two categories: 1 (frequent) and 2 (rare).
    image 1: a cat-1 object; cat 2 verified absent (neg_category_ids).
    image 2: a cat-2 object; cat 2 not exhaustively annotated.
    image 3: a cat-1 object; cat 2 not verified either way."""
    images = [
        {"id": 1, "width": 300, "height": 300, "neg_category_ids": [2], "not_exhaustive_category_ids": []},
        {"id": 2, "width": 300, "height": 300, "neg_category_ids": [], "not_exhaustive_category_ids": [2]},
        {"id": 3, "width": 300, "height": 300, "neg_category_ids": [], "not_exhaustive_category_ids": []},
    ]
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": _box(10), "area": 6400.0},
            {"id": 2, "image_id": 2, "category_id": 2, "bbox": _box(10), "area": 6400.0},
            {"id": 3, "image_id": 3, "category_id": 1, "bbox": _box(10), "area": 6400.0}]
    cats = [{"id": 1, "name": "frequent thing", "frequency": "f", "image_count": 500},
            {"id": 2, "name": "rare thing", "frequency": "r", "image_count": 4}]
    results = [
        {"image_id": 1, "category_id": 1, "bbox": _box(10), "score": 0.9},    # TP
        {"image_id": 1, "category_id": 2, "bbox": _box(150), "score": 0.8},   # FP: cat 2 verified absent
        {"image_id": 2, "category_id": 2, "bbox": _box(150), "score": 0.95},  # unmatched, not exhaustive → ignored
        {"image_id": 2, "category_id": 2, "bbox": _box(10), "score": 0.7},    # TP
        {"image_id": 2, "category_id": 1, "bbox": _box(150), "score": 0.99},  # cat 1 unverified on image 2 → dropped
        {"image_id": 3, "category_id": 2, "bbox": _box(150), "score": 0.6},   # cat 2 unverified on image 3 → dropped
    ]
    return {"images": images, "annotations": anns, "categories": cats}, results


@pytest.mark.parametrize("max_slots", [1_000_000, 1])
def test_federated_rules_by_hand(max_slots, monkeypatch):
    import focaldet.evaluation.coco_eval as coco_eval

    monkeypatch.setattr(coco_eval, "MAX_GRID_SLOTS", max_slots)  # one run, or one per category
    gt, results = _lvis_case()
    r = evaluate_detections(gt, results)
    assert r.federated and r.max_dets == 300
    ap = {row["cat_id"]: row["AP"] for row in r.per_class}
    # cat 1: one of two objects found, nothing ranked above it → precision 1 up to recall 0.5
    assert abs(ap[1] - 51 / R) < 1e-12
    # cat 2: ignored 0.95, FP 0.8, TP 0.7 → precision 1/2 at recall 1
    assert abs(ap[2] - 0.5) < 1e-12
    assert abs(r.stats["AP"] - (51 / R + 0.5) / 2) < 1e-12
    assert abs(r.stats["APr"] - 0.5) < 1e-12 and abs(r.stats["APf"] - 51 / R) < 1e-12
    assert math.isnan(r.stats["APc"])
    assert abs(r.stats["AR300"] - (0.5 + 1.0) / 2) < 1e-12


def test_same_file_without_federated_rules_differs_as_coco_would():
    gt, results = _lvis_case()
    r = evaluate_detections(gt, results, federated=False)
    ap = {row["cat_id"]: row["AP"] for row in r.per_class}
    assert abs(ap[1] - 0.5 * 51 / R) < 1e-12  # the 0.99 detection on image 2 now counts as a FP
    assert abs(ap[2] - 1 / 3) < 1e-12  # 0.95 and 0.8 are FPs ahead of the hit


def test_at_most_300_detections_per_image_over_all_categories():
    gt, results = _lvis_case()
    base = [d for d in results if not (d["image_id"] == 1 and d["category_id"] == 2)]
    # 300 confident cat-2 false positives on image 1 push its cat-1 hit (0.9 → 0.05) out of the top 300
    flood = [{"image_id": 1, "category_id": 2, "bbox": [150.0, 150.0, 5.0 + i * 0.1, 5.0], "score": 0.5}
             for i in range(300)]
    hit = [dict(d, score=0.05) if d["image_id"] == 1 and d["category_id"] == 1 else d for d in base]
    ap = {row["cat_id"]: row["AP"] for row in evaluate_detections(gt, hit + flood).per_class}
    assert ap[1] == 0.0
    ap = {row["cat_id"]: row["AP"] for row in evaluate_detections(gt, hit + flood[:299]).per_class}
    assert abs(ap[1] - 51 / R) < 1e-12


def test_limit_per_image_keeps_top_scores_and_file_order():
    res = [{"image_id": i, "category_id": 1, "bbox": [0.0, 0.0, 1.0, 1.0], "score": s}
           for i, s in [(1, 0.1), (2, 0.5), (1, 0.9), (1, 0.5), (2, 0.4), (1, 0.5), (2, 0.3)]]
    kept = limit_per_image(detections_from_results(res), 2)
    # image 1 keeps 0.9 and the first 0.5 (ties keep file order); image 2 keeps 0.5 and 0.4
    assert kept.score.tolist() == [0.5, 0.9, 0.5, 0.4]
    assert kept.image_id.tolist() == [2, 1, 1, 2]
