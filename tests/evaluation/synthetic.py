"""Synthetic COCO ground truth + detections for the evaluation tests, and pycocotools as the
reference evaluator."""
from __future__ import annotations

import contextlib
import copy
import io

import numpy as np

CAT_IDS = [3, 7, 11, 25, 40, 90]  # non-contiguous; 90 never occurs in the ground truth


def make_case(seed: int, num_images: int = 120):
    """``(gt, results)``: random boxes of every COCO size (4–300 px sides on 640 × 480), ~4 % crowd
    boxes, images without objects, an image with 130 detections of one category, a category
    without ground truth (90) and one without detections (40 on odd seeds); detections are jittered ground truths, class confusions and
    random boxes, with scores rounded to 2 decimals so that ties occur."""
    rng = np.random.default_rng(seed)
    W, H = 640, 480
    images = [{"id": 1000 + i, "width": W, "height": H, "file_name": f"{i}.jpg"} for i in range(num_images)]
    anns, results = [], []
    gt_cats = CAT_IDS[:-1]
    for im in images:
        n = int(rng.integers(0, 9))
        for _ in range(n):
            w, h = np.exp(rng.uniform(np.log(4), np.log(300), 2))
            x, y = rng.uniform(0, W - w), rng.uniform(0, H - h)
            c = int(rng.choice(gt_cats, p=[0.4, 0.25, 0.15, 0.12, 0.08]))
            anns.append({"id": len(anns) + 1, "image_id": im["id"], "category_id": c,
                         "bbox": [x, y, w, h], "area": float(w * h) * rng.uniform(0.6, 1.0),
                         "iscrowd": int(rng.random() < 0.04)})
            for _ in range(int(rng.integers(0, 3))):  # detections of this object
                j = rng.normal(0, 0.15, 4)
                dc = c if rng.random() < 0.85 else int(rng.choice(CAT_IDS))
                if seed % 2 and dc == 40:
                    continue
                results.append({"image_id": im["id"], "category_id": dc,
                                "bbox": [x + j[0] * w, y + j[1] * h, w * np.exp(j[2]), h * np.exp(j[3])],
                                "score": round(float(rng.random()), 2)})
        for _ in range(int(rng.integers(0, 6))):  # false positives anywhere
            w, h = np.exp(rng.uniform(np.log(4), np.log(300), 2))
            dc = int(rng.choice(CAT_IDS))
            if seed % 2 and dc == 40:
                continue
            results.append({"image_id": im["id"], "category_id": dc,
                            "bbox": [rng.uniform(0, W - w), rng.uniform(0, H - h), w, h],
                            "score": round(float(rng.random()) * 0.7, 2)})
    for k in range(130):  # > 100 detections of one category on one image: the maxDets cap binds
        x, y, w, h = anns[0]["bbox"]
        results.append({"image_id": anns[0]["image_id"], "category_id": 3, "bbox": [x + k % 7, y + k % 3, w, h],
                         "score": round(float(rng.random()), 2)})
    results = [dict(r, bbox=[float(v) for v in r["bbox"]]) for r in results]
    cats = [{"id": c, "name": f"cat{c}"} for c in CAT_IDS]
    return {"images": images, "annotations": anns, "categories": cats}, results


def pycocotools_eval(gt: dict, results: list, cat_ids=None):
    """pycocotools' COCOeval (bbox) on deep copies; returns the evaluator after summarize()."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(results)) if results else COCO()
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        if cat_ids is not None:
            ev.params.catIds = cat_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev
