"""``build_model(cfg, num_classes)``: a RetinaNet from the ``model`` and ``loss`` config sections."""
from __future__ import annotations

import dataclasses

from focaldet.config import Config, ConfigError, ModelConfig
from focaldet.model.anchors import AnchorGenerator, default_anchor_sizes, torchvision_anchor_sizes
from focaldet.model.backbone import NORMS, ResNetBackbone
from focaldet.model.box_coder import BoxCoder
from focaldet.model.cpu_backbone import CPU_RESNETS, CpuResNetBackbone
from focaldet.model.fpn import FPN
from focaldet.model.head import RetinaNetHead
from focaldet.model.matcher import Matcher
from focaldet.model.mobilenet import MobileNetV2Backbone
from focaldet.model.retinanet import RetinaNet

# Values a preset puts in place of the defaults; fields a user set to a non-default value are kept.
PRESETS: dict[str, dict] = {
    # torchvision.models.detection.retinanet_resnet50_fpn (v1): P6 from P5, integer anchor sizes with
    # rounded corners (see anchors.torchvision_anchor_sizes), 300 detections per image.
    "torchvision_v1": {"p6_from": "p5", "inference.detections_per_img": 300},
}
_DEFAULTS = ModelConfig()


def _get(obj, dotted: str):
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _replace(obj, dotted: str, value):
    """A copy of dataclass ``obj`` with the (possibly grouped) field ``dotted`` set to ``value``."""
    head, _, rest = dotted.partition(".")
    return dataclasses.replace(obj, **{head: _replace(getattr(obj, head), rest, value) if rest else value})


def resolve_preset(mc: ModelConfig) -> tuple[ModelConfig, list[list[float]], bool]:
    """Apply ``mc.preset`` and return (resolved config, anchor sizes per level, round anchor corners)."""
    if mc.preset is not None and mc.preset not in PRESETS:
        raise ConfigError(f"model.preset: {mc.preset!r} is not one of {', '.join(PRESETS)}")
    for key, value in PRESETS.get(mc.preset, {}).items():
        if _get(mc, key) == _get(_DEFAULTS, key):
            mc = _replace(mc, key, value)
    anchors = mc.anchors
    default_anchors = anchors.sizes is None and anchors.scales == _DEFAULTS.anchors.scales
    if mc.preset == "torchvision_v1" and default_anchors:
        return mc, torchvision_anchor_sizes(), True
    return mc, default_anchor_sizes(anchors.sizes, anchors.scales), False


def build_model(cfg: Config, num_classes: int) -> RetinaNet:
    """RetinaNet for ``num_classes`` foreground classes, with the loss named in ``cfg.loss``
    (kept as ``model.cls_loss`` so loss state such as EFL statistics is checkpointed with it)."""
    from focaldet.losses import build_loss  # imported here: the loss family may import model helpers

    if num_classes < 1:
        raise ConfigError(f"{cfg.source}: the dataset has no classes (num_classes={num_classes})")
    mc, sizes, round_corners = resolve_preset(cfg.model)
    cls_loss = build_loss(cfg.loss.name, num_classes=num_classes, track_grad_stats=cfg.loss.track_grad_stats,
                          compile=cfg.loss.compile,
                          **cfg.loss.params)
    if mc.backbone in CPU_RESNETS:
        if mc.backbone_weights is not None or mc.norm == "frozen_bn":
            raise ConfigError(f"model.backbone: {mc.backbone} is trained from scratch: use model.norm=bn or gn "
                              f"and no model.backbone_weights")
        backbone = CpuResNetBackbone(mc.backbone, NORMS[mc.norm], frozen_stages=mc.frozen_stages)
    elif mc.backbone == "mobilenet_v2":
        if mc.norm == "gn":  # 16- and 24-channel layers: GroupNorm's 32 groups do not divide them
            raise ConfigError("model.norm: 'gn' is not available for mobilenet_v2 (layers of 16 and 24 "
                              "channels; its ImageNet weights are for batch norm): use frozen_bn or bn")
        backbone = MobileNetV2Backbone(NORMS[mc.norm], frozen_stages=mc.frozen_stages, weights=mc.backbone_weights)
    else:
        backbone = ResNetBackbone(mc.backbone, norm=mc.norm, frozen_stages=mc.frozen_stages,
                                  weights=mc.backbone_weights)
    fpn = FPN(backbone.out_channels, mc.fpn_channels, p6_from=mc.p6_from)
    anchor_generator = AnchorGenerator(sizes, mc.anchors.aspect_ratios, round_corners=round_corners)
    head = RetinaNetHead(mc.fpn_channels, anchor_generator.num_anchors, num_classes, depth=mc.head_depth,
                         width=mc.head_width, norm=mc.head_norm, prior_prob=mc.prior_prob,
                         softmax=getattr(cls_loss, "family", "sigmoid") == "softmax")
    match, box, infer = mc.matching, mc.box_loss, mc.inference
    return RetinaNet(backbone, fpn, head, anchor_generator, cls_loss, num_classes=num_classes,
                     matcher=Matcher(match.fg_iou_thresh, match.bg_iou_thresh, match.allow_low_quality_matches),
                     box_coder=BoxCoder((1.0, 1.0, 1.0, 1.0), clamp=box.clamp), box_loss=box.name,
                     smooth_l1_beta=box.beta, box_loss_weight=box.weight,
                     normalizer=match.normalizer, normalizer_momentum=match.normalizer_momentum,
                     crowd_ioa_thresh=match.crowd_ioa_thresh, score_thresh=infer.score_thresh,
                     topk_candidates=infer.topk_candidates, nms_thresh=infer.nms_thresh,
                     detections_per_img=infer.detections_per_img, channels_last=cfg.runtime.channels_last,
                     size_divisibility=cfg.data.size_divisibility)
