"""COCO / LVIS v1 detection dataset."""
from __future__ import annotations

import logging
import os
from typing import NamedTuple, Optional, Union

import numpy as np
import torch

from focaldet.data.images import DEFAULT_MAX_PIXELS, read_image
from focaldet.data.validation import load_coco_annotations
from focaldet.errors import DataError

log = logging.getLogger("focaldet.data")


class SampleKey(NamedTuple):
    """What a seeded loader passes to ``dataset[...]``: the random transform choices of a sample
    come from ``numpy.random.default_rng([seed, epoch, index])``, never from worker state."""

    index: int
    seed: int = 0
    epoch: int = 0


class CocoDetection(torch.utils.data.Dataset):
    """Images and boxes of a COCO-format (or LVIS v1) annotation file.

    ``dataset[i]`` (or ``dataset[SampleKey(i, seed, epoch)]``) returns ``(image, target)``:

    - ``image``: ``(3, H, W)`` uint8 RGB tensor, after ``transforms`` (resized);
    - ``target``: ``boxes (n, 4)`` float32 xyxy pixels of ``image``, ``labels (n,)`` int64 in
      ``0..K-1``, ``crowd_boxes (m, 4)`` float32, ``image_id`` int, ``orig_size (h, w)``,
      ``size (h, w)`` of ``image``, ``scale`` float = resized / original.

    Labels are the categories sorted by id: ``cat_ids[label]`` is the original id,
    ``cat_id_to_label`` the inverse. The file is validated on construction (see
    :mod:`focaldet.data.validation`); ``report`` holds the counts, and a one-line summary is logged.

    Args:
        ann_file: COCO/LVIS JSON file.
        image_root: folder the ``file_name`` entries are relative to; no image may resolve outside it.
        transforms: ``t(image, target, rng)`` (see :mod:`focaldet.data.transforms`) or None.
        strict: raise on boxes that would be dropped instead of dropping and counting them.
        max_pixels: larger images are refused when read.
    """

    def __init__(self, ann_file: Union[str, os.PathLike], image_root: Union[str, os.PathLike],
                 transforms=None, *, strict: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS):
        a = load_coco_annotations(ann_file, image_root, strict=strict)
        self.ann_file = a.ann_file
        self.image_root = a.image_root
        self.transforms = transforms
        self.max_pixels = int(max_pixels)
        self.report = a.report
        self.images = a.images
        self.categories = a.categories
        self.cat_ids: list[int] = a.cat_ids
        self.cat_id_to_label: dict[int, int] = {c: i for i, c in enumerate(a.cat_ids)}
        self.class_names: list[str] = [c["name"] for c in a.categories]
        # LVIS v1: 'r' | 'c' | 'f' per label (None where the file has no frequency)
        self.frequencies: list[Optional[str]] = [c.get("frequency") for c in a.categories]
        self.is_lvis = a.report.is_lvis
        self.image_ids: list[int] = a.image_ids.tolist()
        self._paths = [str(p) for p in a.paths]
        self._sizes = np.stack([a.heights, a.widths], axis=1)
        self._boxes = torch.from_numpy(a.boxes)
        self._labels = torch.from_numpy(a.labels)
        self._box_offsets = a.box_offsets.tolist()
        self._crowd = torch.from_numpy(a.crowd_boxes)
        self._crowd_offsets = a.crowd_offsets.tolist()
        self.class_image_counts: list[int] = _class_image_counts(a.labels, a.box_offsets, len(a.cat_ids))
        level = logging.WARNING if self.report.num_dropped or self.report.num_clipped else logging.INFO
        log.log(level, "%s", self.report.summary())

    @property
    def num_classes(self) -> int:
        return len(self.cat_ids)

    def __len__(self) -> int:
        return len(self._paths)

    def boxes_per_image(self) -> np.ndarray:
        """``(N,)`` number of boxes of each image, crowd boxes included."""
        return np.diff(np.asarray(self._box_offsets)) + np.diff(np.asarray(self._crowd_offsets))

    def image_classes(self) -> list[np.ndarray]:
        """For each image, the labels (``0..K-1``, int64) of its non-crowd boxes."""
        labels = self._labels.numpy()
        return [labels[a:b] for a, b in zip(self._box_offsets[:-1], self._box_offsets[1:])]

    def image_path(self, index: int) -> str:
        return self._paths[index]

    def get_target(self, index: int) -> dict:
        """The target of image ``index`` in original-image pixels, without reading the image."""
        b0, b1 = self._box_offsets[index], self._box_offsets[index + 1]
        c0, c1 = self._crowd_offsets[index], self._crowd_offsets[index + 1]
        h, w = (int(v) for v in self._sizes[index])
        return {"boxes": self._boxes[b0:b1].clone(), "labels": self._labels[b0:b1].clone(),
                "crowd_boxes": self._crowd[c0:c1].clone(), "image_id": self.image_ids[index],
                "orig_size": (h, w), "size": (h, w), "scale": 1.0}

    def __getitem__(self, key: Union[int, SampleKey]):
        key = SampleKey(*key) if isinstance(key, tuple) else SampleKey(int(key))
        index = key.index
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {key.index} out of range for {len(self)} images")
        path = self._paths[index]
        image = read_image(path, self.max_pixels)
        target = self.get_target(index)
        if tuple(image.shape[-2:]) != target["orig_size"]:
            h, w = target["orig_size"]
            raise DataError(
                f"{path}: image is {image.shape[-1]}x{image.shape[-2]} (width x height, after EXIF "
                f"orientation) but {self.ann_file} images[{index}] (id {target['image_id']}) has fields "
                f"'width' {w} and 'height' {h}")
        if self.transforms is not None:
            rng = np.random.default_rng([key.seed % 2**64, key.epoch % 2**64, index])
            image, target = self.transforms(image, target, rng)
        return image, target

    def __repr__(self) -> str:
        return (f"CocoDetection({str(self.ann_file)!r}, {len(self)} images, {self.num_classes} classes, "
                f"transforms={self.transforms})")


def _class_image_counts(labels: np.ndarray, offsets: np.ndarray, num_classes: int) -> list[int]:
    """Number of images with at least one (non-crowd) box of each class."""
    image_of_box = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    pairs = np.unique(image_of_box * num_classes + labels)
    return np.bincount(pairs % num_classes, minlength=num_classes).tolist()
