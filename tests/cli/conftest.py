from __future__ import annotations

import pytest
import yaml


@pytest.fixture(autouse=True)
def _eager_losses(monkeypatch):
    # torch.compile of the loss kernels costs tens of seconds per process on 2 cores; not under test here.
    monkeypatch.setenv("FOCALDET_COMPILE", "0")


@pytest.fixture
def tiny_config(tiny_benchmark, tmp_path):
    """A 4-iteration ResNet-18/GN config on the tiny benchmark, as a YAML file."""
    cfg = {
        "model": {"backbone": "resnet18", "norm": "gn", "frozen_stages": 0, "fpn_channels": 32,
                  "head_depth": 1, "head_width": 32},
        "loss": {"name": "focal", "gamma": 2.0, "alpha": 0.25},
        "data": {"train_ann": str(tiny_benchmark.train_ann), "train_images": str(tiny_benchmark.train_images),
                 "val_ann": str(tiny_benchmark.val_ann), "val_images": str(tiny_benchmark.val_images),
                 "train_sizes": [128], "test_size": 128, "max_size": 192, "batch_size": 4, "num_workers": 0},
        "train": {"max_iters": 4, "warmup_iters": 2, "milestones": [3], "eval_interval": 2, "ckpt_interval": 2},
        "runtime": {"work_dir": str(tmp_path / "run"), "log_interval": 1, "threads": 1},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path
