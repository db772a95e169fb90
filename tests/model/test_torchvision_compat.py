"""Our RetinaNet with torchvision's weights gives torchvision's detections (independent reference)."""
import numpy as np
import pytest
import skimage.data
import skimage.transform
import torch
from torchvision.models.detection import retinanet_resnet50_fpn

from focaldet.config import load_config
from focaldet.errors import CheckpointError
from focaldet.model import RetinaNet, load_torchvision_retinanet_state_dict
from focaldet.model.build import resolve_preset
from focaldet.model.anchors import AnchorGenerator
from focaldet.model.backbone import ResNetBackbone
from focaldet.model.fpn import FPN
from focaldet.model.head import RetinaNetHead

from focaldet.losses import build_loss

SIZE = 256
SCORE_THRESH = 0.15


def _torchvision_model():
    torch.manual_seed(0)
    tv = retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91, min_size=SIZE,
                                max_size=SIZE, score_thresh=SCORE_THRESH)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        # non-trivial BN statistics, so the backbone conversion (BN -> FrozenBN) is really exercised
        for m in tv.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 1.0)
                m.weight.copy_(torch.rand(m.num_features, generator=g) * 0.4 + 0.3)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
        # a head whose scores spread out (the 0.01-std init gives ~π everywhere, all near-ties)
        for m in tv.head.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, generator=g)
        tv.head.classification_head.cls_logits.weight.mul_(2.0)
        tv.head.regression_head.bbox_reg.weight.mul_(0.1)
    return tv.eval()


def _our_model(**overrides):
    cfg = load_config(None, ["model.preset=torchvision_v1", f"model.inference.score_thresh={SCORE_THRESH}"])
    mc, sizes, round_corners = resolve_preset(cfg.model)
    backbone = ResNetBackbone("resnet50", norm=mc.norm, frozen_stages=mc.frozen_stages)
    fpn = FPN(backbone.out_channels, mc.fpn_channels, p6_from=mc.p6_from)
    anchors = AnchorGenerator(sizes, mc.anchors.aspect_ratios, round_corners=round_corners)
    head = RetinaNetHead(mc.fpn_channels, anchors.num_anchors, 91, depth=mc.head_depth, width=mc.head_width)
    infer = mc.inference
    return RetinaNet(backbone, fpn, head, anchors, build_loss("focal", num_classes=91), num_classes=91,
                     score_thresh=infer.score_thresh, topk_candidates=infer.topk_candidates,
                     nms_thresh=infer.nms_thresh, detections_per_img=infer.detections_per_img)


def test_preset_is_torchvision_v1():
    mc, sizes, round_corners = resolve_preset(load_config(None, ["model.preset=torchvision_v1"]).model)
    assert mc.p6_from == "p5" and mc.inference.detections_per_img == 300 and round_corners
    assert sizes[0] == [32, 40, 50] and sizes[2] == [128, 161, 203] and sizes[4] == [512, 645, 812]
    assert (mc.inference.score_thresh, mc.inference.nms_thresh, mc.inference.topk_candidates) == (0.05, 0.5, 1000)
    # a value the user set explicitly wins over the preset
    mc2, _, _ = resolve_preset(load_config(None, ["model.preset=torchvision_v1",
                                                  "model.inference.detections_per_img=50"]).model)
    assert mc2.inference.detections_per_img == 50


def test_same_detections_as_torchvision_on_astronaut():
    tv = _torchvision_model()
    ours = load_torchvision_retinanet_state_dict(_our_model(), tv.state_dict()).eval()
    image = skimage.transform.resize(skimage.data.astronaut(), (SIZE, SIZE), anti_aliasing=True)
    image = torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1).contiguous()
    with torch.no_grad():
        ref = tv([image])[0]
        out = ours(image[None], [(SIZE, SIZE)])[0]
    n = len(ref["scores"])
    assert 20 <= n < 300, n  # enough detections, and none cut at the 300 limit (ties at the cut)
    assert len(out["scores"]) == n
    # compare as sets: detections whose scores agree to ~1e-7 may come out in either order
    box_diff = (ref["boxes"][:, None, :] - out["boxes"][None, :, :]).abs().amax(-1)
    same = (box_diff < 1e-3) & (ref["labels"][:, None] == out["labels"][None, :])
    assert same.any(1).all() and same.any(0).all()
    j = same.float().argmax(1)
    assert torch.equal(out["labels"][j], ref["labels"])
    assert (out["boxes"][j] - ref["boxes"]).abs().max() < 1e-3
    assert (out["scores"][j] - ref["scores"]).abs().max() < 1e-5
    assert len(set(j.tolist())) == n


def test_pads_to_32_like_torchvision_and_computes_the_same_network_outputs():
    """Images whose sizes 128 does not divide: ours pads the batch as torchvision's transform
    does with its default ``size_divisible=32`` (224 x 320 here; 256 x 384 at 128), and the
    backbone, FPN and head give torchvision's outputs on it, level by level."""
    tv = _torchvision_model()
    ours = load_torchvision_retinanet_state_dict(_our_model(), tv.state_dict()).eval()
    assert ours.size_divisibility == 32
    astronaut = skimage.data.astronaut()
    images = []
    for h, w in ((200, 296), (160, 240)):
        im = skimage.transform.resize(astronaut, (h, w), anti_aliasing=True)
        images.append(torch.from_numpy(im.astype(np.float32)).permute(2, 0, 1).contiguous())
    raw = torch.zeros(2, 3, 200, 296)
    for i, im in enumerate(images):
        raw[i, :, : im.shape[1], : im.shape[2]] = im
    sizes = [tuple(im.shape[1:]) for im in images]
    with torch.no_grad():
        ref_x = tv.transform.batch_images([tv.transform.normalize(im) for im in images], size_divisible=32)
        x = ours.normalize(raw, sizes)
        assert tuple(x.shape) == tuple(ref_x.shape) == (2, 3, 224, 320)
        torch.testing.assert_close(x, ref_x, rtol=0, atol=1e-6)
        ref = tv.head(list(tv.backbone(ref_x).values()))
        cls_logits, box_deltas = ours.network(x)
    for got, want in ((cls_logits, ref["cls_logits"]), (box_deltas, ref["bbox_regression"])):
        assert got.shape == want.shape  # the same anchors' worth of outputs on every level
        assert (got - want).abs().max() <= 1e-4 * want.abs().max()


def test_converter_names_the_bad_key():
    model = _our_model()
    tv_state = {"head.classification_head.cls_logits.weight": torch.zeros(9 * 80, 256, 3, 3)}
    with pytest.raises(CheckpointError, match="cls_logits.weight"):
        load_torchvision_retinanet_state_dict(model, tv_state)
    with pytest.raises(CheckpointError, match="no counterpart"):
        load_torchvision_retinanet_state_dict(model, {"roi_heads.box_predictor.weight": torch.zeros(1)})
