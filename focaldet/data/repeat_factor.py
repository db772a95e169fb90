"""Repeat-factor sampling (Gupta et al., "LVIS", CVPR 2019, §5): images that contain rare classes
are drawn more often in each training epoch.

For a class ``c`` seen in a fraction ``f(c)`` of the training images, ``r(c) = max(1, sqrt(t / f(c)))``
with the threshold ``t`` (LVIS: 0.001); an image's factor is the largest ``r(c)`` over the classes
it contains (1 for an image without boxes). Classes in more than a fraction ``t`` of the images
are not over-sampled; one in a fraction ``t / 100`` of them has images repeated ten times.
:class:`~focaldet.data.sampler.TrainSampler` turns the factors into integer repeats per epoch
(stochastic rounding). The EFL paper's LVIS numbers were trained this way.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def repeat_factors(image_classes: Sequence[np.ndarray], num_classes: int, threshold: float) -> np.ndarray:
    """Per-image repeat factors, ``(N,)`` float64, each ≥ 1.

    ``image_classes``: for each of the N training images, the labels ``0..K-1`` of its boxes
    (repeats allowed, crowd boxes excluded); ``num_classes``: K; ``threshold``: ``t`` in (0, 1].
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"repeat_factors: threshold must be in (0, 1], got {threshold}")
    n = len(image_classes)
    if n == 0:
        raise ValueError("repeat_factors: no training images")
    present = [np.unique(np.asarray(c, dtype=np.int64)) for c in image_classes]
    counts = np.zeros(num_classes, dtype=np.float64)
    for labels in present:
        if labels.size and (labels[0] < 0 or labels[-1] >= num_classes):
            raise ValueError(f"repeat_factors: labels must be in 0..{num_classes - 1}, got {labels.tolist()}")
        counts[labels] += 1.0
    with np.errstate(divide="ignore"):
        # a class with no image gets inf here and never matters: no image contains it
        class_factor = np.maximum(1.0, np.sqrt(threshold / (counts / n)))
    return np.array([class_factor[labels].max() if labels.size else 1.0 for labels in present])


def summary(factors: np.ndarray, epoch_size: int, threshold: float) -> str:
    """One line for the training log: how much the epoch is re-weighted."""
    repeated = int((factors > 1.0).sum())
    return (f"repeat-factor sampling (data.repeat_threshold {threshold:g}): {epoch_size} samples per epoch "
            f"from {len(factors)} images; {repeated} images over-sampled, factors 1 to {factors.max():.2f}")
