"""Run ``focaldet train`` under torchrun with a data error on rank 1 only (test_hangs_and_memory).

``python _rank_failure_driver.py MODE CONFIG``: MODE ``setup`` makes rank 1's training set fail to
load (the other rank goes on into DDP's first collective); ``step`` makes rank 1's third image
read fail mid-training (the other rank waits in the gradient all-reduce)."""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from focaldet.cli.main import main  # noqa: E402
from focaldet.data import loader  # noqa: E402
from focaldet.data.coco import CocoDetection  # noqa: E402
from focaldet.errors import DataError  # noqa: E402

mode, config = sys.argv[1], sys.argv[2]
if os.environ.get("RANK") == "1":
    if mode == "setup":
        def broken_build_dataset(cfg, train):
            raise DataError(f"{cfg.train_ann}: images[3] (id 3): field 'width' must be a positive integer "
                            "(planted on rank 1)")
        loader.build_dataset = broken_build_dataset
    else:
        original, calls = CocoDetection.__getitem__, [0]

        def broken_getitem(self, key):
            calls[0] += 1
            if calls[0] == 3:
                raise DataError("photo_0003.jpg: not an image file (planted on rank 1)")
            return original(self, key)
        CocoDetection.__getitem__ = broken_getitem
sys.exit(main(["train", config, "--no-progress"]))
