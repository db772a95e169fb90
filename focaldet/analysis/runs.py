"""What a run of a comparison left on disk: ``result.json`` and ``eval/final.json``."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from focaldet.analysis.arms import CompareError

# The metrics a comparison reports, as the evaluator names them (values in [0, 1]).
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")


@dataclass
class RunRecord:
    """What a finished (or missing) run left behind. ``metrics`` in [0, 1] as the evaluator
    reports them; ``per_class`` rows ``{cat_id, name, image_count, group, AP, AP50}``."""

    arm: str
    seed: int
    dir: Path
    status: str  # finished | diverged | missing
    metrics: dict = field(default_factory=dict)
    per_class: list = field(default_factory=list)
    iterations: Optional[int] = None
    diverged_at: Optional[int] = None
    message: str = ""
    precision: Optional[str] = None  # "float32", "bfloat16", … (None: written before it was recorded)
    device: Optional[str] = None     # e.g. "cpu: AMD EPYC, 2 threads"
    world_size: int = 1


def read_run(spec_dir: Path, arm: str, seed: int) -> RunRecord:
    """Read ``result.json`` and ``eval/final.json`` of one run directory."""
    result_path = spec_dir / "result.json"
    if not result_path.is_file():
        return RunRecord(arm, seed, spec_dir, "missing")
    try:
        result = json.loads(result_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CompareError(f"{result_path}: not valid JSON ({e})") from None
    status = result.get("status", "finished")
    metrics = {k: _as_float(v) for k, v in (result.get("metrics") or {}).items() if _is_number(v)}
    per_class = []
    final = spec_dir / "eval" / "final.json"
    if final.is_file():
        try:
            fin = json.loads(final.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise CompareError(f"{final}: not valid JSON ({e})") from None
        per_class = fin.get("per_class") or []
        if not metrics:
            metrics = {k: _as_float(v) for k, v in (fin.get("stats") or {}).items() if _is_number(v)}
    return RunRecord(arm, seed, spec_dir, "diverged" if status == "diverged" else "finished",
                     metrics=metrics if status != "diverged" else {}, per_class=per_class,
                     iterations=result.get("iterations"), diverged_at=result.get("diverged_at"),
                     message=str(result.get("message") or ""), precision=result.get("precision"),
                     device=result.get("device"), world_size=int(result.get("world_size") or 1))


def machine_lines(records) -> list[str]:
    """One line per (precision, device) the runs recorded, e.g. ``"3 runs: float32 on cpu: AMD
    EPYC, 2 threads"`` — the conditions under which the numbers reproduce to the digit."""
    groups: dict = {}
    for r in records:
        if r.status == "missing":
            continue
        if r.precision is None:
            key = "not recorded (written by an older focaldet)"
        else:
            ranks = f" × {r.world_size} processes" if r.world_size > 1 else ""
            key = f"{r.precision} on {r.device}{ranks}"
        groups[key] = groups.get(key, 0) + 1
    return [f"{n} run{'s' if n != 1 else ''}: {key}" for key, n in groups.items()]


def _is_number(v) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def _as_float(v) -> float:
    return float("nan") if v is None else float(v)
