"""A tiny training config on the ``tiny_benchmark``: ResNet-18 with GroupNorm from scratch, a
32-channel FPN and a one-conv head, 128-px images, batch 4 — about a second per iteration."""
from __future__ import annotations

import pytest

from tests.tiny_config import tiny_config_dict, tiny_config_writer  # noqa: F401 (re-exported)


@pytest.fixture
def write_tiny_config(tiny_benchmark, tmp_path):
    return tiny_config_writer(tiny_benchmark, tmp_path)


@pytest.fixture(autouse=True)
def _eager_losses(monkeypatch):
    # torch.compile of the loss kernels costs tens of seconds per process on a 2-core machine;
    # these tests check the engine, and the eager path computes the same loss.
    monkeypatch.setenv("FOCALDET_COMPILE", "0")
