"""COCO statistics and per-class AP against pycocotools on generated detections."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from focaldet.evaluation import COCO_STATS, EvaluationError, evaluate_detections
from tests.evaluation.synthetic import CAT_IDS, make_case, pycocotools_eval


def _ref_stats(ev) -> np.ndarray:
    return np.where(ev.stats == -1, np.nan, ev.stats)


def test_twelve_stats_equal_pycocotools(case, tmp_path):
    gt, results = case
    ref = _ref_stats(pycocotools_eval(gt, results))
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    for source in (gt, gt_path):  # a dict and a file give the same result
        r = evaluate_detections(source, results)
        ours = np.array([r.stats[k] for k in COCO_STATS])
        assert np.array_equal(np.isnan(ours), np.isnan(ref))
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)
    assert 0.05 < r.stats["AP"] < 0.95  # a non-trivial case
    assert r.num_detections == len(results)


def test_category_groups_give_the_same_arrays(case, monkeypatch):
    """Evaluating each category in its own run (as LVIS-sized sets are) changes nothing."""
    import focaldet.evaluation.coco_eval as coco_eval

    gt, results = case
    whole = evaluate_detections(gt, results)
    monkeypatch.setattr(coco_eval, "MAX_GRID_SLOTS", 1)
    split = evaluate_detections(gt, results)
    assert split.to_dict() == whole.to_dict()


def test_per_class_ap_equals_pycocotools_single_category(case):
    gt, results = case
    r = evaluate_detections(gt, results)
    assert [row["cat_id"] for row in r.per_class] == CAT_IDS
    for row in r.per_class:
        ref = _ref_stats(pycocotools_eval(gt, results, cat_ids=[row["cat_id"]]))
        for key, ref_value in (("AP", ref[0]), ("AP50", ref[1])):
            if math.isnan(ref_value):
                assert math.isnan(row[key]), (row, key)
            else:
                assert abs(row[key] - ref_value) <= 1e-12, (row, key, ref_value)
        n_gt = sum(1 for a in gt["annotations"] if a["category_id"] == row["cat_id"] and not a["iscrowd"])
        assert row["num_gt"] == n_gt
    assert math.isnan(r.per_class[-1]["AP"])  # category 90 has no ground truth: −1 in COCO


def test_results_as_file_and_array_agree(tmp_path):
    gt, results = make_case(2, num_images=40)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    arr = np.array([[d["image_id"], *d["bbox"], d["score"], d["category_id"]] for d in results])
    a = evaluate_detections(gt, results).stats
    b = evaluate_detections(gt, path).stats
    c = evaluate_detections(gt, arr).stats
    assert a == b == c


def test_empty_detections_give_zeros():
    gt, _ = make_case(0, num_images=30)
    r = evaluate_detections(gt, [])
    ref = _ref_stats(pycocotools_eval(gt, []))
    ours = np.array([r.stats[k] for k in COCO_STATS])
    assert np.array_equal(ours, ref)
    assert r.stats["AP"] == 0.0 and r.stats["AR100"] == 0.0
    assert all(row["AP"] == 0.0 for row in r.per_class if row["num_gt"] > 0)


def test_no_ground_truth_at_all_gives_nan_not_a_crash():
    gt, results = make_case(0, num_images=10)
    gt["annotations"] = []
    r = evaluate_detections(gt, results)
    assert all(math.isnan(r.stats[k]) for k in COCO_STATS)
    assert "–" in r.format_table()


def test_results_are_not_modified():
    gt, results = make_case(0, num_images=10)
    before = json.dumps([gt, results])
    evaluate_detections(gt, results)
    assert json.dumps([gt, results]) == before


@pytest.mark.parametrize("bad, field", [
    ({"image_id": 999999}, "image_id"),
    ({"category_id": 4}, "category_id"),
    ({"bbox": [1.0, 2.0, 3.0]}, "bbox"),
    ({"score": float("nan")}, "score"),
])
def test_bad_results_name_record_and_field(bad, field):
    gt, results = make_case(0, num_images=10)
    results[5] = dict(results[5], **bad)
    with pytest.raises(EvaluationError, match=rf"record 5\b.*'{field}'"):
        evaluate_detections(gt, results)


def test_bad_ground_truth_names_file_and_field(tmp_path):
    gt, results = make_case(0, num_images=10)
    gt["annotations"][3]["category_id"] = 12345
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    with pytest.raises(EvaluationError, match=r"gt\.json: annotations\[3\]: field 'category_id'"):
        evaluate_detections(path, results)
    with pytest.raises(EvaluationError, match="not found"):
        evaluate_detections(tmp_path / "missing.json", results)


def test_garbage_collector_is_restored():
    import gc

    gt, results = make_case(0, num_images=5)
    assert gc.isenabled()
    evaluate_detections(gt, results)
    assert gc.isenabled()
    with pytest.raises(EvaluationError):
        evaluate_detections(gt, [dict(results[0], image_id=-5)])
    assert gc.isenabled()
