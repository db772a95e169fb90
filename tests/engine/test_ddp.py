"""2 gloo processes x batch 2 reach the weights of 1 process x batch 4 (GroupNorm, no random
flips), and both ranks hold identical EFL statistics."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from focaldet.config import load_config
from focaldet.engine import train

pytestmark = [pytest.mark.slow, pytest.mark.dist]


# repeat-factor sampling: both sides draw the same over-sampled epoch and shard it alike
@pytest.mark.parametrize("sampler", [{}, {"sampler": "repeat_factor", "repeat_threshold": 0.5}],
                         ids=["uniform", "repeat_factor"])
def test_two_ranks_equal_one_process_with_double_batch(write_tiny_config, tmp_path, sampler):
    common = {"train": {"max_iters": 3, "warmup_iters": 0, "milestones": [], "ckpt_interval": 3},
              "runtime": {"deterministic": False}}
    single = write_tiny_config("single.yaml", work_dir=tmp_path / "single", **common,
                               data={"batch_size": 4, "flip_prob": 0.0, **sampler})
    train(load_config(single), stream=open(os.devnull, "w"))

    ddp = write_tiny_config("ddp.yaml", work_dir=tmp_path / "ddp", **common,
                            data={"batch_size": 2, "flip_prob": 0.0, **sampler})
    env = dict(os.environ, OMP_NUM_THREADS="1", FOCALDET_COMPILE="0")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port",
                           str(29500 + os.getpid() % 1000), "-m", "focaldet", "train", str(ddp), "--no-progress"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    result = json.loads((tmp_path / "ddp" / "result.json").read_text())
    assert result["status"] == "finished" and result["iterations"] == 3
    assert result["loss_state_rank_diff"] == 0.0  # EFL statistics identical on both ranks
    a = torch.load(tmp_path / "single" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "ddp" / "checkpoints" / "last.pt", weights_only=True)
    assert a["optimizer"]["param_groups"][0]["lr"] == b["optimizer"]["param_groups"][0]["lr"]
    for key, va in a["model"].items():
        vb = b["model"][key]
        if va.is_floating_point():
            torch.testing.assert_close(vb, va, rtol=1e-4, atol=1e-6, msg=lambda m: f"{key}: {m}")
        else:
            assert torch.equal(va, vb), key
    # three real updates happened on both sides, so the comparison is not trivially true
    assert any(s["momentum_buffer"].abs().sum() > 0 for s in b["optimizer"]["state"].values())
    assert int(b["model"]["cls_loss.grad_stats.num_updates"]) == 3
    torch.testing.assert_close(b["model"]["cls_loss.grad_stats.pos_grad"], a["model"]["cls_loss.grad_stats.pos_grad"],
                               rtol=1e-4, atol=1e-6)
