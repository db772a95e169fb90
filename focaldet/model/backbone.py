"""ResNet backbones from torchvision's own definitions, returning C3, C4, C5 (strides 8, 16, 32).

The blocks' modules (and so their ``state_dict`` names) are torchvision's; the forward pass is ours,
so that a convolution followed by a ``FrozenBatchNorm2d`` runs as *one* convolution whose weights
and bias have the frozen affine map folded in (see :func:`conv_norm`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.ops import FrozenBatchNorm2d

from focaldet.errors import CheckpointError, FocaldetError

# name -> (torchvision builder, weights enum, bottleneck?)
RESNETS: dict[str, tuple[Callable, type, bool]] = {
    "resnet18": (torchvision.models.resnet18, torchvision.models.ResNet18_Weights, False),
    "resnet34": (torchvision.models.resnet34, torchvision.models.ResNet34_Weights, False),
    "resnet50": (torchvision.models.resnet50, torchvision.models.ResNet50_Weights, True),
    "resnet101": (torchvision.models.resnet101, torchvision.models.ResNet101_Weights, True),
}


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels)


NORMS: dict[str, Callable[[int], nn.Module]] = {
    "frozen_bn": FrozenBatchNorm2d,
    "bn": nn.BatchNorm2d,
    "gn": _group_norm,
}


class ResNetBackbone(nn.Module):
    """torchvision ResNet without its classifier; ``forward(x (B,3,H,W)) -> [C3, C4, C5]``.

    Module names (``conv1``, ``bn1``, ``layer1`` … ``layer4``) are torchvision's, so its ImageNet
    ``state_dict`` loads as is. ``frozen_stages``: 0 = nothing frozen, 1 = the stem, k ≥ 2 = the
    stem and ``layer1`` … ``layer{k-1}`` (torchvision/detectron2/mmdetection default: 2).
    ``weights``: None, ``"imagenet"`` (torchvision's IMAGENET1K_V1, downloaded by torchvision) or a
    path to a saved torchvision ResNet ``state_dict``.
    """

    def __init__(self, name: str = "resnet50", norm: str = "frozen_bn", frozen_stages: int = 2,
                 weights: Optional[str] = None):
        super().__init__()
        if name not in RESNETS:
            raise FocaldetError(f"model.backbone: {name!r} is not one of {', '.join(RESNETS)}")
        if norm not in NORMS:
            raise FocaldetError(f"model.norm: {norm!r} is not one of {', '.join(NORMS)}")
        builder, weights_enum, bottleneck = RESNETS[name]
        net = builder(weights=None, norm_layer=NORMS[norm])
        if weights is not None:
            if norm == "gn":
                raise FocaldetError(f"model.backbone_weights: ImageNet ResNet weights are for batch norm, "
                                    f"not model.norm='gn'; use frozen_bn or bn, or no weights")
            load_resnet_weights(net, weights, weights_enum)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        width = 4 if bottleneck else 1
        self.out_channels = [128 * width, 256 * width, 512 * width]
        self.frozen_stages = frozen_stages
        stages = [nn.ModuleList([self.conv1, self.bn1]), self.layer1, self.layer2, self.layer3, self.layer4]
        for stage in stages[:frozen_stages]:
            stage.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(conv_norm(self.conv1, self.bn1, x).relu_())
        outs = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in layer:
                x = block_forward(block, x)
            outs.append(x)
        return outs[1:]


def folded_conv_params(conv: nn.Conv2d, norm: FrozenBatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight ``(O, I, kh, kw)`` and bias ``(O,)`` of the one convolution equal to ``norm(conv(x))``.

    FrozenBN is y = x·s + (β − μ·s) with s = γ / √(σ² + ε) (the formula of torchvision's
    ``FrozenBatchNorm2d``); folded, W' = W·s per output channel and b' = (b or 0)·s + β − μ·s.
    Computed in the parameters' dtype at every call (cheap next to the convolution, and always in
    step with the weights while they train); the weight keeps its memory format (channels_last).
    """
    scale = norm.weight * (norm.running_var + norm.eps).rsqrt()
    bias = norm.bias - norm.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    return conv.weight * scale.view(-1, 1, 1, 1), bias


def conv_norm(conv: nn.Conv2d, norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``norm(conv(x))``, as one folded convolution when ``norm`` is a ``FrozenBatchNorm2d``.

    Equal to the two-step version up to float rounding (the products are summed in another order);
    saves a full read and write of the activation, forward and backward. BN (trainable, batch
    statistics) and GN cannot be folded and run as they are.
    """
    if not isinstance(norm, FrozenBatchNorm2d):
        return norm(conv(x))
    weight, bias = folded_conv_params(conv, norm)
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def block_forward(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """torchvision's ``BasicBlock`` / ``Bottleneck`` computation on its own modules, with every
    conv + norm pair through :func:`conv_norm`."""
    if isinstance(block, Bottleneck):
        out = conv_norm(block.conv1, block.bn1, x).relu_()
        out = conv_norm(block.conv2, block.bn2, out).relu_()
        out = conv_norm(block.conv3, block.bn3, out)
    elif isinstance(block, BasicBlock):
        out = conv_norm(block.conv1, block.bn1, x).relu_()
        out = conv_norm(block.conv2, block.bn2, out)
    else:
        raise TypeError(f"unexpected ResNet block {type(block).__name__}")
    identity = x if block.downsample is None else conv_norm(block.downsample[0], block.downsample[1], x)
    return out.add_(identity).relu_()


def load_resnet_weights(net: nn.Module, weights: str, weights_enum: type) -> None:
    """Load ImageNet weights into a torchvision ResNet: ``"imagenet"`` through torchvision's weights
    API (needs internet the first time), or a local ``state_dict`` file (``fc.*`` may be absent;
    a ``module.`` prefix from DataParallel is stripped)."""
    if weights == "imagenet":
        state = weights_enum.IMAGENET1K_V1.get_state_dict(progress=True)
        where = f"torchvision {weights_enum.__name__}.IMAGENET1K_V1"
    else:
        state, where = read_state_dict(weights, "ResNet")
    load_checked_state_dict(net, state, where, head="fc.", kind=f"{type(net).__name__} state_dict of this depth")


def read_state_dict(weights: str, kind: str) -> tuple[dict, str]:
    """A backbone ``state_dict`` read from the file ``weights`` (a ``{"state_dict": …}`` wrapper is
    unwrapped), and the file's name for messages."""
    path = Path(weights).expanduser()
    where = str(path)
    if not path.is_file():
        raise CheckpointError(f"{where}: model.backbone_weights file not found "
                              f"(expected 'imagenet' or a path to a {kind} state_dict)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated file, pickle with code, not a torch file
        raise CheckpointError(f"{where}: cannot read backbone weights: {e}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return state, where


def load_checked_state_dict(net: nn.Module, state, where: str, head: str, kind: str) -> None:
    """Load an ImageNet classifier's ``state_dict`` into ``net`` without its classifier (keys
    starting with ``head``), after checking every key and shape; a ``module.`` prefix from
    DataParallel is stripped."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{where}: expected a state_dict (a mapping of tensors), got {type(state).__name__}")
    state = {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith(head)}
    expected = net.state_dict()
    missing = sorted(k for k in expected if not k.startswith(head) and k not in state
                     and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in state if k not in expected and not k.endswith("num_batches_tracked"))
    if missing or unexpected:
        raise CheckpointError(f"{where}: not a {kind}: "
                              f"missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")
    for k, v in state.items():
        if k in expected and expected[k].shape != v.shape:
            raise CheckpointError(f"{where}: key '{k}' has shape {tuple(v.shape)}, "
                                  f"the model expects {tuple(expected[k].shape)}")
    net.load_state_dict(state, strict=False)
