"""Class-agnostic AP against pycocotools run on the relabelled files."""
from __future__ import annotations

import copy

import numpy as np

from focaldet.evaluation import COCO_STATS, class_agnostic_stats, evaluate_detections
from tests.evaluation.synthetic import pycocotools_eval


def _merged(gt: dict, results: list) -> tuple[dict, list]:
    gt = copy.deepcopy(gt)
    for a in gt["annotations"]:
        a["category_id"] = 1
    gt["categories"] = [{"id": 1, "name": "object"}]
    return gt, [dict(r, category_id=1) for r in results]


def test_equals_pycocotools_on_relabelled_files(case):
    gt, results = case
    ref = pycocotools_eval(*_merged(gt, results)).stats
    ref = np.where(ref == -1, np.nan, ref)
    ours = class_agnostic_stats(gt, results)
    np.testing.assert_allclose([ours[k] for k in COCO_STATS], ref, rtol=0, atol=1e-12)


def test_class_confusions_cost_class_aware_ap_only(case):
    """Swapping every detection's label to a wrong class leaves the class-agnostic numbers as they
    were and drops the class-aware AP to zero."""
    gt, results = case
    cats = sorted({c["id"] for c in gt["categories"]})
    wrong = [dict(r, category_id=cats[(cats.index(r["category_id"]) + 1) % len(cats)]) for r in results]
    assert class_agnostic_stats(gt, wrong) == class_agnostic_stats(gt, results)
    assert evaluate_detections(gt, results).stats["AP"] > 0.05
    assert evaluate_detections(gt, wrong).stats["AP"] < 0.02
