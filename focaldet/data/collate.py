"""Batching: pad images to a common size that is a multiple of the largest stride."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import torch


@dataclass
class Batch:
    """A padded batch.

    - ``images``: ``(B, 3, H, W)`` float32 RGB in [0, 1], zero-padded at the right and bottom;
      ``H`` and ``W`` are multiples of ``size_divisibility``;
    - ``image_sizes``: ``(h, w)`` of each image's valid region (after resizing);
    - ``targets``: the dataset's target dicts (boxes in pixels of the resized image);
    - ``image_ids``, ``scales`` (resized / original), ``orig_sizes`` ``(h, w)`` per image.
    """

    images: torch.Tensor
    image_sizes: list[tuple[int, int]]
    targets: list[dict]
    image_ids: list[int]
    scales: list[float]
    orig_sizes: list[tuple[int, int]]

    def __len__(self) -> int:
        return len(self.image_ids)

    def to(self, device: Union[str, torch.device], non_blocking: bool = False) -> "Batch":
        """A copy with ``images`` and every tensor in ``targets`` on ``device``."""
        move = lambda v: v.to(device, non_blocking=non_blocking) if torch.is_tensor(v) else v  # noqa: E731
        return Batch(images=self.images.to(device, non_blocking=non_blocking), image_sizes=self.image_sizes,
                     targets=[{k: move(v) for k, v in t.items()} for t in self.targets],
                     image_ids=self.image_ids, scales=self.scales, orig_sizes=self.orig_sizes)

    def pin_memory(self) -> "Batch":
        """Called by ``DataLoader(pin_memory=True)`` in its pinning thread."""
        pin = lambda v: v.pin_memory() if torch.is_tensor(v) else v  # noqa: E731
        return Batch(images=self.images.pin_memory(), image_sizes=self.image_sizes,
                     targets=[{k: pin(v) for k, v in t.items()} for t in self.targets],
                     image_ids=self.image_ids, scales=self.scales, orig_sizes=self.orig_sizes)


def padded_size(h: int, w: int, size_divisibility: int) -> tuple[int, int]:
    d = int(size_divisibility)
    return -(-h // d) * d, -(-w // d) * d


def collate(samples: Sequence[tuple[torch.Tensor, dict]], size_divisibility: int = 32) -> Batch:
    """Stack ``(image, target)`` pairs (``image`` ``(3, h, w)`` uint8 or float in [0, 1]) into a
    :class:`Batch`, padding to the largest ``h``, ``w`` rounded up to ``size_divisibility``."""
    if len(samples) == 0:
        raise ValueError("collate: empty batch")
    images = [s[0] for s in samples]
    targets = [s[1] for s in samples]
    if len({im.dtype for im in images}) > 1:
        raise ValueError(f"collate: images of mixed dtypes {sorted({str(im.dtype) for im in images})}")
    max_h = max(int(im.shape[-2]) for im in images)
    max_w = max(int(im.shape[-1]) for im in images)
    H, W = padded_size(max_h, max_w, size_divisibility)
    out = torch.zeros((len(images), 3, H, W), dtype=torch.float32)
    for i, im in enumerate(images):
        out[i, :, : im.shape[-2], : im.shape[-1]].copy_(im)
    if images[0].dtype == torch.uint8:
        out.div_(255.0)
    return Batch(images=out, image_sizes=[(int(im.shape[-2]), int(im.shape[-1])) for im in images],
                 targets=targets, image_ids=[int(t["image_id"]) for t in targets],
                 scales=[float(t.get("scale", 1.0)) for t in targets],
                 orig_sizes=[tuple(int(v) for v in t.get("orig_size", im.shape[-2:]))
                             for t, im in zip(targets, images)])
