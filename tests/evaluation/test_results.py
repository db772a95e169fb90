"""COCO results format: model outputs → original-image xywh with original ids, files, round trips."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from focaldet.evaluation import evaluate_detections, outputs_to_coco_results, read_results, write_results
from tests.evaluation.synthetic import pycocotools_eval


def _random_outputs(gen, counts):
    outs = []
    for n in counts:
        xy = torch.rand(n, 2, generator=gen) * 300
        wh = torch.rand(n, 2, generator=gen) * 100 + 1
        outs.append({"boxes": torch.cat([xy, xy + wh], 1), "scores": torch.rand(n, generator=gen),
                     "labels": torch.randint(0, 3, (n,), generator=gen)})
    return outs


def test_scales_and_ids_against_float64_reference():
    gen = torch.Generator().manual_seed(0)
    outputs = _random_outputs(gen, [4, 0, 7])
    image_ids, scales, cat_ids = [70, 3, 11], [0.5, 2.0, 1.25], [5, 90, 2]
    got = outputs_to_coco_results(outputs, image_ids, scales, cat_ids)
    want = []
    for out, iid, s in zip(outputs, image_ids, scales):
        for b, sc, lab in zip(out["boxes"].double().tolist(), out["scores"].double().tolist(), out["labels"].tolist()):
            x1, y1, x2, y2 = (v / s for v in b)
            want.append((iid, cat_ids[lab], [x1, y1, x2 - x1, y2 - y1], sc))
    assert len(got) == len(want) == 11
    for g, (iid, cid, box, sc) in zip(got, want):
        assert g["image_id"] == iid and g["category_id"] == cid and type(g["category_id"]) is int
        np.testing.assert_allclose(g["bbox"], box, rtol=1e-12, atol=1e-9)
        assert g["score"] == sc
    assert json.loads(json.dumps(got)) == got  # plain JSON types


def test_half_precision_outputs_and_bad_labels():
    out = [{"boxes": torch.tensor([[10.0, 20.0, 30.0, 60.0]], dtype=torch.float16),
            "scores": torch.tensor([0.5], dtype=torch.bfloat16), "labels": torch.tensor([1])}]
    (r,) = outputs_to_coco_results(out, [1], [0.5], [4, 8])
    assert r == {"image_id": 1, "category_id": 8, "bbox": [20.0, 40.0, 40.0, 80.0], "score": 0.5}
    out[0]["labels"] = torch.tensor([2])
    with pytest.raises(ValueError, match="label"):
        outputs_to_coco_results(out, [1], [0.5], [4, 8])
    assert outputs_to_coco_results([], [], [], [4, 8]) == []


def test_ground_truth_round_trip_is_perfect(tmp_path):
    """GT boxes → resized-image xyxy outputs (as a model at that scale would give) → results file
    → evaluation: every object found exactly, so AP = AR = 1."""
    rng = np.random.default_rng(0)
    cat_ids = [11, 4, 60]
    images, anns, outputs, scales = [], [], [], []
    for i in range(12):
        images.append({"id": 100 + i, "width": 640, "height": 480})
        s = float(rng.choice([0.5, 0.625, 1.5]))
        boxes, labels = [], []
        for _ in range(int(rng.integers(1, 5))):
            w, h = rng.uniform(10, 200, 2)
            x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
            lab = int(rng.integers(0, 3))
            anns.append({"id": len(anns) + 1, "image_id": 100 + i, "category_id": cat_ids[lab],
                         "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
            boxes.append([x * s, y * s, (x + w) * s, (y + h) * s])
            labels.append(lab)
        outputs.append({"boxes": torch.tensor(boxes, dtype=torch.float32), "scores": torch.rand(len(boxes)),
                        "labels": torch.tensor(labels)})
        scales.append(s)
    gt = {"images": images, "annotations": anns,
          "categories": [{"id": c, "name": str(c)} for c in sorted(cat_ids)]}
    results = outputs_to_coco_results(outputs, [im["id"] for im in images], scales, cat_ids)
    path = write_results(tmp_path / "res.json", results)
    assert read_results(path) == results
    r = evaluate_detections(gt, path)
    assert r.stats["AP"] == 1.0 and r.stats["AR100"] == 1.0
    assert r.stats["AP"] == pycocotools_eval(gt, results).stats[0]


def test_tiny_benchmark_round_trip(tiny_benchmark, tmp_path):
    """The generated benchmark's val JSON → noisy detections derived from its ground truth →
    results file → evaluation equal to pycocotools, with the long-tail groups of the file."""
    gt = json.loads(open(tiny_benchmark.val_ann).read())
    rng = np.random.default_rng(1)
    cat_ids = [c["id"] for c in gt["categories"]]
    results = []
    for a in gt["annotations"]:
        x, y, w, h = a["bbox"]
        if rng.random() < 0.2:  # missed
            continue
        j = rng.normal(0, 0.08, 4)
        results.append({"image_id": a["image_id"], "category_id": a["category_id"],
                        "bbox": [x + j[0] * w, y + j[1] * h, w * np.exp(j[2]), h * np.exp(j[3])],
                        "score": float(rng.uniform(0.3, 1.0))})
    for im in gt["images"]:  # false positives
        for _ in range(3):
            results.append({"image_id": im["id"], "category_id": int(rng.choice(cat_ids)),
                            "bbox": [float(v) for v in rng.uniform(0, 80, 4) + [0, 0, 5, 5]],
                            "score": float(rng.uniform(0, 0.5))})
    results = [dict(r, bbox=[float(v) for v in r["bbox"]]) for r in results]
    path = write_results(tmp_path / "results.json", results)
    r = evaluate_detections(tiny_benchmark.val_ann, path)
    ref = pycocotools_eval(gt, results).stats
    ours = np.array([r.stats[k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl",
                                          "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")])
    np.testing.assert_allclose(ours, np.where(ref == -1, np.nan, ref), rtol=0, atol=1e-12)
    assert 0.3 < r.stats["AP"] < 0.95
    assert r.groups["source"] == "frequency"
    by_id = {c["id"]: c for c in gt["categories"]}
    for row in r.per_class:
        assert row["image_count"] == by_id[row["cat_id"]]["image_count"]
        assert row["group"] == by_id[row["cat_id"]]["frequency"]
