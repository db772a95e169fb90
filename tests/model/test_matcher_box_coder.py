"""Matching and box coding against torchvision's Matcher / BoxCoder / box_iou and hand-made cases."""
import math

import pytest
import torch
from torchvision.models.detection._utils import BoxCoder as TVBoxCoder
from torchvision.models.detection._utils import Matcher as TVMatcher
from torchvision.ops import box_iou

from focaldet.model.box_coder import BoxCoder
from focaldet.model.matcher import Matcher, assign_targets, batched_box_iou

K = 5


def _random_boxes(n, g, size=200.0):
    xy = torch.rand(n, 2, generator=g) * size
    wh = torch.rand(n, 2, generator=g) * 80 + 4
    return torch.cat([xy, xy + wh], 1)


def test_batched_iou_equals_torchvision_box_iou():
    g = torch.Generator().manual_seed(0)
    gt = torch.stack([_random_boxes(6, g), _random_boxes(6, g)])
    anchors = _random_boxes(50, g)
    iou = batched_box_iou(gt, anchors)
    for b in range(2):
        assert torch.allclose(iou[b], box_iou(gt[b], anchors), atol=1e-6)


def test_labels_match_torchvision_matcher_per_image():
    g = torch.Generator().manual_seed(1)
    anchors = _random_boxes(400, g)
    targets = [{"boxes": _random_boxes(n, g), "labels": torch.randint(0, K, (n,), generator=g)} for n in (7, 3, 0)]
    labels, matched_boxes = assign_targets(anchors, targets, Matcher(0.5, 0.4, True), K)
    ref_matcher = TVMatcher(0.5, 0.4, allow_low_quality_matches=True)
    for b, t in enumerate(targets):
        if len(t["boxes"]) == 0:
            assert (labels[b] == K).all()  # an image without boxes: every anchor is background
            continue
        idx = ref_matcher(box_iou(t["boxes"], anchors))
        ref = torch.where(idx >= 0, t["labels"][idx.clamp(min=0)], torch.where(idx == -1, K, -1))
        assert torch.equal(labels[b], ref)
        pos = idx >= 0
        assert torch.equal(matched_boxes[b][pos], t["boxes"][idx[pos]])
        assert torch.equal(matched_boxes[b][~pos], anchors[~pos])  # finite stand-ins elsewhere
    assert (labels >= 0).logical_and(labels < K).any() and (labels == -1).any()


def test_ignore_band_and_thresholds():
    anchors = torch.tensor([[0., 0, 10, 10], [0, 0, 10, 12.4], [0, 0, 10, 22], [0, 0, 10, 30], [50, 50, 60, 60]])
    gt = torch.tensor([[0., 0, 10, 10]])
    # IoUs: 1, 10/12.4 = .806, 10/22 = .4545 (ignore), 10/30 = .333 (negative), 0 (negative)
    labels, _ = assign_targets(anchors, [{"boxes": gt, "labels": torch.tensor([3])}], Matcher(0.5, 0.4, True), K)
    assert labels[0].tolist() == [3, 3, -1, K, K]
    labels, _ = assign_targets(anchors, [{"boxes": gt, "labels": torch.tensor([3])}], Matcher(0.3, 0.3, True), K)
    assert labels[0].tolist() == [3, 3, 3, 3, K]


def test_low_quality_match_makes_best_anchor_positive():
    anchors = torch.tensor([[0., 0, 10, 10], [0, 0, 10, 30], [100, 100, 110, 110]])
    gt = torch.tensor([[0., 0, 10, 40]])  # IoU 0.25 with anchor 0, 0.75 with anchor 1
    small = torch.tensor([[0., 0, 4, 4]])  # IoU with anchor 0 = 16/100: below both thresholds
    t = [{"boxes": small, "labels": torch.tensor([2])}]
    on, _ = assign_targets(anchors, t, Matcher(0.5, 0.4, True), K)
    off, _ = assign_targets(anchors, t, Matcher(0.5, 0.4, False), K)
    assert on[0].tolist() == [2, K, K] and off[0].tolist() == [K, K, K]
    both = [{"boxes": torch.cat([gt, small]), "labels": torch.tensor([1, 2])}]
    labels, _ = assign_targets(anchors, both, Matcher(0.5, 0.4, True), K)
    # anchor 0 is positive (the small box's best), but matched to its own best box, the tall one
    # (IoU 0.25 > 0.16), as torchvision and detectron2 do
    assert labels[0].tolist() == [1, 1, K]


def test_crowd_region_is_ignored_but_real_objects_inside_stay_positive():
    anchors = torch.tensor([[0., 0, 10, 10], [0, 0, 10, 30], [100, 100, 110, 110], [200, 200, 210, 210]])
    t = [{"boxes": torch.tensor([[0., 0, 10, 10]]), "labels": torch.tensor([1]),
          "crowd_boxes": torch.tensor([[-5., -5, 120, 120]])}]
    labels, _ = assign_targets(anchors, t, Matcher(), K)
    assert labels[0].tolist() == [1, -1, -1, K]
    labels, _ = assign_targets(anchors, t, Matcher(), K, crowd_ioa_thresh=None)
    assert labels[0].tolist() == [1, K, K, K]


def test_box_coder_round_trip_and_torchvision_equivalence():
    g = torch.Generator().manual_seed(2)
    anchors, boxes = _random_boxes(100, g), _random_boxes(100, g)
    coder = BoxCoder()
    deltas = coder.encode(boxes, anchors)
    assert torch.allclose(coder.decode(deltas, anchors), boxes, atol=1e-3)
    ref = TVBoxCoder((1.0, 1.0, 1.0, 1.0))
    assert torch.allclose(deltas, ref.encode_single(boxes, anchors), atol=1e-5)
    assert torch.allclose(coder.decode(deltas, anchors), ref.decode_single(deltas, anchors), atol=1e-3)
    # float64 formula: dx = (cx_b − cx_a)/w_a, dw = log(w_b/w_a)
    a, b = anchors.double(), boxes.double()
    dx = ((b[:, 0] + b[:, 2]) / 2 - (a[:, 0] + a[:, 2]) / 2) / (a[:, 2] - a[:, 0])
    dw = torch.log((b[:, 2] - b[:, 0]) / (a[:, 2] - a[:, 0]))
    assert torch.allclose(deltas[:, 0].double(), dx, atol=1e-5) and torch.allclose(deltas[:, 2].double(), dw, atol=1e-5)


def test_box_coder_clamps_dw_dh():
    coder = BoxCoder()
    anchor = torch.tensor([[0., 0, 16, 16]])
    box = coder.decode(torch.tensor([[0., 0, 50.0, 1e4]]), anchor)
    assert torch.isfinite(box).all()
    # clamped at log(1000/16): a 16 px anchor can grow to at most 1000 px
    assert box[0, 2] - box[0, 0] == pytest.approx(1000.0, rel=1e-5)
    assert box[0, 3] - box[0, 1] == pytest.approx(1000.0, rel=1e-5)
    assert coder.clamp == pytest.approx(math.log(1000 / 16))
