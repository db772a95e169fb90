"""Data-layer speed: ours vs the reference in one process.

1. Annotation loading + per-image targets on a synthetic COCO file (5,000 images, 100,000 boxes):
   ``focaldet.data.CocoDetection`` (validation included, numpy arrays built once) vs pycocotools
   ``COCO`` + the per-image Python loop torchvision's detection references use.
2. Training pipeline throughput (read JPEG, resize to 800/1333, flip, pad-collate), one process:
   ours vs ``torchvision.datasets.CocoDetection`` + ``wrap_dataset_for_transforms_v2`` + v2 transforms.

Usage: ``.venv/bin/python benchmarks/bench_data_loading.py [--images 5000 --boxes 100000 --photos 48]``
"""
from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def synthetic_coco(root: Path, n_images: int, n_boxes: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    cat_ids = sorted(rng.choice(np.arange(1, 200), size=80, replace=False).tolist())
    images = []
    for i in range(n_images):
        name = f"{i:06d}.jpg"
        (root / "images" / name).touch()  # only existence is checked at load
        images.append({"id": 1000 + i, "file_name": name, "width": 640, "height": 480})
    img = rng.integers(0, n_images, n_boxes)
    xy = rng.uniform(0, 400, (n_boxes, 2))
    wh = rng.uniform(2, 200, (n_boxes, 2))
    cats = rng.choice(cat_ids, n_boxes)
    anns = [{"id": k + 1, "image_id": 1000 + int(i), "category_id": int(c), "iscrowd": 0,
             "bbox": [float(x), float(y), float(w), float(h)], "area": float(w * h)}
            for k, (i, (x, y), (w, h), c) in enumerate(zip(img, xy.tolist(), wh.tolist(), cats))]
    path = root / "ann.json"
    path.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": [{"id": c, "name": f"c{c}"} for c in cat_ids]}))
    return path


def bench_annotations(n_images: int, n_boxes: int) -> None:
    from pycocotools.coco import COCO

    from focaldet.data import CocoDetection

    with tempfile.TemporaryDirectory() as d:
        ann = synthetic_coco(Path(d), n_images, n_boxes)
        t = time.perf_counter()
        ds = CocoDetection(ann, Path(d) / "images")
        t_ours_load = time.perf_counter() - t
        t = time.perf_counter()
        ours = [ds.get_target(i) for i in range(len(ds))]
        t_ours_targets = time.perf_counter() - t

        import contextlib
        import io
        t = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(ann))
        t_ref_load = time.perf_counter() - t
        cat_map = {c: i for i, c in enumerate(sorted(coco.getCatIds()))}
        t = time.perf_counter()
        ref = []
        for image_id in sorted(coco.getImgIds()):
            anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=image_id)) if not a.get("iscrowd", 0)]
            boxes = torch.as_tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
            boxes[:, 2:] += boxes[:, :2]
            boxes[:, 0::2].clamp_(0, 640)
            boxes[:, 1::2].clamp_(0, 480)
            labels = torch.tensor([cat_map[a["category_id"]] for a in anns], dtype=torch.int64)
            ref.append({"boxes": boxes, "labels": labels})
        t_ref_targets = time.perf_counter() - t
    # same content, so the timing compares like with like
    assert sum(len(o["boxes"]) for o in ours) == sum(len(r["boxes"]) for r in ref)
    print(f"annotations: {n_images} images, {n_boxes} boxes")
    print(f"  load+validate   ours {t_ours_load:6.2f} s   pycocotools COCO() {t_ref_load:6.2f} s   "
          f"ratio {t_ref_load / t_ours_load:5.2f}x")
    print(f"  all targets     ours {t_ours_targets:6.3f} s   loadAnns + loop    {t_ref_targets:6.3f} s   "
          f"ratio {t_ref_targets / t_ours_targets:5.1f}x")
    print(f"  ours: {ds.report.summary()}")


def photo_dataset(root: Path, n: int) -> Path:
    from skimage import data as skdata

    sources = [skdata.astronaut(), skdata.coffee(), skdata.chelsea(), skdata.rocket(), skdata.hubble_deep_field()]
    (root / "images").mkdir(parents=True)
    images, anns = [], []
    rng = np.random.default_rng(0)
    for i in range(n):
        arr = sources[i % len(sources)]
        Image.fromarray(arr).resize((640, 480), Image.BILINEAR).save(root / "images" / f"{i}.jpg", quality=90)
        images.append({"id": i + 1, "file_name": f"{i}.jpg", "width": 640, "height": 480})
        for k in range(7):
            x, y = rng.uniform(0, 500), rng.uniform(0, 350)
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1 + k % 3, "iscrowd": 0,
                         "bbox": [x, y, 100.0, 80.0], "area": 8000.0})
    path = root / "ann.json"
    path.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": [{"id": c, "name": f"c{c}"} for c in (1, 2, 3)]}))
    return path


def _pad_collate(samples):
    """Reference batching: zero-pad float images to the largest size rounded up to 128."""
    h = -(-max(x[0].shape[1] for x in samples) // 128) * 128
    w = -(-max(x[0].shape[2] for x in samples) // 128) * 128
    out = torch.zeros(len(samples), 3, h, w)
    for i, (img, _) in enumerate(samples):
        out[i, :, :img.shape[1], :img.shape[2]] = img
    return out, [x[1] for x in samples]


def bench_pipeline(n: int) -> None:
    import torchvision
    from torchvision.transforms import v2

    from focaldet.config import DataConfig
    from focaldet.data import CocoDetection, build_train_loader, build_transforms

    torch.set_num_threads(1)
    cfg = DataConfig(train_sizes=[800], max_size=1333, flip_prob=0.5, batch_size=2, num_workers=0)
    with tempfile.TemporaryDirectory() as d:
        ann = photo_dataset(Path(d), n)
        ours_ds = CocoDetection(ann, Path(d) / "images", build_transforms(cfg, train=True))
        loader = build_train_loader(cfg, ours_ds, seed=0, pin_memory=False)
        next(iter(loader))
        t = time.perf_counter()
        seen = sum(len(b) for b in loader)
        t_ours = time.perf_counter() - t

        import contextlib
        import io
        with contextlib.redirect_stdout(io.StringIO()):
            ref_ds = torchvision.datasets.CocoDetection(
                str(Path(d) / "images"), str(ann),
                transforms=v2.Compose([v2.Resize(800, max_size=1333, antialias=True), v2.RandomHorizontalFlip(0.5),
                                       v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]))
            ref_ds = torchvision.datasets.wrap_dataset_for_transforms_v2(ref_ds, target_keys=("boxes", "labels"))
        ref_loader = torch.utils.data.DataLoader(ref_ds, batch_size=2, shuffle=True, collate_fn=_pad_collate)
        next(iter(ref_loader))
        t = time.perf_counter()
        ref_seen = sum(len(b[1]) for b in ref_loader)
        t_ref = time.perf_counter() - t
    assert seen == ref_seen == n
    print(f"pipeline (640x480 JPEG -> 800/1333 resize, flip, pad; 1 process, 1 thread): {n} images")
    print(f"  ours {n / t_ours:6.1f} img/s   torchvision CocoDetection + v2 {n / t_ref:6.1f} img/s   "
          f"ratio {t_ref / t_ours:4.2f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=5000)
    p.add_argument("--boxes", type=int, default=100_000)
    p.add_argument("--photos", type=int, default=48)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    bench_annotations(args.images, args.boxes)
    bench_pipeline(args.photos)


if __name__ == "__main__":
    main()
