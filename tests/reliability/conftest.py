"""The tiniest training config (the engine tests' ResNet-18/GN, 32-channel FPN, one-conv head,
128-px images) with batch 2 and a checkpoint every iteration, so checkpoint writes are frequent."""
from __future__ import annotations

import functools

import pytest

from tests import tiny_config

# batch 2, ten iterations, a checkpoint every iteration
RELIABILITY_DEFAULTS = dict(batch_size=2, max_iters=10, milestone=7, ckpt_interval=1, log_interval=1)
tiny_config_dict = functools.partial(tiny_config.tiny_config_dict, **RELIABILITY_DEFAULTS)


@pytest.fixture
def write_tiny_config(tiny_benchmark, tmp_path):
    return tiny_config.tiny_config_writer(tiny_benchmark, tmp_path, **RELIABILITY_DEFAULTS)


@pytest.fixture(autouse=True)
def _eager_losses(monkeypatch):
    # torch.compile of the loss kernels costs tens of seconds per process on a 2-core machine.
    monkeypatch.setenv("FOCALDET_COMPILE", "0")
