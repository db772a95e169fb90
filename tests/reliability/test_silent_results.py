"""Issue 14, silent wrong results: non-finite numbers never pass, a resumed run keeps its meaning,
an explicit evaluation set wins over the benchmark, and the odd cases are errors or counted."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import yaml

from focaldet.cli.main import main
from focaldet.config import load_config
from focaldet.engine.checkpoint import load_checkpoint
from focaldet.engine.trainer import train
from focaldet.errors import TrainingDiverged

from .conftest import tiny_config_dict
from .test_corpus import _one_line_error, _predict, _snapshot, good_checkpoint, photos  # noqa: F401 — fixtures


# ------------------------------------------------------------------------------------------
# 7. NaN / inf never pass; a checkpoint with non-finite weights is never called good
# ------------------------------------------------------------------------------------------
NONFINITE = ["train.base_lr=.nan", "train.base_lr=nan", "model.prior_prob=.nan", "train.momentum=.nan",
             "train.milestones=[.nan]", "train.milestones=[.inf]", "model.matching.fg_iou_thresh=.nan",
             "model.matching.bg_iou_thresh=.nan", "model.inference.score_thresh=.inf",
             "model.inference.nms_thresh=nan",
             "train.grad_clip=.nan", "train.warmup_factor=-.inf", "train.weight_decay=.nan",
             "train.lr_gamma=.nan", "data.flip_prob=.nan", "model.anchors.scales=[1,.nan,2]",
             "model.matching.normalizer_momentum=.nan", "model.box_loss.weight=.inf", "loss.gamma_b=.nan",
             "loss.alpha=.inf", "loss.scale=-.inf", "loss.alpha=[0.25,.nan]"]


@pytest.mark.parametrize("override", NONFINITE)
def test_non_finite_numbers_are_refused_at_load_time(write_tiny_config, tmp_path, capsys, override):
    cfg = write_tiny_config(work_dir=tmp_path / "run")
    key = override.split("=")[0]
    line = _one_line_error(capsys, main(["train", str(cfg), override]), key, "not a finite number")
    assert str(cfg) in line
    assert not (tmp_path / "run").exists()


def test_a_checkpoint_with_non_finite_weights_is_never_written_or_called_good(write_tiny_config, tmp_path,
                                                                             monkeypatch):
    """SGD with a finite loss can still step into inf weights; the loss of that step was finite,
    so only a look at the weights catches it before they are saved as 'last good'."""
    import focaldet.engine.trainer as trainer

    real = trainer.train_one_step
    calls = []

    def poisoned(run, batch):
        out = real(run, batch)
        calls.append(1)
        if len(calls) == 2:  # the step of iteration 2 leaves an inf weight behind
            with torch.no_grad():
                p = next(run.net.parameters())  # channels_last weights: index, do not view
                p[(0,) * p.dim()] = float("inf")
        return out
    monkeypatch.setattr(trainer, "train_one_step", poisoned)
    cfg = write_tiny_config(work_dir=tmp_path / "run", train={"max_iters": 4})
    with pytest.raises(TrainingDiverged, match="iteration 2: non-finite weights") as e:
        train(load_config(cfg), stream=open(os.devnull, "w"))
    ckdir = tmp_path / "run" / "checkpoints"
    assert "last good checkpoint: " + str(ckdir / "iter_0000001.pt") in str(e.value)
    assert sorted(p.name for p in ckdir.glob("iter_*.pt")) == ["iter_0000001.pt"]
    last = load_checkpoint(ckdir / "last.pt")
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "diverged" and result["last_checkpoint"].endswith("iter_0000001.pt")


def test_the_divergence_message_is_printed_once(write_tiny_config, tmp_path, capsys):
    cfg = write_tiny_config(work_dir=tmp_path / "run", train={"max_iters": 3, "base_lr": 1e30,
                                                             "warmup_iters": 0})
    code = main(["train", str(cfg), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("training diverged at iteration") == 1, err


# ------------------------------------------------------------------------------------------
# 8. --resume with a changed config
# ------------------------------------------------------------------------------------------
@pytest.fixture
def two_iterations(write_tiny_config, tmp_path):
    cfg = write_tiny_config("run.yaml", work_dir=tmp_path / "run", train={"max_iters": 2})
    train(load_config(cfg), stream=open(os.devnull, "w"))
    return cfg, tmp_path / "run"


@pytest.mark.parametrize("override,key", [
    ("loss.gamma_b=3", "loss.gamma_b: 2.0 -> 3"), ("data.batch_size=4", "data.batch_size: 2 -> 4"),
    ("train.base_lr=0.02", "train.base_lr"), ("train.optimizer=adamw", "train.optimizer"),
    ("runtime.seed=1", "runtime.seed"), ("train.milestones=[1]", "train.milestones"),
    ("train.max_iters=null", "train.max_iters"),  # iterations -> epochs: milestones change meaning
    ("data.sampler=repeat_factor", "data.sampler: 'uniform' -> 'repeat_factor'"),
])
def test_resume_refuses_a_config_that_changes_the_run(two_iterations, capsys, override, key):
    cfg, run = two_iterations
    before = _snapshot(run)
    line = _one_line_error(capsys, main(["train", str(cfg), "--resume", override, "--no-progress"]),
                           "resuming with a config that changes the run", key)
    assert "iter_0000002.pt" in line
    assert _snapshot(run) == before


def test_resume_may_extend_the_schedule_and_logs_the_change(two_iterations, capsys):
    cfg, run = two_iterations
    capsys.readouterr()
    # the CLI's documented form: the override after a bare --resume
    assert main(["train", str(cfg), "--resume", "train.max_iters=3", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "config change at iteration 2: train.max_iters 2 -> 3" in out
    records = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    change = [r for r in records if r["type"] == "config_change"]
    assert change == [{"type": "config_change", "iter": 2, "key": "train.max_iters", "old": 2, "new": 3}]
    assert json.loads((run / "result.json").read_text())["iterations"] == 3
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["max_iters"] == 3


# ------------------------------------------------------------------------------------------
# 9. An explicit evaluation set wins over data.benchmark
# ------------------------------------------------------------------------------------------
def _benchmark_config(tiny_benchmark, tmp_path, **data):
    d = tiny_config_dict(tiny_benchmark, tmp_path / "run")
    for k in ("train_ann", "train_images", "val_ann", "val_images"):
        d["data"].pop(k)
    d["data"].update(benchmark="lt-digits", root=str(tmp_path / "benchmarks"), **data)
    p = tmp_path / "bench.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


def test_eval_with_explicit_val_paths_uses_them_not_the_benchmark(good_checkpoint, tiny_benchmark, tmp_path,  # noqa: F811
                                                                  capsys):
    cfg = _benchmark_config(tiny_benchmark, tmp_path)
    code = main(["eval", str(cfg), f"data.val_ann={tiny_benchmark.val_ann}",
                 f"data.val_images={tiny_benchmark.val_images}", "--weights", str(good_checkpoint[0]),
                 "--results", str(tmp_path / "r_results.json")])
    out = capsys.readouterr().out
    assert code == 0
    assert f"on {tiny_benchmark.val_ann}" in out
    assert not (tmp_path / "benchmarks").exists()  # nothing generated
    ids = {r["image_id"] for r in json.loads((tmp_path / "r_results.json").read_text())}
    gt_ids = {im["id"] for im in json.loads(Path(tiny_benchmark.val_ann).read_text())["images"]}
    assert ids <= gt_ids


def test_half_an_explicit_split_with_a_benchmark_is_an_error(good_checkpoint, tiny_benchmark, tmp_path, capsys):  # noqa: F811
    cfg = _benchmark_config(tiny_benchmark, tmp_path)
    code = main(["eval", str(cfg), f"data.val_ann={tiny_benchmark.val_ann}", "--weights", str(good_checkpoint[0])])
    _one_line_error(capsys, code, "data.val_ann is set but data.val_images is not")
    assert not (tmp_path / "benchmarks").exists()


# ------------------------------------------------------------------------------------------
# 10. Odd cases
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", ["banana", "cuda:x", "gpu", "CPU"])
def test_an_unknown_device_is_refused(write_tiny_config, tmp_path, capsys, device):
    cfg = write_tiny_config(work_dir=tmp_path / "run")
    _one_line_error(capsys, main(["train", str(cfg), f"runtime.device={device}"]), "runtime.device", device)
    _one_line_error(capsys, main(["train", str(cfg), "--device", device]), "runtime.device")


def test_predict_refuses_an_unknown_device(good_checkpoint, photos, tmp_path, capsys):  # noqa: F811
    code = main(["predict", "--weights", str(good_checkpoint[0]), str(photos), "--out", str(tmp_path / "o"),
                 "--device", "banana"])
    _one_line_error(capsys, code, "runtime.device='banana'")


def test_a_batch_larger_than_the_dataset_scales_the_lr_by_the_images_a_step_sees(write_tiny_config, tiny_benchmark,
                                                                               tmp_path, capsys):
    n = len(json.loads(Path(tiny_benchmark.train_ann).read_text())["images"])
    cfg = write_tiny_config(work_dir=tmp_path / "run", data={"batch_size": 64},
                            train={"max_iters": 1, "warmup_iters": 0, "base_lr": 0.01, "base_batch": 16})
    assert main(["train", str(cfg), "--no-progress"]) == 0
    assert f"lr scaled for the {n} images a step really sees" in capsys.readouterr().out
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert ckpt["optimizer"]["param_groups"][0]["initial_lr"] == pytest.approx(0.01 * n / 16)


def test_predict_counts_fifos_symlink_loops_and_folders_named_like_images(good_checkpoint, photos, tmp_path,  # noqa: F811
                                                                        capsys):
    os.mkfifo(photos / "pipe.jpg")
    os.symlink("loop.jpg", photos / "loop.jpg")  # a symlink to itself
    (photos / "album.jpg").mkdir()
    out = tmp_path / "out"
    assert _predict(good_checkpoint[0], [photos], out) == 0
    printed = capsys.readouterr().out
    assert "skipped 3 non-image entries" in printed
    assert len(json.loads((out / "images.json").read_text())["images"]) == 2


def test_predict_names_a_fifo_given_directly(good_checkpoint, tmp_path, capsys):  # noqa: F811
    os.mkfifo(tmp_path / "pipe.jpg")
    _one_line_error(capsys, _predict(good_checkpoint[0], [tmp_path / "pipe.jpg"], tmp_path / "out"),
                    "pipe.jpg", "not a regular file")
