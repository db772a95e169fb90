"""The tiniest training config on the ``tiny_benchmark`` (ResNet-18 with GroupNorm from scratch, a
32-channel FPN, a one-conv head, 128-px images), shared by the engine, CLI and reliability tests."""
from __future__ import annotations

import yaml


def tiny_config_dict(bench, work_dir, *, batch_size=4, max_iters=8, milestone=6, ckpt_interval=2,
                     log_interval=2, **sections) -> dict:
    cfg = {
        "model": {"backbone": "resnet18", "norm": "gn", "frozen_stages": 0, "fpn_channels": 32,
                  "head_depth": 1, "head_width": 32},
        "loss": {"name": "equalized_focal"},
        "data": {"train_ann": str(bench.train_ann), "train_images": str(bench.train_images),
                 "val_ann": str(bench.val_ann), "val_images": str(bench.val_images),
                 "train_sizes": [128], "test_size": 128, "max_size": 192, "batch_size": batch_size,
                 "num_workers": 0},
        "train": {"max_iters": max_iters, "base_lr": 0.01, "base_batch": 16, "warmup_iters": 2,
                  "milestones": [milestone], "eval_interval": 0, "ckpt_interval": ckpt_interval, "keep_last": 2},
        "runtime": {"work_dir": str(work_dir), "log_interval": log_interval, "threads": 1, "deterministic": True},
    }
    for sec, values in sections.items():
        cfg[sec].update(values)
    return cfg


def tiny_config_writer(bench, tmp_path, **defaults):
    """A ``write(name, work_dir=None, **sections) -> Path`` that saves a tiny config as YAML."""
    def write(name="tiny.yaml", work_dir=None, **sections):
        path = tmp_path / name
        cfg = tiny_config_dict(bench, work_dir or tmp_path / "run", **defaults, **sections)
        path.write_text(yaml.safe_dump(cfg))
        return path
    return write
