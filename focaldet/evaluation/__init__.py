"""COCO and long-tail (LVIS) box evaluation, and the COCO results format (design.md "Evaluation")."""
from focaldet.evaluation.agnostic import class_agnostic_stats
from focaldet.evaluation.coco_eval import evaluate_detections, limit_per_image, load_ground_truth, summarize
from focaldet.evaluation.eval_result import COCO_STATS, LONG_TAIL_STATS, STAT_KEYS, EvalResult
from focaldet.evaluation.long_tail import assign_groups, default_thresholds, group_ap
from focaldet.evaluation.results import (Detections, EvaluationError, detections_from_results, outputs_to_coco_results,
                                         outputs_to_detections, read_results, write_results)

__all__ = ["evaluate_detections", "class_agnostic_stats", "outputs_to_coco_results", "EvalResult", "EvaluationError", "Detections",
           "outputs_to_detections", "detections_from_results", "read_results", "write_results", "load_ground_truth",
           "limit_per_image", "summarize", "assign_groups", "default_thresholds", "group_ap", "COCO_STATS",
           "LONG_TAIL_STATS", "STAT_KEYS"]
