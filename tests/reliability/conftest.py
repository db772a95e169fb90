"""The tiniest training config (the engine tests' ResNet-18/GN, 32-channel FPN, one-conv head,
128-px images) with batch 2 and a checkpoint every iteration, so checkpoint writes are frequent."""
from __future__ import annotations

import pytest
import yaml


def tiny_config_dict(bench, work_dir, **sections) -> dict:
    cfg = {
        "model": {"backbone": "resnet18", "norm": "gn", "frozen_stages": 0, "fpn_channels": 32,
                  "head_depth": 1, "head_width": 32},
        "loss": {"name": "equalized_focal"},
        "data": {"train_ann": str(bench.train_ann), "train_images": str(bench.train_images),
                 "val_ann": str(bench.val_ann), "val_images": str(bench.val_images),
                 "train_sizes": [128], "test_size": 128, "max_size": 192, "batch_size": 2, "num_workers": 0},
        "train": {"max_iters": 10, "base_lr": 0.01, "base_batch": 16, "warmup_iters": 2, "milestones": [7],
                  "eval_interval": 0, "ckpt_interval": 1, "keep_last": 2},
        "runtime": {"work_dir": str(work_dir), "log_interval": 1, "threads": 1, "deterministic": True},
    }
    for sec, values in sections.items():
        cfg[sec].update(values)
    return cfg


@pytest.fixture
def write_tiny_config(tiny_benchmark, tmp_path):
    def write(name="tiny.yaml", work_dir=None, **sections):
        path = tmp_path / name
        path.write_text(yaml.safe_dump(tiny_config_dict(tiny_benchmark, work_dir or tmp_path / "run", **sections)))
        return path
    return write


@pytest.fixture(autouse=True)
def _eager_losses(monkeypatch):
    # torch.compile of the loss kernels costs tens of seconds per process on a 2-core machine.
    monkeypatch.setenv("FOCALDET_COMPILE", "0")
