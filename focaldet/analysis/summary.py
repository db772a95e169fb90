"""Turn the runs of a comparison into per-arm statistics and paired differences.

Numbers stay in the evaluator's units ([0, 1]); the report multiplies by 100 for display."""
from __future__ import annotations

import math
from typing import Sequence

from focaldet.analysis.arms import Arm
from focaldet.analysis.runs import METRICS, RunRecord
from focaldet.analysis.stats import paired_difference, summarize


def summarize_runs(records: Sequence[RunRecord], arms: Sequence[Arm], baseline: str,
                   level: float = 0.95) -> dict:
    """Returns ``{"baseline", "level", "metrics", "arms": [...], "runs": [...]}`` where each arm
    has ``stats[metric]`` (``Summary.to_dict()`` over its finished seeds), ``diff[metric]`` (paired
    difference to the baseline, absent for the baseline itself), and counts of finished /
    diverged / missing runs."""
    by_arm: dict[str, dict[int, RunRecord]] = {a.name: {} for a in arms}
    for r in records:
        by_arm.setdefault(r.arm, {})[r.seed] = r

    def values(arm: str, metric: str) -> dict[int, float]:
        return {s: r.metrics.get(metric, math.nan) for s, r in by_arm[arm].items() if r.status == "finished"}

    out_arms = []
    for arm in arms:
        runs = by_arm[arm.name]
        entry = {
            **arm.to_dict(),
            "finished": sum(r.status == "finished" for r in runs.values()),
            "diverged": sum(r.status == "diverged" for r in runs.values()),
            "missing": sum(r.status == "missing" for r in runs.values()),
            "stats": {m: summarize(list(values(arm.name, m).values()), level).to_dict() for m in METRICS},
        }
        if arm.name != baseline and baseline in by_arm:
            entry["diff"] = {m: paired_difference(values(arm.name, m), values(baseline, m), level).to_dict()
                             for m in METRICS}
        out_arms.append(entry)
    run_rows = [{"arm": r.arm, "seed": r.seed, "dir": str(r.dir), "status": r.status,
                 "iterations": r.iterations, "diverged_at": r.diverged_at, "message": r.message,
                 "metrics": {m: r.metrics.get(m) for m in METRICS} if r.status == "finished" else {}}
                for r in records]
    return {"baseline": baseline, "level": level, "metrics": list(METRICS), "arms": out_arms, "runs": run_rows}
