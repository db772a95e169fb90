"""Class-agnostic box AP: does the detector find the objects, whatever class it gives them?

Every ground-truth box and every detection is relabelled to one category and scored with the
ordinary COCO rules. The gap between this AP and the class-aware AP is what the labels cost: a
detector whose class-agnostic AP is high but whose AP is low localises well and classifies badly.
Detections are taken as they are, so an object reported under two classes is one true positive
and one duplicate (a false positive) here; at most ``100`` detections per image count, as in the
class-aware evaluation (where the cap is per image and category).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from focaldet.evaluation.coco_eval import GroundTruth, evaluate_detections, load_ground_truth
from focaldet.evaluation.eval_result import COCO_STATS
from focaldet.evaluation.results import Detections, detections_from_results

AGNOSTIC_CATEGORY = {"id": 1, "name": "object"}


def class_agnostic_stats(gt, results) -> dict[str, float]:
    """The 12 COCO statistics (floats in [0, 1], NaN where undefined) with every class merged.

    Args:
        gt: a COCO ground-truth path, dict or :class:`~focaldet.evaluation.coco_eval.GroundTruth`.
            LVIS files are scored as plain COCO here (a merged class has no negative image sets).
        results: COCO results as for :func:`~focaldet.evaluation.evaluate_detections`.
    """
    g = gt if isinstance(gt, GroundTruth) else load_ground_truth(gt)
    det = detections_from_results(results)
    merged_gt = dataclasses.replace(g, categories=[dict(AGNOSTIC_CATEGORY)], is_lvis=False,
                                    category_id=np.full_like(g.category_id, AGNOSTIC_CATEGORY["id"]))
    merged_det = Detections(det.image_id, np.full_like(det.category_id, AGNOSTIC_CATEGORY["id"]), det.bbox, det.score)
    stats = evaluate_detections(merged_gt, merged_det, federated=False).stats
    return {k: stats[k] for k in COCO_STATS}
