"""``focaldet predict``: run a checkpoint on the user's own photos, draw the detections and write
COCO-format results. Nothing is written outside ``out_dir``."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from typing import Iterable, Optional, Union

import torch

from focaldet.errors import FocaldetError
from focaldet.utils.io import atomic_write, atomic_write_json

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


class PredictError(FocaldetError):
    """Bad inputs or a refused output path for ``predict``."""


def collect_inputs(inputs: Iterable[Union[str, Path]]) -> tuple[list[Path], int]:
    """Files named directly, plus the image files (regular files with an image suffix, sorted)
    directly inside named directories. Returns (images, number of entries skipped in
    directories): other files, sub-folders (also one named ``x.jpg``), FIFOs, sockets, devices
    and broken or looping symlinks are skipped and counted."""
    images, skipped = [], 0
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            for f in sorted(p.iterdir()):
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                    images.append(f)
                else:
                    skipped += 1
        elif p.is_file():
            images.append(p)
        elif os.path.lexists(p):
            raise PredictError(f"{p}: not a regular file or folder (a FIFO, device or broken symlink?)",
                               hint="pass image files or folders of images")
        else:
            raise PredictError(f"{p}: no such file or directory", hint="pass image files or folders of images")
    if not images:
        raise PredictError("no images found in " + ", ".join(str(i) for i in inputs),
                           hint=f"supported suffixes: {', '.join(sorted(IMAGE_SUFFIXES))}")
    return images, skipped


def safe_output_path(out_dir: Path, name: str) -> Path:
    """``out_dir / name``, refused when it would resolve outside ``out_dir`` (``..``, an absolute
    name, or an existing symlink pointing elsewhere)."""
    root = out_dir.resolve()
    target = (out_dir / name).resolve()
    if target == root or root not in target.parents:
        raise PredictError(f"refusing to write {out_dir / name}: it resolves to {target}, outside --out {root}")
    return target


RESERVED_NAMES = {"results", "images"}  # results.json / images.json live beside the drawings


def _unique_names(paths: list[Path]) -> list[str]:
    """Output base names: the input's stem, sanitised to ``[A-Za-z0-9._-]``, made unique with
    ``_2``, ``_3``… Names are compared case-insensitively (case-insensitive file systems), so no
    two inputs ever share an output file — not ``a.jpg`` and ``a.png``, not ``a b.jpg`` and
    ``a_b.jpg``, not a third ``a`` and an input really called ``a_2``."""
    taken: set[str] = set()
    names = []
    for p in paths:
        stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in p.stem).lstrip(".") or "image"
        name, n = stem, 1
        while name.lower() in taken or name.lower() in RESERVED_NAMES:
            n += 1
            name = f"{stem}_{n}"
        taken.add(name.lower())
        names.append(name)
    return names


def check_outputs_spare_inputs(out_dir: Path, inputs: Iterable[Union[str, Path]], images: list[Path],
                               targets: Iterable[Path]) -> None:
    """Refuse an ``out_dir`` that is an input folder, and any output that would replace an input."""
    if out_dir.exists() and not out_dir.is_dir():
        raise PredictError(f"--out {out_dir}: exists and is not a folder", hint="give a folder path for --out")
    out = out_dir.resolve()
    for item in inputs:
        if Path(item).is_dir() and Path(item).resolve() == out:
            raise PredictError(f"--out {out_dir}: is the input folder {item}; the drawings would replace "
                               f"your photos", hint="choose another --out folder")
    sources = {p.resolve() for p in images}
    ours = previous_outputs(out_dir)
    for t in targets:
        if t in sources:
            raise PredictError(f"--out {out_dir}: writing {t.name} there would replace the input {t}",
                               hint="choose another --out folder")
        if os.path.lexists(t) and t.name not in ours:
            raise PredictError(f"--out {out_dir}: {t.name} exists and was not written by focaldet predict",
                               hint="choose another (or an empty) --out folder")


def previous_outputs(out_dir: Path) -> set[str]:
    """Names of the files an earlier ``predict`` wrote into ``out_dir`` (from its images.json);
    a re-run may replace those and no others."""
    import json

    try:
        index = json.loads((out_dir / "images.json").read_text())
        names = {r["output"] for r in index["images"] if isinstance(r.get("output"), str)}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return set()
    return names | {"images.json", "results.json"}


@torch.no_grad()
def predict(weights: Union[str, Path], inputs: Iterable[Union[str, Path]], out_dir: Union[str, Path], *,
            score_thresh: float = 0.3, device: str = "auto", test_size: Optional[int] = None,
            draw: bool = True, progress: Optional[bool] = None, amp: Optional[str] = None) -> dict:
    """Detect objects in ``inputs`` (image files and/or folders) with checkpoint ``weights``.

    Writes ``out_dir/<stem>.jpg`` (boxes with class name and score, those with score ≥
    ``score_thresh``), ``out_dir/results.json`` (a COCO results list: ``image_id``,
    ``category_id``, ``bbox`` xywh in original pixels, ``score`` — every detection the model keeps,
    whatever its score) and ``out_dir/images.json`` (``{"images": [{id, file_name, width,
    height, output}], "categories": [{id, name}]}``: the ids used in the results, and which
    drawing in ``out_dir`` belongs to which input; ``output`` is null where none could be written).
    ``out_dir`` must not be an input folder, and no output may replace an input.
    Returns ``{"images", "detections", "skipped", "results"}``. ``progress``: a bar on stderr
    (None: only when stderr is a terminal). ``amp``: ``none``, ``bf16`` or ``fp16`` (CUDA) autocast
    for the forward pass (None: the checkpoint's ``train.amp``).
    """
    from focaldet.data.images import read_image
    from focaldet.data.transforms import build_transforms
    from focaldet.engine.amp import amp_settings
    from focaldet.engine.evaluator import load_for_inference
    from focaldet.evaluation import outputs_to_coco_results
    from focaldet.utils.dist import setup
    from focaldet.utils.progress import progress_bar

    out_dir = Path(out_dir)
    inputs = list(inputs)
    if test_size is not None and not 1 <= int(test_size) <= 16384:
        raise PredictError(f"--test-size {test_size}: must be between 1 and 16384 pixels")
    if out_dir.exists() and not out_dir.is_dir():
        raise PredictError(f"--out {out_dir}: exists and is not a folder", hint="give a folder path for --out")
    images, skipped = collect_inputs(inputs)
    if skipped:
        warnings.warn(f"skipped {skipped} non-image entr{'y' if skipped == 1 else 'ies'} in the input folder(s)",
                      RuntimeWarning, stacklevel=2)
    dev = setup(device)
    model, cfg, ckpt = load_for_inference(None, weights, dev)
    if test_size is not None:
        cfg.data.test_size = int(test_size)
    class_names = list(ckpt["class_names"])
    cat_ids = [int(c) for c in ckpt.get("cat_ids") or range(len(class_names))]
    transform = build_transforms(cfg.data, train=False)
    if amp is None:
        # the checkpoint's train.amp, as `focaldet eval` uses it; an fp16 (CUDA) run predicts in fp32 elsewhere
        amp = cfg.train.amp if cfg.train.amp != "fp16" or dev.type == "cuda" else "none"
    elif amp not in ("none", "bf16", "fp16"):
        raise PredictError(f"--amp {amp}: must be one of none, bf16, fp16")
    amp_dtype, _ = amp_settings(amp, dev)  # an explicit fp16 off CUDA: a one-line error, as for training
    names = _unique_names(images)
    out_dir.mkdir(parents=True, exist_ok=True)
    targets = {n: safe_output_path(out_dir, n + ".jpg") for n in names}  # check all before writing any
    results_path = safe_output_path(out_dir, "results.json")
    images_path = safe_output_path(out_dir, "images.json")
    check_outputs_spare_inputs(out_dir, inputs, images, [*targets.values(), results_path, images_path])

    records, all_results = [], []
    bar = progress_bar(len(images), "predict", enabled=progress)
    for image_id, (path, name) in enumerate(zip(images, names), start=1):
        image = read_image(path)
        h, w = image.shape[-2:]
        out, batch = _detect(model, image, image_id, transform, cfg.data.size_divisibility, dev, amp_dtype)
        all_results.extend(outputs_to_coco_results([out], batch.image_ids, batch.scales, cat_ids))
        record = {"id": image_id, "file_name": str(path), "width": int(w), "height": int(h), "output": None}
        if draw:
            boxes = out["boxes"] / batch.scales[0]
            try:
                _draw(image, boxes, out, class_names, score_thresh, targets[name])
                record["output"] = targets[name].name
            except (OSError, ValueError) as e:  # JPEG cannot hold sides beyond 65,500 px
                warnings.warn(f"{path}: drawing not written ({str(e)[:120]}); its detections are in "
                              f"{results_path.name}", RuntimeWarning, stacklevel=2)
        records.append(record)
        bar.update(1)
    bar.close()
    cats = [{"id": c, "name": n} for c, n in zip(cat_ids, class_names)]
    atomic_write_json(results_path, all_results, indent=None)
    atomic_write_json(images_path, {"images": records, "categories": cats})
    return {"images": len(images), "detections": len(all_results), "skipped": skipped,
            "results": str(results_path), "images_json": str(images_path), "out_dir": str(out_dir)}


def _detect(model, image: torch.Tensor, image_id: int, transform, size_divisibility: int, dev, amp_dtype):
    """Detections of one ``(3, H, W)`` uint8 image: (``{boxes (n, 4) in resized pixels, scores,
    labels}`` on the CPU in float32, the one-image batch)."""
    from focaldet.data.collate import collate
    from focaldet.engine.amp import autocast

    h, w = image.shape[-2:]
    target = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
              "crowd_boxes": torch.zeros(0, 4), "image_id": image_id, "orig_size": (h, w),
              "size": (h, w), "scale": 1.0}
    resized, target = transform(image, target, np.random.default_rng(0))  # eval transforms draw nothing random
    batch = collate([(resized, target)], size_divisibility=size_divisibility).to(dev)
    with autocast(amp_dtype, dev):
        out = model(batch.images, batch.image_sizes)[0]
    return {k: v.float().cpu() if v.is_floating_point() else v.cpu() for k, v in out.items()}, batch


def _draw(image: torch.Tensor, boxes: torch.Tensor, out: dict, class_names: list, score_thresh: float,
          target: Path) -> None:
    """Write ``image`` with the boxes (original pixels) scoring at least ``score_thresh`` to the
    JPEG ``target``; raises OSError / ValueError when the JPEG cannot be written."""
    from PIL import Image
    from torchvision.utils import draw_bounding_boxes

    keep = out["scores"] >= score_thresh
    labels = [f"{class_names[int(label)]} {float(s):.2f}" for label, s in zip(out["labels"][keep], out["scores"][keep])]
    h, w = image.shape[-2:]
    with warnings.catch_warnings():  # torchvision warns about the default font, once per call
        warnings.simplefilter("ignore", UserWarning)
        drawn = draw_bounding_boxes(image, boxes[keep], labels=labels, colors="red", width=max(2, min(h, w) // 200))
    pil = Image.fromarray(drawn.permute(1, 2, 0).numpy())
    atomic_write(target, lambda fh: pil.save(fh, format="JPEG", quality=92))
