"""APr / APc / APf and the grouping rules, on a case whose per-class APs are known by hand."""
from __future__ import annotations

import math

import pytest

from focaldet.evaluation import assign_groups, default_thresholds, evaluate_detections

R = 101  # COCO's recall thresholds 0, 0.01, …, 1


def _constructed_case():
    """Per-class AP known by hand (boxes exact, so every IoU threshold agrees):
    cat 1: one GT found first → AP 1;
    cat 2: one GT, a false positive scored above the hit → precision 1/2 at recall 1 → AP 0.5;
    cat 5: two GTs, one found → precision 1 up to recall 0.5 → AP 51/101;
    cat 9: no ground truth in this split → no AP (NaN)."""
    images = [{"id": i, "width": 400, "height": 400} for i in (1, 2, 3)]
    box = lambda x: [float(x), 10.0, 100.0, 100.0]  # noqa: E731
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": box(10), "area": 1e4, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 2, "bbox": box(200), "area": 1e4, "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 5, "bbox": box(10), "area": 1e4, "iscrowd": 0},
        {"id": 4, "image_id": 3, "category_id": 5, "bbox": box(10), "area": 1e4, "iscrowd": 0},
    ]
    cats = [{"id": 1, "name": "head", "image_count": 500}, {"id": 2, "name": "body", "image_count": 50},
            {"id": 5, "name": "tail", "image_count": 5}, {"id": 9, "name": "unseen", "image_count": 3}]
    results = [
        {"image_id": 1, "category_id": 1, "bbox": box(10), "score": 0.9},
        {"image_id": 2, "category_id": 2, "bbox": box(200), "score": 0.8},  # FP (image 2 has no cat 2)
        {"image_id": 1, "category_id": 2, "bbox": box(200), "score": 0.7},
        {"image_id": 2, "category_id": 5, "bbox": box(10), "score": 0.6},
        {"image_id": 3, "category_id": 9, "bbox": box(10), "score": 0.5},
    ]
    return {"images": images, "annotations": anns, "categories": cats}, results


HAND_AP = {1: 1.0, 2: 0.5, 5: 51 / R, 9: math.nan}


def test_per_class_ap_matches_hand_values():
    gt, results = _constructed_case()
    r = evaluate_detections(gt, results)
    for row in r.per_class:
        want = HAND_AP[row["cat_id"]]
        assert (math.isnan(row["AP"]) and math.isnan(want)) or abs(row["AP"] - want) < 1e-12, row


def test_lvis_thresholds_from_image_count():
    gt, results = _constructed_case()
    r = evaluate_detections(gt, results, rare_max=10, common_max=100)
    assert [row["group"] for row in r.per_class] == ["f", "c", "r", "r"]
    # rare = {5, 9}; 9 has no ground truth, so APr is cat 5's AP alone
    assert abs(r.stats["APr"] - 51 / R) < 1e-12
    assert abs(r.stats["APc"] - 0.5) < 1e-12
    assert abs(r.stats["APf"] - 1.0) < 1e-12


def test_other_thresholds_and_empty_group():
    gt, results = _constructed_case()
    r = evaluate_detections(gt, results, rare_max=60, common_max=400)
    assert [row["group"] for row in r.per_class] == ["f", "r", "r", "r"]
    assert abs(r.stats["APr"] - (0.5 + 51 / R) / 2) < 1e-12
    assert math.isnan(r.stats["APc"])  # empty group
    assert abs(r.stats["APf"] - 1.0) < 1e-12
    table = r.format_table()
    assert "APc" in table and "–" in table
    assert r.to_dict()["stats"]["APc"] is None  # JSON-safe


def test_image_counts_argument_overrides_the_file():
    gt, results = _constructed_case()
    r = evaluate_detections(gt, results, image_counts={1: 5, 2: 5, 5: 500, 9: 500}, rare_max=10, common_max=100)
    assert [row["group"] for row in r.per_class] == ["r", "r", "f", "f"]
    assert abs(r.stats["APr"] - 0.75) < 1e-12 and abs(r.stats["APf"] - 51 / R) < 1e-12


def test_frequency_field_used_when_no_thresholds_given():
    gt, results = _constructed_case()
    for c, f in zip(gt["categories"], "ccfr"):
        c["frequency"] = f
    r = evaluate_detections(gt, results)
    assert r.groups["source"] == "frequency"
    assert abs(r.stats["APc"] - 0.75) < 1e-12 and abs(r.stats["APf"] - 51 / R) < 1e-12
    assert math.isnan(r.stats["APr"])  # only cat 9, which has no ground truth
    # explicit thresholds win over the field
    assert evaluate_detections(gt, results, rare_max=10, common_max=100).groups["source"] == "image_count"


def test_no_counts_no_groups():
    gt, results = _constructed_case()
    for c in gt["categories"]:
        del c["image_count"]
    r = evaluate_detections(gt, results)
    assert all(row["group"] is None for row in r.per_class)
    assert all(math.isnan(r.stats[k]) for k in ("APr", "APc", "APf"))


@pytest.mark.parametrize("n, want", [(None, (10, 100)), (100_000, (10, 100)), (1000, (10, 100)),
                                     (600, (6, 60)), (100, (1, 10)), (24, (1, 2)), (1, (1, 2))])
def test_default_thresholds(n, want):
    assert default_thresholds(n) == want


def test_assign_groups_boundaries_are_inclusive():
    groups, rule = assign_groups([1, 10, 11, 100, 101, None], rare_max=10, common_max=100)
    assert groups == ["r", "r", "c", "c", "f", None]
    assert rule == {"source": "image_count", "rare_max": 10, "common_max": 100}
    with pytest.raises(ValueError, match="rare_max"):
        assign_groups([1], rare_max=50, common_max=20)


def test_table_rows_sorted_by_training_images():
    gt, results = _constructed_case()
    table = evaluate_detections(gt, results, rare_max=10, common_max=100).format_table()
    rows = table[table.index("Per class"):]
    order = [rows.index(f" {name} ") for name in ("head", "body", "tail", "unseen")]
    assert order == sorted(order)
