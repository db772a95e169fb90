"""``train.optimizer``: the choice is validated by name, and ``adamw`` really trains with AdamW —
the checkpointed optimizer state holds Adam's moment buffers, related after one step as the AdamW
formulas (default betas) say; the CPU presets state their optimizer explicitly."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml

from focaldet.config import ConfigError, load_config
from focaldet.engine import train

PRESETS = Path(__file__).resolve().parents[2] / "focaldet" / "configs"


def test_unknown_optimizer_names_the_key():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["train.optimizer=adam"])
    assert "train.optimizer" in str(e.value) and "adam" in str(e.value)


@pytest.mark.parametrize("name", ["lt_stamps_cpu.yaml", "lt_digits_cpu.yaml", "lt_stamps_cpu_scratch.yaml"])
def test_cpu_presets_load_with_their_optimizer(name):
    stated = yaml.safe_load((PRESETS / name).read_text())["train"]["optimizer"]  # explicit, not the default
    assert stated == "sgd" and load_config(PRESETS / name).train.optimizer == stated
    assert load_config(PRESETS / name, ["train.optimizer=adamw"]).train.optimizer == "adamw"
    assert len(load_config(PRESETS / name).model.anchors.sizes) == 5


def test_adamw_moments_match_float64_formulas(write_tiny_config, tmp_path):
    lr, wd = 1e-3, 0.05
    path = write_tiny_config(train={"optimizer": "adamw", "base_lr": lr, "base_batch": 4, "max_iters": 1,
                                    "weight_decay": wd, "warmup_iters": 0, "milestones": [1],
                                    "ckpt_interval": 1, "grad_clip": None})
    cfg = load_config(path)
    torch.manual_seed(0)
    train(cfg, stream=open(os.devnull, "w"))
    ckpt = torch.load(Path(cfg.runtime.work_dir) / "checkpoints" / "last.pt", weights_only=True)
    state = ckpt["optimizer"]["state"]
    assert state and all({"exp_avg", "exp_avg_sq", "step"} <= set(s) for s in state.values())
    # After one step Adam's moments are m = (1 - beta1) g and v = (1 - beta2) g^2 with the default
    # betas (0.9, 0.999), so v / m^2 = 0.001 / 0.01 = 0.1 for every parameter (SGD keeps a momentum buffer).
    for s in state.values():
        m, v = s["exp_avg"].double(), s["exp_avg_sq"].double()
        torch.testing.assert_close(v, 0.1 * m * m, rtol=1e-4, atol=1e-30)
    assert ckpt["optimizer"]["param_groups"][0]["weight_decay"] == wd


def test_backbone_lr_mult_scales_only_the_backbones_step(write_tiny_config, tmp_path):
    """One SGD step from the same initialisation and batch with ``train.backbone_lr_mult`` 1, 0.1
    and 0: the backbone's parameters move 0.1 times as far with 0.1 (and not at all with 0, which
    gives their starting point), the FPN's and head's the same in all three."""
    def one_step(mult):
        path = write_tiny_config(train={"base_lr": 0.01, "base_batch": 4, "max_iters": 1, "warmup_iters": 0,
                                        "milestones": [1], "ckpt_interval": 1, "backbone_lr_mult": mult},
                                 name=f"m{mult}.yaml", work_dir=tmp_path / f"m{mult}")
        cfg = load_config(path)
        torch.manual_seed(0)
        train(cfg, stream=open(os.devnull, "w"))
        ckpt = torch.load(tmp_path / f"m{mult}" / "checkpoints" / "last.pt", weights_only=True)
        return ckpt["model"], [g["lr"] for g in ckpt["optimizer"]["param_groups"]]

    (full, lrs1), (tenth, lrs01), (start, lrs0) = one_step(1.0), one_step(0.1), one_step(0.0)
    # (the saved lrs are after the milestone at iteration 1)
    assert len(lrs1) == 1 and lrs01 == [lrs1[0], pytest.approx(0.1 * lrs1[0])] and lrs0 == [lrs1[0], 0.0]
    moved = 0
    for k, p0 in start.items():
        if not p0.is_floating_point():
            continue
        if k.startswith("backbone."):
            step1, step01 = (full[k] - p0).double(), (tenth[k] - p0).double()
            # float32 parameters: each side carries up to one rounding of p (half an ulp each)
            ulp = torch.finfo(torch.float32).eps * p0.double().abs()
            assert ((step01 - 0.1 * step1).abs() <= 1e-4 * step1.abs() + 2 * ulp).all(), k
            moved += int(step1.abs().max() > 0)
        else:  # here ``start`` has taken its full step too
            torch.testing.assert_close(tenth[k], full[k], rtol=0, atol=0)
            torch.testing.assert_close(start[k], full[k], rtol=0, atol=0)
    assert moved > 10
