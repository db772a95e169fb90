"""Kill a training process with SIGKILL after a checkpoint and resume it: the final weights (and
EFL statistics, optimizer state) equal those of an uninterrupted run bit for bit."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from focaldet.config import load_config
from focaldet.engine import train

pytestmark = pytest.mark.slow


def _wait_for(path, proc, timeout=240):
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.time() - t0 < timeout, "no checkpoint appeared"
        time.sleep(0.05)


def test_sigkill_then_resume_is_bit_exact(write_tiny_config, tmp_path):
    ref_cfg = write_tiny_config("ref.yaml", work_dir=tmp_path / "ref")
    train(load_config(ref_cfg), stream=open(os.devnull, "w"))
    ref = torch.load(tmp_path / "ref" / "checkpoints" / "last.pt", weights_only=True)
    assert ref["iter"] == 8

    cfg = write_tiny_config("killed.yaml", work_dir=tmp_path / "killed")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "focaldet", "train", str(cfg), "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    ckpt_dir = tmp_path / "killed" / "checkpoints"
    _wait_for(ckpt_dir / "iter_0000002.pt.sha256", proc)
    time.sleep(random.uniform(0.0, 1.5))  # somewhere in iterations 3..4, possibly mid checkpoint write
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    interrupted = torch.load(ckpt_dir / "last.pt", weights_only=True)["iter"]
    assert interrupted < 8

    result = train(load_config(cfg, ["runtime.resume=auto"]), stream=open(os.devnull, "w"))
    assert result["status"] == "finished" and result["iterations"] == 8
    assert result["resumed_from"] is not None
    got = torch.load(ckpt_dir / "last.pt", weights_only=True)
    for key, value in ref["model"].items():
        assert torch.equal(value, got["model"][key]), key
    # EFL statistics are part of the model state; they saw every iteration exactly once
    assert int(got["model"]["cls_loss.grad_stats.num_updates"]) == 8
    for a, b in zip(ref["optimizer"]["state"].values(), got["optimizer"]["state"].values()):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])
    # the resumed run's metrics read like one run: every logged iteration exactly once
    iters = [json.loads(ln)["iter"] for ln in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
             if json.loads(ln)["type"] == "train"]
    assert iters == [2, 4, 6, 8]
