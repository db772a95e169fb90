"""COCO box evaluation speed: focaldet's path vs plain pycocotools, same files, same process.

5,000 images × 100 detections (fixed seed; 80 categories with non-contiguous ids, ~7 ground
truths per image, crowd boxes, all COCO sizes; detections are jittered ground truths, confusions
and random boxes). Each side: load the ground-truth JSON + load the results JSON + evaluate +
summarise. Prints wall and CPU seconds for both, the ratio, and checks that the 12 statistics and
every per-class AP agree (|difference| <= 1e-12; faster-coco-eval's C++ divides tp / (tp + fp)
where pycocotools adds a 2.2e-16 epsilon, so a few precision entries differ in the last bit).

    .venv/bin/python benchmarks/bench_eval.py [--images 5000] [--dets 100] [--repeat 1]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def make_dataset(num_images: int, dets_per_image: int, num_cats: int = 80, seed: int = 0):
    """A synthetic COCO ground truth (dict) and results (list) with the stated shape."""
    rng = np.random.default_rng(seed)
    cat_ids = np.sort(rng.choice(np.arange(1, 3 * num_cats), num_cats, replace=False))
    W, H = 640, 480
    images = [{"id": int(i), "width": W, "height": H, "file_name": f"{i:06d}.jpg"} for i in range(1, num_images + 1)]
    n_gt = rng.integers(1, 14, num_images)
    img_of = np.repeat(np.arange(1, num_images + 1), n_gt)
    G = img_of.size
    wh = np.exp(rng.uniform(np.log(4), np.log(400), (G, 2)))  # small, medium and large objects
    xy = rng.uniform(0, 1, (G, 2)) * np.clip(np.array([W, H]) - wh, 1, None)
    # a long-tailed class distribution, like the benchmarks this evaluates
    p = 1.0 / np.arange(1, num_cats + 1) ** 1.1
    gcat = cat_ids[rng.choice(num_cats, G, p=p / p.sum())]
    crowd = rng.random(G) < 0.02
    anns = [{"id": k + 1, "image_id": int(img_of[k]), "category_id": int(gcat[k]),
             "bbox": [round(float(v), 2) for v in (*xy[k], *wh[k])], "area": float(wh[k, 0] * wh[k, 1]),
             "iscrowd": int(crowd[k])} for k in range(G)]
    gt = {"images": images, "annotations": anns,
          "categories": [{"id": int(c), "name": f"class{c}"} for c in cat_ids]}

    D = num_images * dets_per_image
    dimg = np.repeat(np.arange(1, num_images + 1), dets_per_image)
    slot = np.tile(np.arange(dets_per_image), num_images)
    first = np.concatenate([[0], np.cumsum(n_gt)[:-1]])
    src = first[dimg - 1] + slot % n_gt[dimg - 1]
    from_gt = slot < 3 * n_gt[dimg - 1]
    jit = rng.normal(0, 0.12, (D, 4))
    box = np.concatenate([xy[src] + jit[:, :2] * wh[src], wh[src] * np.exp(jit[:, 2:])], 1)
    rwh = np.exp(rng.uniform(np.log(4), np.log(400), (D, 2)))
    rxy = rng.uniform(0, 1, (D, 2)) * np.clip(np.array([W, H]) - rwh, 1, None)
    box[~from_gt] = np.concatenate([rxy, rwh], 1)[~from_gt]
    dcat = np.where(from_gt & (rng.random(D) < 0.85), gcat[src], cat_ids[rng.integers(0, num_cats, D)])
    score = np.round(rng.random(D) * np.where(from_gt, 1.0, 0.6), 5)
    results = [{"image_id": i, "category_id": c, "bbox": [round(v, 2) for v in b], "score": s}
               for i, c, b, s in zip(dimg.tolist(), dcat.tolist(), box.tolist(), score.tolist())]
    return gt, results


def run_ours(gt_path, res_path):
    from focaldet.evaluation import COCO_STATS, evaluate_detections

    r = evaluate_detections(gt_path, res_path)
    return np.array([r.stats[k] for k in COCO_STATS]), np.array([row["AP"] for row in r.per_class])


def run_pycocotools(gt_path, res_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        dt = gt.loadRes(str(res_path))
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = np.where(ev.stats == -1, np.nan, ev.stats)
    prec = ev.eval["precision"][:, :, :, 0, -1]
    per_class = np.array([prec[:, :, k][prec[:, :, k] > -1].mean() if (prec[:, :, k] > -1).any() else np.nan
                          for k in range(prec.shape[2])])
    return stats, per_class


def timed(fn, *args):
    w, c = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - w, time.process_time() - c


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--dets", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=1, help="runs of each side (the fastest is kept)")
    args = ap.parse_args()

    import focaldet.evaluation  # noqa: F401  (imports — torch among them — are not timed)
    import pycocotools.cocoeval  # noqa: F401

    gt, results = make_dataset(args.images, args.dets)
    with tempfile.TemporaryDirectory() as tmp:
        gt_path, res_path = Path(tmp) / "gt.json", Path(tmp) / "results.json"
        gt_path.write_text(json.dumps(gt))
        res_path.write_text(json.dumps(results))
        del gt, results
        best = {}
        for _ in range(args.repeat):
            for name, fn in (("focaldet (faster-coco-eval)", run_ours), ("pycocotools", run_pycocotools)):
                out, wall, cpu = timed(fn, gt_path, res_path)
                prev = best.get(name)
                if prev is None or wall < prev[1]:
                    best[name] = (out, wall, cpu)
    (s_ours, pc_ours), w_ours, c_ours = best["focaldet (faster-coco-eval)"]
    (s_ref, pc_ref), w_ref, c_ref = best["pycocotools"]
    d_stats = float(np.nanmax(np.abs(s_ours - s_ref)))
    d_pc = float(np.nanmax(np.abs(pc_ours - pc_ref)))
    nan_same = np.array_equal(np.isnan(s_ours), np.isnan(s_ref)) and np.array_equal(np.isnan(pc_ours), np.isnan(pc_ref))

    print(f"COCO box evaluation, {args.images} images × {args.dets} detections "
          f"({platform.processor() or platform.machine()}, best of {args.repeat})")
    print(f"{'':<30}{'wall s':>9}{'CPU s':>9}")
    print(f"{'pycocotools':<30}{w_ref:>9.2f}{c_ref:>9.2f}")
    print(f"{'focaldet (faster-coco-eval)':<30}{w_ours:>9.2f}{c_ours:>9.2f}")
    print(f"{'ratio (pycocotools / ours)':<30}{w_ref / w_ours:>8.1f}×{c_ref / c_ours:>8.1f}×")
    print(f"AP {s_ours[0]:.4f} (pycocotools {s_ref[0]:.4f}); max |Δ| over the 12 stats {d_stats:.1e}, "
          f"over {len(pc_ours)} per-class APs {d_pc:.1e}")
    assert nan_same and d_stats <= 1e-12 and d_pc <= 1e-12, "statistics differ from pycocotools"
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
