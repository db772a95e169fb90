"""Small COCO datasets written into ``tmp_path`` from real photos (``skimage.data``)."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata


def photo(h: int, w: int, which: str = "astronaut") -> np.ndarray:
    """A real photo (bundled with scikit-image) resized to ``h`` x ``w``, uint8 (h, w, 3)."""
    arr = getattr(skdata, which)()
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    return np.array(Image.fromarray(arr[:, :, :3]).resize((w, h), Image.BILINEAR))


def write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path


class CocoFiles:
    """A COCO file with three PNG photos and two categories with non-contiguous ids (7 'cat',
    3 'rocket'). Image 30 has no annotations; annotation 103 is a crowd box.

    ``coco`` is the dict; ``write(coco)`` writes it (default: ``self.coco``) and returns the path."""

    def __init__(self, root: Path):
        self.root = root
        self.image_root = root / "images"
        self.image_root.mkdir()
        self.arrays = {}
        sizes = {10: (48, 64, "astronaut"), 20: (40, 56, "coffee"), 30: (32, 32, "chelsea")}
        images = []
        for image_id, (h, w, which) in sizes.items():
            name = f"{which}.png"
            arr = photo(h, w, which)
            Image.fromarray(arr).save(self.image_root / name)
            self.arrays[image_id] = arr
            images.append({"id": image_id, "file_name": name, "width": w, "height": h})
        self.coco = {
            "info": {"description": "focaldet test"},
            "images": images,
            "categories": [{"id": 7, "name": "cat"}, {"id": 3, "name": "rocket"}],
            "annotations": [
                {"id": 101, "image_id": 10, "category_id": 7, "bbox": [4, 6, 20, 10], "iscrowd": 0, "area": 200},
                {"id": 102, "image_id": 10, "category_id": 3, "bbox": [30.5, 1.25, 12, 30], "iscrowd": 0},
                {"id": 103, "image_id": 10, "category_id": 7, "bbox": [0, 0, 10, 10], "iscrowd": 1},
                {"id": 104, "image_id": 20, "category_id": 3, "bbox": [1, 2, 3, 4]},
            ],
        }

    photo = staticmethod(photo)

    def write(self, coco=None, name: str = "ann.json") -> Path:
        return write_json(self.root / name, self.coco if coco is None else coco)

    def copy(self) -> dict:
        return copy.deepcopy(self.coco)


@pytest.fixture
def coco_files(tmp_path) -> CocoFiles:
    return CocoFiles(tmp_path)
