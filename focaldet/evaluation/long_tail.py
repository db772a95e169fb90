"""Long-tail groups (LVIS): a class is rare, common or frequent by the number of *training images*
that contain it; APr / APc / APf average the per-class AP within each group.

How a class gets its group, first rule that applies:

1. ``rare_max`` / ``common_max`` given (config ``data.rare_max`` / ``data.common_max``): rare when
   ``image_count <= rare_max``, common when ``<= common_max``, frequent above. One of the two may
   be left None; it is then taken from rule 3.
2. Every category carries LVIS's ``frequency`` field ("r" | "c" | "f"): it is used as is. LVIS v1
   files and the generated benchmarks carry it (the generator derives it from its own training
   split, see ``focaldet.data.benchmark.frequency_thresholds``).
3. Otherwise the thresholds come from :func:`default_thresholds` of the number of training images.

Per-class training image counts come from the categories' ``image_count`` field or are passed in.
A class with no count (and no ``frequency``) has no group.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

GROUPS = ("r", "c", "f")
GROUP_NAMES = {"r": "rare", "c": "common", "f": "frequent"}
from focaldet.utils.lvis import LVIS_COMMON_MAX, LVIS_RARE_MAX, LVIS_TRAIN_IMAGES, default_thresholds  # noqa: F401


def assign_groups(image_counts: Sequence[Optional[int]], *, frequencies: Optional[Sequence[Optional[str]]] = None,
                  rare_max: Optional[int] = None, common_max: Optional[int] = None,
                  num_train_images: Optional[int] = None) -> tuple[list[Optional[str]], dict]:
    """Group each class. Returns ``(groups, rule)``: ``groups[k]`` in ``"r" | "c" | "f" | None`` and
    ``rule`` a dict describing what was applied (``source``, ``rare_max``, ``common_max``)."""
    explicit = rare_max is not None or common_max is not None
    if not explicit and frequencies is not None and len(frequencies) and all(f in GROUPS for f in frequencies):
        return list(frequencies), {"source": "frequency", "rare_max": None, "common_max": None}
    d_rare, d_common = default_thresholds(num_train_images)
    r = d_rare if rare_max is None else int(rare_max)
    c = d_common if common_max is None else int(common_max)
    if c <= r:
        c = r + 1 if common_max is None else c
    if r < 0 or c <= r:
        raise ValueError(f"long-tail thresholds need 0 <= rare_max < common_max, got rare_max={r}, common_max={c}")
    groups = [None if n is None else ("r" if n <= r else "c" if n <= c else "f") for n in image_counts]
    return groups, {"source": "image_count", "rare_max": r, "common_max": c}


def group_ap(precision: np.ndarray, groups: Sequence[Optional[str]]) -> dict[str, float]:
    """APr / APc / APf as LVIS computes them: the mean of the valid (> -1) entries of the
    precision array ``(T, R, K)`` (area "all", the last maxDets) over the classes of each group —
    equal to the mean of their per-class APs, since a class is valid at every (T, R) or at none.
    An empty group (no class, or no class with ground truth) → NaN."""
    out = {}
    g = np.asarray([x if x is not None else "" for x in groups])
    for name in GROUPS:
        s = precision[:, :, g == name]
        valid = s[s > -1]
        out["AP" + name] = float(np.mean(valid)) if valid.size else math.nan
    return out
