"""A small detector trained for 20 iterations on a tiny lt-digits benchmark, shared by the export
tests (about 15 s on 2 cores), and the real images they run it on."""
from __future__ import annotations

import pytest
import yaml

from tests.tiny_config import tiny_config_dict


@pytest.fixture(scope="session")
def digits_benchmark(tmp_path_factory):
    from focaldet.data.benchmark import ensure_benchmark

    return ensure_benchmark("lt-digits", tmp_path_factory.mktemp("export_bench"), train=24, val=8, size=160, seed=0)


@pytest.fixture(scope="session")
def trained_checkpoint(digits_benchmark, tmp_path_factory):
    """``last.pt`` of a ResNet-18/GN model trained 20 iterations (AdamW) with the focal loss: enough
    for scores above the 0.05 threshold, so post-processing has real detections to keep."""
    from focaldet.cli.main import main

    root = tmp_path_factory.mktemp("export_run")
    cfg = tiny_config_dict(digits_benchmark, root / "run", max_iters=20, milestone=18, ckpt_interval=20,
                           loss={"name": "focal"})
    cfg["train"].update(optimizer="adamw", base_lr=0.002, base_batch=4)
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FOCALDET_COMPILE", "0")  # compiling the loss costs more than the run here
        assert main(["train", str(path), "--no-progress"]) == 0
    return root / "run" / "checkpoints" / "last.pt"


@pytest.fixture(scope="session")
def real_images(digits_benchmark):
    """Four rendered lt-digits val images (128 x 128 after resizing) and the photos that ship with
    scikit-image and scikit-learn (128 x 128 to 128 x 192 after resizing, padded to 128 x 256)."""
    from focaldet.analysis.detections import bundled_photo_paths

    digits = sorted(digits_benchmark.val_images.iterdir())[:4]
    photos = [p for p, _ in bundled_photo_paths()]
    assert photos, "scikit-learn's sample photos are part of the dependencies"
    return digits + photos
