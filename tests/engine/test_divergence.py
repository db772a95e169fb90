"""An exploding loss (modified_focal without its cap, a huge lr) stops training with one clear
message and leaves the last good checkpoint intact."""
from __future__ import annotations

import json

import pytest
import torch

from focaldet.cli.main import main
from focaldet.engine.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow


def test_exploding_loss_stops_with_message_and_intact_checkpoint(write_tiny_config, tmp_path, capsys):
    cfg = write_tiny_config(loss={"name": "modified_focal", "gamma": 2.0, "alpha": 0.25},
                            train={"base_lr": 1000.0, "warmup_iters": 0, "ckpt_interval": 1, "max_iters": 6},
                            runtime={"deterministic": False})
    code = main(["train", str(cfg), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    line = next(ln for ln in err.splitlines() if ln.startswith("focaldet train: error:"))
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "diverged"
    at = result["diverged_at"]
    assert 2 <= at <= 6
    assert f"training diverged at iteration {at}: non-finite" in line
    for needle in ("loss_cls=", "loss_box=", "lr=", "modified_focal(", "gamma=2.0", "alpha=0.25",
                   "last good checkpoint: "):
        assert needle in line, needle
    assert "hint:" in err
    last_good = line.split("last good checkpoint: ")[1].strip()
    ckpt = load_checkpoint(last_good)
    assert ckpt["iter"] == at - 1
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["iter"] == at - 1


def test_skip_mode_bounds_the_skipped_steps(write_tiny_config, tmp_path):
    from focaldet.config import load_config
    from focaldet.engine import train

    cfg = load_config(write_tiny_config(loss={"name": "modified_focal"},
                                        train={"base_lr": 1000.0, "warmup_iters": 0, "max_iters": 4,
                                               "nonfinite": "skip", "max_nonfinite_skips": 1}))
    result = train(cfg, raise_on_diverge=False, stream=open(tmp_path / "log.txt", "w"))
    assert result["status"] == "diverged"
    assert result["nonfinite_skips"] == 1
    assert "1 step(s) skipped before" in result["message"]
