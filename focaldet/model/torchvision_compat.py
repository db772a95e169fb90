"""Load ``torchvision.models.detection.retinanet_resnet50_fpn`` weights into our RetinaNet.

The target model must be built with ``model.preset: torchvision_v1`` (P6 from P5, torchvision's
anchors), ``backbone: resnet50``, ``head_depth: 4``, ``head_width: 256``, ``fpn_channels: 256``,
no head norm, a sigmoid-family loss and ``num_classes`` equal to torchvision's (91 for COCO).
"""
from __future__ import annotations

import re
from typing import Optional

import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from focaldet.errors import CheckpointError

_RULES = [
    (r"^backbone\.body\.(.*)$", r"backbone.\1"),
    # FPN convs: torchvision ≥ 0.13 wraps them in Conv2dNormActivation (".0."), older ones do not
    (r"^backbone\.fpn\.(inner|layer)_blocks\.(\d+)\.(?:0\.)?(weight|bias)$", r"fpn.\1_blocks.\2.\3"),
    (r"^backbone\.fpn\.extra_blocks\.(p6|p7)\.(weight|bias)$", r"fpn.\1.\2"),
    (r"^head\.classification_head\.cls_logits\.(weight|bias)$", r"head.cls_logits.\1"),
    (r"^head\.regression_head\.bbox_reg\.(weight|bias)$", r"head.bbox_pred.\1"),
]
_TOWER = re.compile(r"^head\.(classification|regression)_head\.conv\.(\d+)\.(?:(0)\.)?(weight|bias)$")


def convert_torchvision_retinanet_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename torchvision RetinaNet (v1) keys to ours. Tower convs: torchvision v2 layout
    ``conv.{i}.0.weight`` and the legacy ``conv.{2i}.weight`` both map to ``{cls,box}_tower.{2i}``."""
    out = {}
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked"):
            continue
        m = _TOWER.match(key)
        if m:
            tower = "cls_tower" if m.group(1) == "classification" else "box_tower"
            idx = int(m.group(2)) * 2 if m.group(3) is not None else int(m.group(2))  # (conv, ReLU) pairs
            out[f"head.{tower}.{idx}.{m.group(4)}"] = value
            continue
        for pattern, repl in _RULES:
            if re.match(pattern, key):
                out[re.sub(pattern, repl, key)] = value
                break
        else:
            raise CheckpointError(f"torchvision state_dict: key '{key}' has no counterpart in focaldet's RetinaNet")
    return out


def load_torchvision_retinanet_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor], *,
                                          frozen_bn_eps: Optional[float] = None) -> nn.Module:
    """Copy torchvision RetinaNet weights into ``model`` (in place) and return it.

    ``frozen_bn_eps``: torchvision's COCO_V1 weights were trained with FrozenBatchNorm eps = 0
    (torchvision calls ``overwrite_eps(model, 0.0)`` when loading them); pass 0.0 for those weights
    to reproduce its numbers. None leaves the model's eps (1e-5) alone.
    Raises :class:`CheckpointError` naming the first key that is missing or has a different shape.
    """
    converted = convert_torchvision_retinanet_state_dict(state_dict)
    own = model.state_dict()
    for key, value in converted.items():
        if key not in own:
            raise CheckpointError(f"torchvision state_dict: '{key}' does not exist in this model; build it with "
                                  f"model.preset=torchvision_v1, resnet50, head_depth=4, head_norm=None")
        if own[key].shape != value.shape:
            raise CheckpointError(f"torchvision state_dict: '{key}' has shape {tuple(value.shape)}, this model "
                                  f"expects {tuple(own[key].shape)} (num_classes, head width or p6_from differ?)")
    # everything but the loss's own state and the EMA normalizer must come from torchvision
    missing = [k for k in own if k not in converted and not k.startswith("cls_loss.")
               and k != "ema_num_pos" and not k.endswith("num_batches_tracked")]
    if missing:
        raise CheckpointError(f"torchvision state_dict: no weights for '{missing[0]}' "
                              f"({len(missing)} model keys missing)")
    model.load_state_dict(converted, strict=False)
    if frozen_bn_eps is not None:
        for m in model.modules():
            if isinstance(m, FrozenBatchNorm2d):
                m.eps = frozen_bn_eps
    return model


def load_torchvision_coco_weights(model: nn.Module, progress: bool = True) -> nn.Module:
    """Download (through torchvision's weights API, internet needed once) the COCO_V1 RetinaNet
    weights (36.4 AP) and load them; ``model`` must have 91 classes (torchvision's COCO label ids)."""
    from torchvision.models.detection import RetinaNet_ResNet50_FPN_Weights

    state = RetinaNet_ResNet50_FPN_Weights.COCO_V1.get_state_dict(progress=progress, check_hash=True)
    return load_torchvision_retinanet_state_dict(model, state, frozen_bn_eps=0.0)
