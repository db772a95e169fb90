"""Faults: SIGKILL at many points (inside checkpoint writes included), corrupted checkpoints, a
full disk. An interrupted ``compare`` resuming without redoing finished runs is tested in
tests/analysis/test_compare.py::test_interrupted_compare_resumes_without_redoing_finished_runs."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import focaldet.utils.io as fio
from focaldet.engine.checkpoint import CheckpointManager, load_checkpoint, save_checkpoint
from focaldet.errors import CheckpointError

DRIVER = Path(__file__).with_name("_kill_driver.py")


def _kill_plan(seed: int) -> list[dict]:
    """10 kill points in a seeded order: 4 inside the write of a periodic checkpoint, 2 inside the
    write of its checksum sidecar, 2 inside the re-pointing of last.pt (its sidecar), 2 a random
    0-0.3 s after a checkpoint completed (the next iteration or the next write). Each attempt
    advances at most ~2 iterations, so 10 iterations leave room for all 10 kills."""
    rng = random.Random(seed)
    plan = ([{"kind": "write", "file": "iter_*.pt"}] * 4 + [{"kind": "write", "file": "iter_*.pt.sha256"}] * 2
            + [{"kind": "write", "file": "last.pt.sha256"}] * 2 + [{"kind": "after"}] * 2)
    plan = [dict(p) for p in plan]
    rng.shuffle(plan)
    for p in plan:
        if p["kind"] == "after":
            p["delay"] = round(rng.uniform(0.0, 0.3), 3)
    return plan


def _drive(cfg: Path, plan: list, tmp_path: Path, tag: str) -> list[dict]:
    plan_path, report_path = tmp_path / f"{tag}_plan.json", tmp_path / f"{tag}_report.json"
    plan_path.write_text(json.dumps(plan))
    proc = subprocess.run([sys.executable, str(DRIVER), str(cfg), str(plan_path), str(report_path)],
                          capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(report_path.read_text())


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_sigkill_at_ten_points_then_resume_is_bit_exact(write_tiny_config, tmp_path):
    ref_cfg = write_tiny_config("ref.yaml", work_dir=tmp_path / "ref")
    (ref_report,) = _drive(ref_cfg, [], tmp_path, "ref")
    assert ref_report["exit_code"] == 0, ref_report
    ref = torch.load(tmp_path / "ref" / "checkpoints" / "last.pt", weights_only=True)
    assert ref["iter"] == 10

    cfg = write_tiny_config("killed.yaml", work_dir=tmp_path / "killed")
    report = _drive(cfg, _kill_plan(seed=8), tmp_path, "killed")
    *kills, final = report
    assert len(kills) == 10
    for r in kills:  # every planned point was reached and the process died of SIGKILL there
        assert r["killed"] and r["signal"] == signal.SIGKILL, r
    assert final["exit_code"] == 0 and final["error"] is None, final
    # the kills landed at different stages of the run, not all before the first checkpoint
    assert len({r["newest_checkpoint_at_kill"] for r in kills}) >= 3, kills

    run = tmp_path / "killed"
    got = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert got["iter"] == 10
    assert ref["model"].keys() == got["model"].keys()
    for key, value in ref["model"].items():
        assert torch.equal(value, got["model"][key]), key
    # EFL statistics saw every iteration exactly once, not the replayed ones twice
    assert int(got["model"]["cls_loss.grad_stats.num_updates"]) == 10
    for a, b in zip(ref["optimizer"]["state"].values(), got["optimizer"]["state"].values()):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "finished" and result["iterations"] == 10
    # metrics read like one run: every iteration logged once, in order
    iters = [json.loads(ln)["iter"] for ln in (run / "metrics.jsonl").read_text().splitlines()
             if json.loads(ln)["type"] == "train"]
    assert iters == list(range(1, 11))
    # every checkpoint left in the folder passes its checksum and loads
    for p in (run / "checkpoints").glob("*.pt"):
        load_checkpoint(p)


# ------------------------------------------------------------------------------------------
# Corrupted checkpoints: detected, the previous good one used, with a warning
# ------------------------------------------------------------------------------------------
def _state(i: int) -> dict:
    g = torch.Generator().manual_seed(i)
    return {"model": {"w": torch.randn(64, 64, generator=g)}, "iter": i, "config": {"model": {}},
            "class_names": ["a", "b"]}


def _three_checkpoints(tmp_path) -> CheckpointManager:
    mgr = CheckpointManager(tmp_path / "checkpoints", keep_last=3)
    for i in (1, 2, 3):
        mgr.save(_state(i), i)
    return mgr


def _corrupt(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncated":
        path.write_bytes(bytes(data[: len(data) // 3]))
    elif how == "bitflip":
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    elif how == "zeroed":
        path.write_bytes(b"\0" * len(data))


@pytest.mark.parametrize("how", ["truncated", "bitflip", "zeroed"])
def test_corrupt_latest_checkpoint_falls_back_to_previous_with_warning(tmp_path, how):
    mgr = _three_checkpoints(tmp_path)
    # last.pt is a hard link to iter_0000003.pt: corrupting one corrupts both, as a bad disk would
    _corrupt(mgr.dir / "iter_0000003.pt", how)
    with pytest.warns(RuntimeWarning, match=r"skipping bad checkpoint: .*(last|iter_0000003)\.pt: checksum mismatch"):
        path, ckpt = mgr.latest_good()
    assert path.name == "iter_0000002.pt" and ckpt["iter"] == 2
    assert torch.equal(ckpt["model"]["w"], _state(2)["model"]["w"])


def test_truncated_checkpoint_without_sidecar_is_detected_by_the_load_check(tmp_path):
    mgr = _three_checkpoints(tmp_path)
    _corrupt(mgr.dir / "iter_0000003.pt", "truncated")  # last.pt is the same file (hard link)
    for p in ("last.pt.sha256", "iter_0000003.pt.sha256"):
        (mgr.dir / p).unlink()
    with pytest.warns(RuntimeWarning, match="not a readable checkpoint"):
        path, ckpt = mgr.latest_good()
    assert path.name == "iter_0000002.pt" and ckpt["iter"] == 2


def test_all_checkpoints_corrupt_is_a_clear_error(tmp_path):
    mgr = _three_checkpoints(tmp_path)
    for p in mgr.dir.glob("iter_*.pt"):
        _corrupt(p, "truncated")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(CheckpointError, match="no loadable checkpoint"):
            mgr.latest_good()


# ------------------------------------------------------------------------------------------
# A full disk: the write fails with ENOSPC, the previous files stay intact, no debris
# ------------------------------------------------------------------------------------------
class _FullDisk:
    """A file wrapper whose write() stores some bytes, then fails like a full disk."""

    def __init__(self, fh):
        self.fh = fh

    def write(self, data):
        self.fh.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self.fh, name)


@pytest.fixture
def full_disk(monkeypatch):
    original = fio.atomic_write

    def atomic_write(path, write, mode="wb"):
        return original(path, lambda fh: write(_FullDisk(fh)), mode)

    def enable():
        monkeypatch.setattr(fio, "atomic_write", atomic_write)
    return enable


def _snapshot(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


def test_full_disk_during_checkpoint_write_keeps_previous_checkpoints(tmp_path, full_disk):
    mgr = _three_checkpoints(tmp_path)
    before = _snapshot(mgr.dir)
    full_disk()
    with pytest.raises(OSError) as e:
        mgr.save(_state(4), 4)
    assert e.value.errno == errno.ENOSPC
    assert _snapshot(mgr.dir) == before  # nothing changed, no temporary file left behind
    path, ckpt = mgr.latest_good()
    assert ckpt["iter"] == 3 and path.name == "iter_0000003.pt"


@pytest.mark.parametrize("writer", ["json", "text", "bytes"])
def test_full_disk_during_report_write_keeps_previous_report(tmp_path, full_disk, writer):
    report = tmp_path / "result.json"
    fio.atomic_write_json(report, {"status": "finished", "AP": 0.5})
    before = report.read_bytes()
    full_disk()
    write = {"json": lambda: fio.atomic_write_json(report, {"status": "finished", "AP": 0.9}),
             "text": lambda: fio.atomic_write_text(report, "x" * 10000),
             "bytes": lambda: fio.atomic_write_bytes(report, b"y" * 10000)}[writer]
    with pytest.raises(OSError, match="No space left"):
        write()
    assert report.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_full_disk_during_checkpoint_write_in_training_loses_nothing(write_tiny_config, tmp_path, monkeypatch):
    """Through the real training loop: the disk fills at the checkpoint of iteration 3; training
    stops with the OSError, the checkpoints of iterations 1-2 are intact and a resume finishes."""
    from focaldet.config import load_config
    from focaldet.engine.trainer import train

    cfg = write_tiny_config(train={"max_iters": 4, "ckpt_interval": 1, "keep_last": 3})
    original = fio.atomic_write

    def atomic_write(path, write, mode="wb"):
        if Path(path).name == "iter_0000003.pt":
            return original(path, lambda fh: write(_FullDisk(fh)), mode)
        return original(path, write, mode)

    monkeypatch.setattr(fio, "atomic_write", atomic_write)
    devnull = open(os.devnull, "w")
    with pytest.raises(OSError, match="No space left"):
        train(load_config(cfg), stream=devnull, use_tqdm=False)
    ckpt_dir = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in ckpt_dir.iterdir()) == [
        "iter_0000001.pt", "iter_0000001.pt.sha256", "iter_0000002.pt", "iter_0000002.pt.sha256",
        "last.pt", "last.pt.sha256"]
    assert load_checkpoint(ckpt_dir / "last.pt")["iter"] == 2
    monkeypatch.setattr(fio, "atomic_write", original)  # disk freed
    result = train(load_config(cfg, ["runtime.resume=auto"]), stream=devnull, use_tqdm=False)
    assert result["status"] == "finished" and result["iterations"] == 4
    assert result["resumed_from"].endswith("iter_0000002.pt")
