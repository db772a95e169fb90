"""Issue 14, data loss: focaldet never destroys a user's files.

predict never writes over an input (or a file it did not write), two inputs never share an output
file; ``data make --force`` replaces only a benchmark it made; a run directory belongs to one run
(lock, refusal of a previous run's directory without --resume / --overwrite)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from focaldet.cli.main import main
from focaldet.config import load_config
from focaldet.engine.trainer import train

from .test_corpus import _one_line_error, _predict, _snapshot, good_checkpoint, photos  # noqa: F401 — fixtures


# ------------------------------------------------------------------------------------------
# 1. predict
# ------------------------------------------------------------------------------------------
def test_predict_out_equal_to_the_input_folder_is_refused(good_checkpoint, photos, capsys):  # noqa: F811
    before = _snapshot(photos)
    _one_line_error(capsys, _predict(good_checkpoint[0], [photos], photos), "is the input folder")
    assert _snapshot(photos) == before


def test_predict_output_that_would_replace_a_named_input_is_refused(good_checkpoint, photos, tmp_path, capsys):  # noqa: F811
    jpg = sorted(photos.glob("*.jpg"))[0]
    before = _snapshot(photos)
    # the input is named as a file, --out is its folder: <stem>.jpg would be the input itself
    _one_line_error(capsys, _predict(good_checkpoint[0], [jpg], photos), "would replace the input", jpg.name)
    assert _snapshot(photos) == before


def test_predict_never_overwrites_a_file_it_did_not_write(good_checkpoint, photos, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "out"
    out.mkdir()
    stem = sorted(photos.iterdir())[0].stem
    (out / f"{stem}.jpg").write_bytes(b"the user's own file")
    (out / "results.json").write_text("[]  # mine\n")
    before = _snapshot(out)
    _one_line_error(capsys, _predict(good_checkpoint[0], [photos], out), "was not written by focaldet predict")
    assert _snapshot(out) == before


def test_predict_again_into_its_own_output_folder_replaces_its_own_files(good_checkpoint, photos, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    assert _predict(good_checkpoint[0], [photos], out) == 0
    assert _predict(good_checkpoint[0], [photos], out) == 0  # a re-run is not refused


def test_colliding_names_get_distinct_outputs_and_images_json_maps_them(good_checkpoint, photos, tmp_path):  # noqa: F811
    src = sorted(photos.glob("*.jpg"))[0].read_bytes()
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    from PIL import Image

    Image.open(sorted(photos.glob("*.jpg"))[0]).save(a / "x.png")
    for name in ("x.jpg", "x y.jpg", "x_y.jpg", "x_2.jpg", "X.jpg", "results.jpg"):
        (a / name).write_bytes(src)
    (b / "x.jpg").write_bytes(src)
    out = tmp_path / "out"
    assert _predict(good_checkpoint[0], [a, b], out) == 0
    records = json.loads((out / "images.json").read_text())["images"]
    inputs = sorted(str(p) for p in a.iterdir()) + [str(b / "x.jpg")]
    assert sorted(r["file_name"] for r in records) == sorted(inputs)
    outputs = [r["output"] for r in records]
    assert None not in outputs
    assert len({o.lower() for o in outputs}) == len(inputs)  # distinct, also on a case-insensitive disk
    assert "results.json" not in outputs and "images.json" not in outputs
    assert sorted(p.name for p in out.iterdir()) == sorted(outputs + ["images.json", "results.json"])


# ------------------------------------------------------------------------------------------
# 2. data make --force
# ------------------------------------------------------------------------------------------
def _make(out, *extra) -> int:
    return main(["data", "make", "lt-digits", "--out", str(out), "--train", "2", "--val", "1", "--size", "64",
                 "--quiet", *extra])


@pytest.mark.parametrize("layout", ["thesis", "subfolder", "fake-meta"])
def test_data_make_force_refuses_a_folder_it_did_not_make(tmp_path, capsys, layout):
    out = tmp_path / "mine"
    out.mkdir()
    if layout == "thesis":
        (out / "thesis.tex").write_text("\\chapter{Four years of work}\n")
    elif layout == "subfolder":
        (out / "chapters").mkdir()
        (out / "chapters" / "one.tex").write_text("x\n")
    else:  # a meta.json of ours, but beside the user's files
        (out / "meta.json").write_text(json.dumps({"kind": "lt-digits", "version": 1}))
        (out / "notes.txt").write_text("mine\n")
    before = _snapshot(out)
    _one_line_error(capsys, _make(out, "--force"), str(out), "--force only replaces those")
    assert _snapshot(out) == before


def test_data_make_force_replaces_a_benchmark_it_made(tmp_path, capsys):
    out = tmp_path / "bench"
    assert _make(out) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert _make(out, "--seed", "1", "--force") == 0
    assert json.loads((out / "meta.json").read_text())["seed"] == 1 != meta["seed"]


def test_data_make_out_that_is_a_file_is_refused(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("mine\n")
    _one_line_error(capsys, _make(f, "--force"), "exists and is not a folder")
    assert f.read_text() == "mine\n"


# ------------------------------------------------------------------------------------------
# 3. A run directory belongs to one run
# ------------------------------------------------------------------------------------------
def _train_cli(cfg, *extra) -> int:
    return main(["train", str(cfg), "--no-progress", *extra])


@pytest.fixture
def finished_run(write_tiny_config, tmp_path):
    cfg = write_tiny_config("run.yaml", work_dir=tmp_path / "run", train={"max_iters": 2})
    assert _train_cli(cfg) == 0
    return cfg, tmp_path / "run"


def test_second_train_into_a_finished_run_is_refused(finished_run, capsys):
    cfg, run = finished_run
    before = _snapshot(run)
    capsys.readouterr()
    _one_line_error(capsys, _train_cli(cfg, "train.base_lr=0.02"), str(run), "not empty")
    assert _snapshot(run) == before


def test_overwrite_starts_over_and_leaves_no_checkpoint_of_the_old_run(finished_run, capsys):
    cfg, run = finished_run
    (run / "checkpoints" / "iter_0000099.pt").write_bytes(b"old run")  # a later-numbered old file
    (run / "notes.txt").write_text("the user's own notes\n")
    assert _train_cli(cfg, "--overwrite", "train.max_iters=1") == 0
    assert sorted(p.name for p in (run / "checkpoints").glob("iter_*.pt")) == ["iter_0000001.pt"]
    assert (run / "notes.txt").read_text() == "the user's own notes\n"  # not a run file: kept
    iters = [json.loads(ln)["iter"] for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(iters) == 1  # no line of the old run


def test_resume_and_overwrite_together_are_refused(finished_run, capsys):
    cfg, _ = finished_run
    _one_line_error(capsys, _train_cli(cfg, "--resume", "--overwrite"), "--resume and --overwrite")


def _write_lock(run: Path, pid: int, host=None) -> None:
    import socket

    run.mkdir(parents=True, exist_ok=True)
    (run / ".lock").write_text(json.dumps({"pid": pid, "host": host or socket.gethostname()}))


def test_a_run_directory_in_use_by_a_live_process_is_refused(write_tiny_config, tmp_path, capsys):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        cfg = write_tiny_config(work_dir=tmp_path / "run", train={"max_iters": 1})
        _write_lock(tmp_path / "run", sleeper.pid)
        _one_line_error(capsys, _train_cli(cfg), "in use by another focaldet train", str(sleeper.pid))
        _one_line_error(capsys, _train_cli(cfg, "--resume"), "in use by another focaldet train")
        assert not (tmp_path / "run" / "checkpoints").exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_stale_lock_of_a_dead_process_is_taken_over(write_tiny_config, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # reaped: its PID names no process now
    cfg = write_tiny_config(work_dir=tmp_path / "run", train={"max_iters": 1})
    _write_lock(tmp_path / "run", dead.pid)
    assert _train_cli(cfg, "--resume") == 0  # a killed run left its lock behind: resume works
    assert not (tmp_path / "run" / ".lock").exists()  # released on exit


def test_two_concurrent_trains_on_one_work_dir(write_tiny_config, tmp_path, capsys):
    """A real second process: while the first trains, the second is refused and the first
    finishes undisturbed."""
    cfg = write_tiny_config(work_dir=tmp_path / "run", train={"max_iters": 6})
    env = dict(os.environ, OMP_NUM_THREADS="1", FOCALDET_COMPILE="0")
    first = subprocess.Popen([sys.executable, "-m", "focaldet", "train", str(cfg), "--no-progress"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        lock = tmp_path / "run" / ".lock"
        for _ in range(6000):
            if lock.exists() or first.poll() is not None:
                break
            import time
            time.sleep(0.01)
        assert lock.exists(), first.communicate()[1][-2000:]
        _one_line_error(capsys, _train_cli(cfg, "--resume"), "in use by another focaldet train", str(first.pid))
    finally:
        _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-2000:]
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "finished" and result["iterations"] == 6
    iters = [json.loads(ln)["iter"] for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
             if json.loads(ln)["type"] == "train"]
    assert iters == sorted(set(iters))  # one run's lines, not two interleaved


@pytest.mark.parametrize("case", ["file", "under-a-file"])
def test_work_dir_that_cannot_be_a_folder(write_tiny_config, tmp_path, capsys, case):
    f = tmp_path / "afile"
    f.write_text("mine\n")
    work = f if case == "file" else f / "run"
    cfg = write_tiny_config(work_dir=work, train={"max_iters": 1})
    _one_line_error(capsys, _train_cli(cfg), "runtime.work_dir", str(work))
    assert f.read_text() == "mine\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_work_dir(write_tiny_config, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        cfg = write_tiny_config(work_dir=ro / "run", train={"max_iters": 1})
        _one_line_error(capsys, _train_cli(cfg), "runtime.work_dir")
    finally:
        ro.chmod(0o700)


def test_train_api_refuses_a_previous_run_too(finished_run):
    from focaldet.engine.run_dir import RunDirError

    cfg, run = finished_run
    with pytest.raises(RunDirError, match="not empty"):
        train(load_config(cfg), stream=open(os.devnull, "w"))
    assert train(load_config(cfg, ["runtime.resume=auto"]), stream=open(os.devnull, "w"))["status"] == "finished"
