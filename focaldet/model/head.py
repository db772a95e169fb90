"""RetinaNet class and box subnets (docs/spec.md §4 "Head"), shared across pyramid levels."""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` that runs in float32 under CPU autocast, as CUDA autocast runs it.

    CPU autocast leaves group_norm in bfloat16, where it is less precise and, on channels_last
    inputs, ~3x slower than in float32 (the lt-stamps preset's head: ~4 % of a bf16 training step).
    Same parameters and ``state_dict`` as ``nn.GroupNorm``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                return F.group_norm(x.float(), self.num_groups, self.weight, self.bias, self.eps)
        return super().forward(x)


def _tower(in_channels: int, width: int, depth: int, norm: Optional[str]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(depth):
        layers.append(nn.Conv2d(in_channels if i == 0 else width, width, 3, padding=1))
        if norm == "gn":
            layers.append(GroupNorm(math.gcd(32, width), width))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class RetinaNetHead(nn.Module):
    """Two towers of ``depth`` × [3×3 conv, ``width`` ch, (GN), ReLU] and 3×3 output convs.

    ``forward([P3..P7]) -> (cls_logits (B, N, C), box_deltas (B, N, 4))`` with N = Σ_l H_l·W_l·A in
    the anchor order of :class:`~focaldet.model.anchors.AnchorGenerator`; C = K (sigmoid family) or
    K + 1 (softmax family, background last). Init: N(0, 0.01) weights, zero biases, except the class
    output bias, set so that every foreground probability starts at π (sigmoid: b = −log((1−π)/π))
    or the background probability starts at 1 − π (softmax: b_bg = log(K(1−π)/π), others 0).
    """

    def __init__(self, in_channels: int, num_anchors: int, num_classes: int, *, depth: int = 4, width: int = 256,
                 norm: Optional[str] = None, prior_prob: float = 0.01, softmax: bool = False):
        super().__init__()
        self.num_anchors = num_anchors
        self.num_classes = num_classes
        self.num_outputs = num_classes + 1 if softmax else num_classes
        self.softmax = softmax
        out_in = width if depth > 0 else in_channels
        self.cls_tower = _tower(in_channels, width, depth, norm)
        self.box_tower = _tower(in_channels, width, depth, norm)
        self.cls_logits = nn.Conv2d(out_in, num_anchors * self.num_outputs, 3, padding=1)
        self.bbox_pred = nn.Conv2d(out_in, num_anchors * 4, 3, padding=1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
        with torch.no_grad():
            if softmax:
                bias = self.cls_logits.bias.view(num_anchors, self.num_outputs)
                bias[:, num_classes] = math.log(num_classes * (1 - prior_prob) / prior_prob)
            else:
                self.cls_logits.bias.fill_(-math.log((1 - prior_prob) / prior_prob))

    def forward(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        cls_out, box_out = [], []
        for f in features:
            B, _, H, W = f.shape
            # (B, A·C, H, W) -> (B, H·W·A, C): location-major, anchor-minor, like the anchors
            c = self.cls_logits(self.cls_tower(f))
            cls_out.append(c.view(B, self.num_anchors, self.num_outputs, H, W).permute(0, 3, 4, 1, 2)
                           .reshape(B, -1, self.num_outputs))
            b = self.bbox_pred(self.box_tower(f))
            box_out.append(b.view(B, self.num_anchors, 4, H, W).permute(0, 3, 4, 1, 2).reshape(B, -1, 4))
        return torch.cat(cls_out, dim=1), torch.cat(box_out, dim=1)
