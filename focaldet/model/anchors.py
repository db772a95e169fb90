"""Anchors per pyramid level (docs/spec.md §4): sizes 32·2^(l−3)·{2^0, 2^(1/3), 2^(2/3)}, ratios {0.5, 1, 2}."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

LEVELS = (3, 4, 5, 6, 7)


def default_anchor_sizes(base_sizes: Optional[Sequence[float]] = None,
                         scales: Sequence[float] = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))) -> list[list[float]]:
    """Absolute anchor sizes (square-root of the area, pixels) per level P3..P7; not truncated."""
    if base_sizes is None:
        base_sizes = [32.0 * 2 ** (lvl - 3) for lvl in LEVELS]
    return [[float(b) * float(s) for s in scales] for b in base_sizes]


def torchvision_anchor_sizes() -> list[list[float]]:
    """torchvision v1's table: the scaled sizes truncated to integers (32, 40, 50), (64, 80, 101), …"""
    return [[float(x), float(int(x * 2 ** (1.0 / 3))), float(int(x * 2 ** (2.0 / 3)))]
            for x in (32, 64, 128, 256, 512)]


def cell_anchors(sizes: Sequence[float], aspect_ratios: Sequence[float], round_corners: bool = False) -> torch.Tensor:
    """Zero-centred anchors ``(len(ratios)·len(sizes), 4)`` float64 xyxy, ratio-major order (the
    order torchvision uses, so its head weights map onto ours). ratio = height / width; each anchor
    keeps the area size². ``round_corners`` rounds the corners to integers like torchvision does."""
    sizes_t = torch.as_tensor(sizes, dtype=torch.float64)
    ratios = torch.as_tensor(aspect_ratios, dtype=torch.float64)
    h_ratios = torch.sqrt(ratios)
    ws = (sizes_t[None, :] / h_ratios[:, None]).reshape(-1)
    hs = (sizes_t[None, :] * h_ratios[:, None]).reshape(-1)
    base = torch.stack([-ws, -hs, ws, hs], dim=1) / 2
    return base.round() if round_corners else base


class AnchorGenerator(nn.Module):
    """Anchors for every pyramid level, cached per (level, grid size, device, dtype).

    ``forward(grid_sizes [(h, w)] per level, device, dtype) -> list[(h·w·A, 4)]`` xyxy pixels of the
    (padded) input; location-major, then anchor (index = (y·w + x)·A + a), centres at
    (x·stride, y·stride) as detectron2 / torchvision / mmdetection place them.
    """

    def __init__(self, sizes: Sequence[Sequence[float]], aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
                 strides: Sequence[int] = (8, 16, 32, 64, 128), round_corners: bool = False):
        super().__init__()
        if len(sizes) != len(strides):
            raise ValueError(f"need one list of anchor sizes per level: {len(sizes)} sizes, {len(strides)} strides")
        self.sizes = [list(map(float, s)) for s in sizes]
        self.aspect_ratios = list(map(float, aspect_ratios))
        self.strides = list(strides)
        self.round_corners = round_corners
        self.cells = [cell_anchors(s, self.aspect_ratios, round_corners) for s in self.sizes]
        self.num_anchors = self.cells[0].shape[0]
        if any(c.shape[0] != self.num_anchors for c in self.cells):
            raise ValueError("every level needs the same number of anchors per location (the head is shared)")
        self._cache: dict[tuple, torch.Tensor] = {}

    def grid_anchors(self, level: int, h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        key = (level, h, w, str(device), dtype)
        anchors = self._cache.get(key)
        if anchors is None:
            stride = self.strides[level]
            # built in float64 on the CPU once, then cast: exact centres for any grid size
            xs = torch.arange(w, dtype=torch.float64) * stride
            ys = torch.arange(h, dtype=torch.float64) * stride
            sy, sx = torch.meshgrid(ys, xs, indexing="ij")
            shifts = torch.stack([sx, sy, sx, sy], dim=-1).reshape(-1, 1, 4)
            anchors = (shifts + self.cells[level].view(1, -1, 4)).reshape(-1, 4).to(device=device, dtype=dtype)
            self._cache[key] = anchors
        return anchors

    def forward(self, grid_sizes: Sequence[tuple[int, int]], device: torch.device,
                dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
        return [self.grid_anchors(i, int(h), int(w), device, dtype) for i, (h, w) in enumerate(grid_sizes)]

    def _apply(self, fn, recurse=True):
        # model.to(...) / .half(): drop cached grids so memory on the old device is released
        self._cache.clear()
        return super()._apply(fn, recurse)
