"""Detections of each compared loss, drawn side by side: on held-out val images of the benchmark
(with their ground truth as the first row) and on real photos that ship inside pip wheels.

Models are loaded from each arm's first finished seed (``checkpoints/last.pt``, i.e. the final
weights); diverged runs are left out of the figures."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from focaldet.analysis.plots import plot_detection_grid

# Real photos bundled in the installed wheels: (package, file inside the package, caption).
# Files are read from the package folder directly: some skimage.data loaders download through
# pooch, and these must never be called.
BUNDLED_PHOTOS = (
    ("skimage.data", "coffee.png", "skimage coffee"),
    ("skimage.data", "astronaut.png", "skimage astronaut"),
    ("skimage.data", "chelsea.png", "skimage chelsea"),
    ("skimage.data", "rocket.jpg", "skimage rocket"),
    ("sklearn.datasets.images", "china.jpg", "sklearn china"),
    ("sklearn.datasets.images", "flower.jpg", "sklearn flower"),
)


def bundled_photo_paths() -> list[tuple[Path, str]]:
    """(path, caption) of the bundled photos present in this environment."""
    import importlib

    found = []
    for package, name, caption in BUNDLED_PHOTOS:
        try:
            mod = importlib.import_module(package)
        except ImportError:
            continue
        p = Path(mod.__file__).parent / name
        if p.is_file():
            found.append((p, caption))
    return found


def _first_models(records) -> dict[str, Path]:
    """arm name → final checkpoint of its first finished seed."""
    out: dict[str, Path] = {}
    for r in sorted(records, key=lambda r: r.seed):
        ck = Path(r.dir) / "checkpoints" / "last.pt"
        if r.status == "finished" and r.arm not in out and ck.is_file():
            out[r.arm] = ck
    return out


@torch.no_grad()
def detect(model, cfg, images: Sequence[torch.Tensor], device: torch.device) -> list[dict]:
    """Run ``model`` on uint8 ``(3, H, W)`` images with the eval transforms of ``cfg``; boxes are
    returned in each image's own pixels (``boxes (k, 4)`` xyxy, ``scores (k,)``, ``labels (k,)``)."""
    from focaldet.data.collate import collate
    from focaldet.data.transforms import build_transforms

    transform = build_transforms(cfg.data, train=False)
    samples = []
    for i, img in enumerate(images):
        h, w = img.shape[-2:]
        target = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
                  "crowd_boxes": torch.zeros(0, 4), "image_id": i, "orig_size": (h, w), "size": (h, w), "scale": 1.0}
        samples.append(transform(img, target, np.random.default_rng(0)))
    batch = collate(samples, size_divisibility=cfg.data.size_divisibility).to(device)
    outputs = model(batch.images, batch.image_sizes)
    return [{"boxes": (o["boxes"].float().cpu() / s).numpy(), "scores": o["scores"].float().cpu().numpy(),
             "labels": o["labels"].cpu().numpy()} for o, s in zip(outputs, batch.scales)]


def _grid(records, arms_order: Sequence[str], images: list[torch.Tensor], path: Path, *, title: str,
          col_titles: Sequence[str], first_rows: Optional[dict] = None, score_thresh: float = 0.3) -> Optional[Path]:
    from focaldet.engine.evaluator import load_for_inference

    models = _first_models(records)
    if not models:
        return None
    device = torch.device("cpu")
    rows = dict(first_rows or {})
    class_names: list[str] = []
    for arm in arms_order:
        if arm not in models:
            if any(r.arm == arm and r.status == "diverged" for r in records):  # shown, not dropped
                rows[f"{arm} (diverged)"] = [{"boxes": np.zeros((0, 4)), "scores": np.zeros(0),
                                              "labels": np.zeros(0, dtype=int)} for _ in images]
            continue
        model, cfg, ckpt = load_for_inference(None, models[arm], device)
        class_names = list(ckpt["class_names"])
        rows[arm] = detect(model, cfg, images, device)
    arrays = [img.permute(1, 2, 0).numpy() for img in images]
    return plot_detection_grid(arrays, rows, class_names, path, title=title, col_titles=col_titles,
                               score_thresh=score_thresh)


def val_detection_grid(specs, records, path: Path, n_images: int = 4) -> Optional[Path]:
    """Ground truth and each loss's detections on ``n_images`` held-out val images (those with the
    most distinct classes, so that the figure shows several categories)."""
    from focaldet.data.images import read_image
    from focaldet.data.loader import resolve_data

    if not _first_models(records):
        return None
    cfg = specs[0].cfg
    resolve_data(cfg)  # fills the val paths of a generated benchmark (cached: no regeneration)
    ann = json.loads(Path(cfg.data.val_ann).read_text(encoding="utf-8"))
    cat_ids = sorted(c["id"] for c in ann["categories"])
    label_of = {c: i for i, c in enumerate(cat_ids)}
    by_image: dict[int, list[dict]] = {}
    for a in ann["annotations"]:
        if not a.get("iscrowd", 0):
            by_image.setdefault(a["image_id"], []).append(a)
    ranked = sorted(ann["images"], key=lambda im: (-len({a["category_id"] for a in by_image.get(im["id"], [])}),
                                                   im["id"]))[:n_images]
    images = [read_image(Path(cfg.data.val_images) / im["file_name"]) for im in ranked]
    gt_row = []
    for im in ranked:
        anns = by_image.get(im["id"], [])
        boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                          for a in anns], dtype=float).reshape(-1, 4)
        gt_row.append({"boxes": boxes, "scores": np.ones(len(anns)),
                       "labels": np.array([label_of[a["category_id"]] for a in anns], dtype=int)})
    arms_order = list(dict.fromkeys(s.arm.name for s in specs))
    return _grid(records, arms_order, images, path, title="Held-out val images: ground truth and detections per loss",
                 col_titles=[f"val image {im['id']}" for im in ranked], first_rows={"ground truth": gt_row})


def photo_detection_grid(specs, records, path: Path, score_thresh: float = 0.3) -> Optional[Path]:
    """Each loss's detections on the real photos bundled with scikit-image and scikit-learn."""
    from focaldet.data.images import read_image

    photos = bundled_photo_paths()
    if not photos:
        return None
    images = [read_image(p) for p, _ in photos]
    arms_order = list(dict.fromkeys(s.arm.name for s in specs))
    return _grid(records, arms_order, images, path, title="Real photos bundled in pip wheels",
                 col_titles=[c for _, c in photos], score_thresh=score_thresh)
