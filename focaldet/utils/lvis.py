"""LVIS's long-tail groups by training-image count: the one rule behind both the benchmark
generator's ``frequency`` field and the evaluator's fallback (numpy- and torch-free, so the
generator can use it without importing the evaluation stack)."""
from __future__ import annotations

from typing import Optional

LVIS_RARE_MAX, LVIS_COMMON_MAX = 10, 100  # LVIS v1: rare 1–10, common 11–100, frequent > 100 images
LVIS_TRAIN_IMAGES = 100_000  # LVIS v1 train has ~100k images


def default_thresholds(num_train_images: Optional[int]) -> tuple[int, int]:
    """``(rare_max, common_max)`` for a training set of ``num_train_images`` images.

    LVIS's 10 / 100 are kept as upper bounds (a training set of 1,000 images or more uses them
    unchanged — at LVIS scale that is LVIS's rule). Smaller sets shrink them in proportion,
    ``rare_max = round(N / 100)`` and ``common_max = round(N / 10)`` — 1 % and 10 % of the training
    images — with floors of 1 and ``rare_max + 1`` so that each group stays non-empty in range:
    600 images → (6, 60), 100 → (1, 10), 24 → (1, 2). Unknown ``N`` → LVIS's thresholds."""
    if num_train_images is None:
        return LVIS_RARE_MAX, LVIS_COMMON_MAX
    n = int(num_train_images)
    rare_max = min(LVIS_RARE_MAX, max(1, round(n / 100)))
    common_max = min(LVIS_COMMON_MAX, max(rare_max + 1, round(n / 10)))
    return rare_max, common_max
