"""Detection transforms on ``(image, target)`` pairs.

A transform is called as ``t(image, target, rng)``: ``image`` a ``(3, H, W)`` uint8 tensor,
``target`` the dataset's dict (``boxes``/``crowd_boxes`` float32 xyxy in pixels of ``image``),
``rng`` a ``numpy.random.Generator`` that the dataset seeds per sample from (seed, epoch, index),
so the random choices do not depend on which worker process runs them.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF


class Compose:
    def __init__(self, transforms: Sequence):
        self.transforms = list(transforms)

    def __call__(self, image: torch.Tensor, target: dict, rng: np.random.Generator):
        for t in self.transforms:
            image, target = t(image, target, rng)
        return image, target

    def __repr__(self) -> str:
        return f"Compose({self.transforms})"


def resize_scale(h: int, w: int, short: int, max_size: int) -> float:
    """The factor that brings the short side of an ``h`` x ``w`` image to ``short`` pixels unless the
    long side would then exceed ``max_size``, in which case the long side becomes ``max_size``."""
    scale = short / min(h, w)
    if max(h, w) * scale > max_size:
        scale = max_size / max(h, w)
    return scale


def scaled_size(h: int, w: int, scale: float) -> tuple[int, int]:
    """``(round(h·scale), round(w·scale))`` with halves rounded up, at least 1 pixel."""
    return max(1, int(math.floor(h * scale + 0.5))), max(1, int(math.floor(w * scale + 0.5)))


class ResizeShortSide:
    """Resize so the short side is one of ``sizes`` (drawn uniformly per image) and the long side
    is at most ``max_size``; bilinear with antialiasing.

    Boxes are multiplied by the single factor ``scale`` (then clamped to the new image) and
    ``target["scale"]`` is multiplied by it, so ``boxes / scale`` maps back to the original image
    exactly; the image itself is rounded to whole pixels (at most half a pixel of difference).
    """

    def __init__(self, sizes: Sequence[int], max_size: int):
        if not sizes:
            raise ValueError("ResizeShortSide: sizes must not be empty")
        self.sizes = [int(s) for s in sizes]
        self.max_size = int(max_size)

    def __call__(self, image: torch.Tensor, target: dict, rng: np.random.Generator):
        short = self.sizes[int(rng.integers(len(self.sizes)))]
        h, w = image.shape[-2:]
        scale = resize_scale(h, w, short, self.max_size)
        new_h, new_w = scaled_size(h, w, scale)
        if (new_h, new_w) != (h, w):
            image = TF.resize(image, [new_h, new_w], interpolation=InterpolationMode.BILINEAR, antialias=True)
        target = dict(target)
        limits = torch.tensor([new_w, new_h, new_w, new_h], dtype=torch.float32)
        for key in ("boxes", "crowd_boxes"):
            if key in target:
                target[key] = torch.minimum(target[key] * scale, limits).clamp_(min=0)
        target["size"] = (new_h, new_w)
        target["scale"] = float(target.get("scale", 1.0)) * scale
        return image, target

    def __repr__(self) -> str:
        return f"ResizeShortSide(sizes={self.sizes}, max_size={self.max_size})"


class RandomHorizontalFlip:
    """Mirror the image left-right with probability ``prob``: ``x1' = W - x2``, ``x2' = W - x1``."""

    def __init__(self, prob: float = 0.5):
        self.prob = float(prob)

    def __call__(self, image: torch.Tensor, target: dict, rng: np.random.Generator):
        # Always draw, so the random stream does not depend on the outcome.
        if rng.random() >= self.prob:
            return image, target
        image = image.flip(-1)
        width = image.shape[-1]
        target = dict(target)
        for key in ("boxes", "crowd_boxes"):
            if key in target:
                b = target[key]
                target[key] = torch.stack([width - b[:, 2], b[:, 1], width - b[:, 0], b[:, 3]], dim=1)
        return image, target

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(prob={self.prob})"


def build_transforms(cfg, train: bool) -> Compose:
    """From a :class:`focaldet.config.DataConfig`: training = multi-scale resize (``train_sizes``,
    ``max_size``) + flip (``flip_prob``); evaluation = resize to ``test_size`` (``max_size``)."""
    if train:
        return Compose([ResizeShortSide(cfg.train_sizes, cfg.max_size), RandomHorizontalFlip(cfg.flip_prob)])
    return Compose([ResizeShortSide([cfg.test_size], cfg.max_size)])
