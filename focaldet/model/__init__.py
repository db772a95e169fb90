"""RetinaNet (docs/spec.md §4): backbone, FPN, anchors, matcher, box coder, head, post-processing."""
from focaldet.model.anchors import AnchorGenerator, default_anchor_sizes, torchvision_anchor_sizes
from focaldet.model.backbone import ResNetBackbone
from focaldet.model.box_coder import BoxCoder
from focaldet.model.build import PRESETS, build_model, resolve_preset
from focaldet.model.fpn import FPN
from focaldet.model.head import RetinaNetHead
from focaldet.model.matcher import Matcher, assign_targets, batched_box_iou
from focaldet.model.mobilenet import MobileNetV2Backbone
from focaldet.model.postprocess import postprocess_detections
from focaldet.model.retinanet import RetinaNet
from focaldet.model.torchvision_compat import (convert_torchvision_retinanet_state_dict, load_torchvision_coco_weights,
                                               load_torchvision_retinanet_state_dict)

__all__ = ["AnchorGenerator", "BoxCoder", "FPN", "Matcher", "MobileNetV2Backbone", "PRESETS", "ResNetBackbone", "RetinaNet", "RetinaNetHead",
           "assign_targets", "batched_box_iou", "build_model", "convert_torchvision_retinanet_state_dict",
           "default_anchor_sizes", "load_torchvision_coco_weights", "load_torchvision_retinanet_state_dict",
           "postprocess_detections", "resolve_preset", "torchvision_anchor_sizes"]
