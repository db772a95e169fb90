"""The report's verdict sentence, the learning curve read from metrics.jsonl, the per-group
medians of G⁺/G⁻, and strict JSON (no bare NaN) in what the report writes."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from focaldet.analysis.plots import group_medians, learning_curve
from focaldet.analysis.report import verdicts
from focaldet.analysis.runs import RunRecord
from focaldet.analysis.stats import paired_difference
from focaldet.utils.io import atomic_write_json


def _summary(diffs: dict) -> dict:
    arms = [{"name": "focal", "label": "focal"}]
    for name, (a, b) in diffs.items():
        d = paired_difference(dict(enumerate(a)), dict(enumerate(b)), 0.95).to_dict()
        arms.append({"name": name, "label": name, "diff": {"AP": d}})
    return {"baseline": "focal", "level": 0.95, "arms": arms}


def test_verdict_states_the_interval_or_cannot_tell():
    mfl = ([0.010, 0.005, 0.012], [0.032, 0.030, 0.034])  # clearly below focal
    efl = ([0.033, 0.029, 0.035], [0.032, 0.030, 0.034])  # indistinguishable
    said = verdicts(_summary({"modified_focal": mfl, "equalized_focal": efl}))
    d = np.array(mfl[0]) - np.array(mfl[1])
    half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / math.sqrt(3)  # independent t interval
    assert said[0] == (f"modified_focal is {100 * abs(d.mean()):.1f} ± {100 * half:.1f} AP points below focal "
                       f"(95 % CI of the paired difference, 3 seeds).")
    assert said[1].startswith("equalized_focal and focal cannot be told apart at 3 seeds")


def test_verdict_with_one_seed_says_no_interval():
    said = verdicts(_summary({"ghm": ([0.02], [0.03])}))
    assert "cannot be told apart yet" in said[0] and "-1.0 AP" in said[0]


def test_learning_curve_sums_logged_iteration_times(tmp_path):
    lines = [{"type": "train", "iter": 10, "time": 0.5}, {"type": "train", "iter": 20, "time": 0.3},
             {"type": "eval", "iter": 20, "AP": 0.1}, {"type": "train", "iter": 30, "time": 0.2},
             {"type": "eval", "iter": 30, "AP": 0.2}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(m) for m in lines))
    minutes, ap = learning_curve(RunRecord("focal", 0, tmp_path, "finished"))
    # 10 iterations at 0.5 s, 10 at 0.3 s, 10 at 0.2 s: 8 s then 10 s of training
    assert np.allclose(minutes * 60, [8.0, 10.0]) and np.allclose(ap, [0.1, 0.2])


def test_group_medians_take_each_groups_classes():
    values = np.array([[0.2, 0.4, 1.0, 1.2, 3.0], [0.1, 0.3, 0.9, 1.1, 2.0]])
    groups = np.array(["r", "r", "c", "c", "f"])
    med = group_medians(values, groups)
    assert np.allclose(med["r"], [0.3, 0.2]) and np.allclose(med["c"], [1.1, 1.0]) and np.allclose(med["f"], [3, 2])
    assert set(group_medians(values, None)) == {"all"}


def test_json_files_are_strict(tmp_path):
    path = atomic_write_json(tmp_path / "s.json", {"AP": float("nan"), "x": [1.5, float("inf")], "k": {1: 2}})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict constant {c}")) == \
        {"AP": None, "x": [1.5, None], "k": {"1": 2}}


def test_learning_curve_follows_the_val_subset_when_the_run_had_one(tmp_path):
    """With train.eval_images the final iteration has two records: the subset (a curve point) and
    the whole val set (the result, on other images: not a point of the same curve)."""
    lines = [{"type": "train", "iter": 10, "time": 0.5}, {"type": "eval", "iter": 10, "AP": 0.1, "images": 3, "subset": True},
             {"type": "train", "iter": 20, "time": 0.5}, {"type": "eval", "iter": 20, "AP": 0.2, "images": 3, "subset": True},
             {"type": "eval", "iter": 20, "AP": 0.9, "images": 8, "subset": False}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(m) for m in lines))
    minutes, ap = learning_curve(RunRecord("focal", 0, tmp_path, "finished"))
    assert np.allclose(minutes * 60, [5.0, 10.0]) and np.allclose(ap, [0.1, 0.2])
