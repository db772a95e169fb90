"""``train.eval_images``: evaluations during training score the first N val images (the learning
curve), the last one scores those and then the whole val set, which is the run's result. Checked
against ``focaldet eval`` of the final checkpoint on the full val file and on a val file cut to the
same N images here, independently of the trainer's own cut."""
from __future__ import annotations

import json
import math
import os

from focaldet.config import load_config
from focaldet.engine import train
from focaldet.engine.evaluator import evaluate


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all((math.isnan(x) and math.isnan(y)) if isinstance(x, float) and
                                        isinstance(y, float) and math.isnan(x) else x == y
                                        for x, y in ((a[k], b[k]) for k in a))


def test_periodic_evaluations_score_the_first_images_and_the_last_scores_all(write_tiny_config, tiny_benchmark,
                                                                           tmp_path):
    cfg_path = write_tiny_config(work_dir=tmp_path / "run", train={"max_iters": 4, "milestones": [3],
                                                                    "eval_interval": 2, "eval_images": 3})
    result = train(load_config(cfg_path), stream=open(os.devnull, "w"))
    run = tmp_path / "run"
    evals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [e for e in evals if e["type"] == "eval"]
    val = json.loads(open(tiny_benchmark.val_ann).read())
    assert len(val["images"]) == 8
    assert [(e["iter"], e["images"], e["subset"]) for e in evals] == [(2, 3, True), (4, 3, True), (4, 8, False)]

    # the run's result is the whole val set, as focaldet eval scores the final checkpoint
    cfg = load_config(cfg_path)
    full = evaluate(cfg, run / "checkpoints" / "last.pt", results_path=tmp_path / "full.json", progress=False)
    stats = {k: v for k, v in evals[-1].items() if k not in ("type", "iter", "epoch", "images", "subset")}
    assert full.num_images == 8 and _same(stats, {k: (math.nan if v is None else v) for k, v in full.stats.items()})
    final = json.loads((run / "eval" / "final.json").read_text())
    assert final["num_images"] == 8
    assert _same({k: (math.nan if v is None else v) for k, v in result["metrics"].items()},
                 {k: (math.nan if v is None else v) for k, v in full.stats.items()})

    # the subset records: the first 3 image ids and their boxes, cut here from the val file
    keep = sorted(im["id"] for im in val["images"])[:3]
    cut = dict(val, images=[im for im in val["images"] if im["id"] in keep],
               annotations=[a for a in val["annotations"] if a["image_id"] in keep])
    (tmp_path / "val3.json").write_text(json.dumps(cut))
    sub = evaluate(load_config(cfg_path, [f"data.val_ann={tmp_path / 'val3.json'}"]), run / "checkpoints" / "last.pt",
                   results_path=tmp_path / "sub.json", progress=False)
    stats = {k: v for k, v in evals[1].items() if k not in ("type", "iter", "epoch", "images", "subset")}
    assert sub.num_images == 3 and _same(stats, {k: (math.nan if v is None else v) for k, v in sub.stats.items()})


def test_eval_images_not_below_the_val_set_changes_nothing(write_tiny_config, tmp_path):
    cfg_path = write_tiny_config(work_dir=tmp_path / "run", train={"max_iters": 2, "milestones": [1],
                                                                    "eval_interval": 1, "eval_images": 50})
    train(load_config(cfg_path), stream=open(os.devnull, "w"))
    evals = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(e["iter"], e["images"], e["subset"]) for e in evals if e["type"] == "eval"] == [(1, 8, False), (2, 8, False)]
