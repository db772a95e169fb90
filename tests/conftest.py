"""Shared fixtures.

``tiny_benchmark``: a tiny copy-paste benchmark (24 train / 8 val images of 160 × 160 px, the
default kind: lt-stamps where the tuxpaint stamps are installed, else lt-digits), generated once
per test session into a temporary folder (about 3 s). Tests must treat it as read-only.
"""
from __future__ import annotations

import pytest

TINY_BENCHMARK_PARAMS = dict(train=24, val=8, size=160, seed=0)


@pytest.fixture(scope="session")
def tiny_benchmark_kind() -> str:
    from focaldet.data.benchmark import default_kind

    return default_kind()


@pytest.fixture(scope="session")
def tiny_benchmark(tmp_path_factory, tiny_benchmark_kind):
    """``BenchmarkPaths(train_ann, train_images, val_ann, val_images)`` of the tiny benchmark."""
    from focaldet.data.benchmark import ensure_benchmark

    root = tmp_path_factory.mktemp("benchmarks")
    return ensure_benchmark(tiny_benchmark_kind, root, **TINY_BENCHMARK_PARAMS)
