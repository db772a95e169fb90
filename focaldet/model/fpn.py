"""Feature pyramid (Lin et al. 2017): P3–P5 from C3–C5 top-down, P6 and P7 by stride-2 convs."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FPN(nn.Module):
    """``forward([C3, C4, C5]) -> [P3, P4, P5, P6, P7]``, each ``(B, out_channels, H/2^l, W/2^l)``.

    ``p6_from="c5"`` is the paper's P6 = conv3×3/2(C5); ``"p5"`` is torchvision v1's conv3×3/2(P5).
    P7 = conv3×3/2(ReLU(P6)) in both.
    """

    def __init__(self, in_channels: list[int], out_channels: int = 256, p6_from: str = "c5"):
        super().__init__()
        if p6_from not in ("c5", "p5"):
            raise ValueError(f"p6_from must be 'c5' or 'p5', got {p6_from!r}")
        self.p6_from = p6_from
        self.inner_blocks = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
        self.layer_blocks = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in in_channels)
        self.p6 = nn.Conv2d(in_channels[-1] if p6_from == "c5" else out_channels, out_channels, 3, stride=2, padding=1)
        self.p7 = nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1)
        self.out_channels = out_channels
        # "Xavier-like" uniform init with a=1, as detectron2 (c2_xavier_fill) and torchvision do
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.zeros_(m.bias)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        last_inner = self.inner_blocks[-1](feats[-1])
        outs = [self.layer_blocks[-1](last_inner)]
        for i in range(len(feats) - 2, -1, -1):
            lateral = self.inner_blocks[i](feats[i])
            top_down = F.interpolate(last_inner, size=lateral.shape[-2:], mode="nearest")
            last_inner = lateral + top_down
            outs.insert(0, self.layer_blocks[i](last_inner))
        p6 = self.p6(feats[-1] if self.p6_from == "c5" else outs[-1])
        p7 = self.p7(F.relu(p6))
        return outs + [p6, p7]
