"""Narrow ResNets for training from scratch on a CPU, returning C3, C4, C5 (strides 8, 16, 32).

torchvision's ResNets fix the stage widths at 64–512 channels; a detector trained from scratch on
a laptop CPU learns more in the same minutes from a network several times cheaper that can take
several times the iterations. These keep ResNet's layout (stem conv + max-pool, four stages of
basic blocks, stride 2 at the start of stages 2–4) and only change the widths and block counts.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

# name -> (stage widths, blocks per stage)
CPU_RESNETS: dict[str, tuple[tuple[int, int, int, int], tuple[int, int, int, int]]] = {
    "resnet10_w32": ((32, 64, 128, 256), (1, 1, 1, 1)),
    "resnet18_w32": ((32, 64, 128, 256), (2, 2, 2, 2)),
    "resnet10_w48": ((48, 96, 192, 384), (1, 1, 1, 1)),
    "resnet18_w48": ((48, 96, 192, 384), (2, 2, 2, 2)),
}


class CpuResNetBackbone(nn.Module):
    """``forward(x (B, 3, H, W)) -> [C3, C4, C5]`` with ``out_channels`` = widths[1:].

    ``norm``: a callable ``channels -> module`` (BatchNorm2d or GroupNorm); ``frozen_stages`` as in
    :class:`~focaldet.model.backbone.ResNetBackbone` (0 = train everything)."""

    def __init__(self, name: str, norm_layer: Callable[[int], nn.Module], frozen_stages: int = 0):
        super().__init__()
        widths, blocks = CPU_RESNETS[name]
        self.conv1 = nn.Conv2d(3, widths[0], 7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        stages, cin = [], widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            layers = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                down = None
                if stride != 1 or cin != w:
                    down = nn.Sequential(nn.Conv2d(cin, w, 1, stride=stride, bias=False), norm_layer(w))
                layers.append(BasicBlock(cin, w, stride, down, norm_layer=norm_layer))
                cin = w
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.out_channels = list(widths[1:])
        for m in self.modules():  # torchvision's ResNet initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for stage in [nn.ModuleList([self.conv1, self.bn1]), *stages][:frozen_stages]:
            stage.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c3 = self.layer2(self.layer1(x))
        c4 = self.layer3(c3)
        return [c3, c4, self.layer4(c4)]
