"""``EvalResult``: the numbers of one evaluation, as a dict and as a readable table."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

from focaldet.evaluation.long_tail import GROUP_NAMES

COCO_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
LONG_TAIL_STATS = ("APr", "APc", "APf")
STAT_KEYS = COCO_STATS + LONG_TAIL_STATS


def _none_if_nan(v):
    return None if isinstance(v, float) and math.isnan(v) else v


def _pts(v: Optional[float], width: int = 6) -> str:
    """A metric in points (×100), one decimal; NaN / None → "–"."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return f"{'–':>{width}}"
    return f"{100.0 * v:>{width}.1f}"


@dataclass
class EvalResult:
    """``stats``: ``AP AP50 AP75 APs APm APl AR1 AR10 AR100 ARs ARm ARl APr APc APf`` (plus ``AR300``
    for LVIS files), floats in [0, 1], NaN where undefined (no ground truth, empty group).
    ``per_class``: one row per category ``{cat_id, name, image_count, group, AP, AP50, num_gt}``,
    in the ground truth's category order. ``groups``: how classes were grouped (see
    :mod:`focaldet.evaluation.long_tail`). ``federated``: LVIS rules were applied."""

    stats: dict
    per_class: list
    groups: dict = field(default_factory=dict)
    federated: bool = False
    num_images: int = 0
    num_detections: int = 0
    max_dets: int = 100

    def to_dict(self) -> dict:
        """JSON-ready: NaN becomes null."""
        return {
            "stats": {k: _none_if_nan(v) for k, v in self.stats.items()},
            "per_class": [{k: _none_if_nan(v) for k, v in row.items()} for row in self.per_class],
            "groups": dict(self.groups),
            "federated": self.federated,
            "num_images": self.num_images,
            "num_detections": self.num_detections,
            "max_dets": self.max_dets,
        }

    def format_table(self) -> str:
        """The 12 COCO numbers, APr / APc / APf, then one row per class sorted by training images
        (most first), all in points."""
        s = self.stats
        mode = "LVIS federated" if self.federated else "COCO"
        lines = [f"{mode} box evaluation: {self.num_images} images, {self.num_detections} detections "
                 f"(max {self.max_dets} per image), metrics in points"]
        ap_keys = ("AP", "AP50", "AP75", "APs", "APm", "APl")
        ar_keys = ("AR1", "AR10", "AR100", "ARs", "ARm", "ARl") + (("AR300",) if "AR300" in s else ())
        for keys in (ap_keys, ar_keys):
            lines.append("  " + " ".join(f"{k:>6}" for k in keys))
            lines.append("  " + " ".join(_pts(s.get(k)) for k in keys))
        g = self.groups
        if g.get("source") == "frequency":
            rule = "groups from the categories' 'frequency' field"
        elif g.get("source") == "image_count":
            rule = (f"rare <= {g['rare_max']} < common <= {g['common_max']} < frequent "
                    f"(training images per class)")
        else:
            rule = "no training image counts: groups undefined"
        counts = {k: sum(1 for r in self.per_class if r.get("group") == k) for k in GROUP_NAMES}
        lines.append(f"Long tail: {rule}; classes r/c/f = {counts['r']}/{counts['c']}/{counts['f']}")
        lines.append("  " + " ".join(f"{k:>6}" for k in LONG_TAIL_STATS))
        lines.append("  " + " ".join(_pts(s.get(k)) for k in LONG_TAIL_STATS))
        if self.per_class:
            name_w = max(4, min(24, max(len(str(r.get("name", ""))) for r in self.per_class)))
            lines.append(f"Per class (sorted by training images):")
            lines.append(f"  {'id':>6}  {'name':<{name_w}} {'train_imgs':>10} {'group':>5} {'val_gt':>6} "
                         f"{'AP':>6} {'AP50':>6}")
            rows = sorted(self.per_class, key=lambda r: (-(r.get("image_count") or -1), r["cat_id"]))
            for r in rows:
                n = r.get("image_count")
                lines.append(f"  {r['cat_id']:>6}  {str(r.get('name', ''))[:name_w]:<{name_w}} "
                             f"{('–' if n is None else str(n)):>10} {(r.get('group') or '–'):>5} "
                             f"{r.get('num_gt', 0):>6} {_pts(r.get('AP'))} {_pts(r.get('AP50'))}")
        return "\n".join(lines)
