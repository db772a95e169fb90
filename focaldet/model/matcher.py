"""Anchor-to-ground-truth assignment for a whole batch at once (docs/spec.md §4 "Matching").

Ground truths are padded to the largest count in the batch so one batched IoU ``(B, M, A)`` and a
few reductions label every anchor of every image; no per-image or per-anchor Python in this path.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch.nn.utils.rnn import pad_sequence

IGNORE = -1  # label value the losses skip


def batched_box_iou(boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """IoU of ``boxes (B, M, 4)`` with ``anchors (A, 4)``, xyxy → ``(B, M, A)``."""
    inter = _intersection(boxes, anchors)
    area_b = (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)
    area_a = (anchors[:, 2] - anchors[:, 0]) * (anchors[:, 3] - anchors[:, 1])
    union = area_b[..., None] + area_a - inter
    return inter / union.clamp(min=1e-9)


def batched_ioa(boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Fraction of each anchor's area inside each box: ``(B, M, 4)``, ``(A, 4)`` → ``(B, M, A)``."""
    area_a = (anchors[:, 2] - anchors[:, 0]) * (anchors[:, 3] - anchors[:, 1])
    return _intersection(boxes, anchors) / area_a.clamp(min=1e-9)


def _intersection(boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    # coordinate by coordinate keeps the temporaries at (B, M, A) instead of (B, M, A, 2)
    iw = torch.minimum(boxes[..., 2, None], anchors[:, 2]) - torch.maximum(boxes[..., 0, None], anchors[:, 0])
    ih = torch.minimum(boxes[..., 3, None], anchors[:, 3]) - torch.maximum(boxes[..., 1, None], anchors[:, 1])
    return iw.clamp_(min=0).mul_(ih.clamp_(min=0))


def pad_boxes(boxes: Sequence[torch.Tensor], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """List of ``(n_i, 4)`` → padded ``(B, M, 4)`` float32 and validity mask ``(B, M)``."""
    padded = pad_sequence([b.to(device=device, dtype=torch.float32).reshape(-1, 4) for b in boxes], batch_first=True)
    # built on the device from shapes alone: no host-to-device copy (a sync on CUDA)
    valid = pad_sequence([torch.ones(b.numel() // 4, dtype=torch.bool, device=device) for b in boxes], batch_first=True)
    return padded, valid


class Matcher:
    """IoU matching with an ignore band and low-quality matches (detectron2 / torchvision rules).

    ``__call__(iou (B, M, A), valid (B, M)) -> (matched (B, A) int64, state (B, A) int8)``:
    ``matched`` is the index of each anchor's best ground truth (0 where there is none);
    ``state`` is 1 positive, 0 negative, −1 ignored. IoU ≥ ``fg_thresh`` → positive,
    < ``bg_thresh`` → negative, in between ignored; with ``allow_low_quality_matches`` the anchors
    that have a ground truth's highest IoU (ties included, IoU > 0) are positive too, matched to their
    own best ground truth as torchvision and detectron2 do.
    """

    def __init__(self, fg_thresh: float = 0.5, bg_thresh: float = 0.4, allow_low_quality_matches: bool = True):
        if bg_thresh > fg_thresh:
            raise ValueError(f"bg_thresh {bg_thresh} must not exceed fg_thresh {fg_thresh}")
        self.fg_thresh = fg_thresh
        self.bg_thresh = bg_thresh
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, iou: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, M, A = iou.shape
        if M == 0:
            return (torch.zeros(B, A, dtype=torch.long, device=iou.device),
                    torch.zeros(B, A, dtype=torch.int8, device=iou.device))
        iou = iou.masked_fill(~valid[..., None], -1.0)  # padding never matches
        best_iou, matched = iou.max(dim=1)  # (B, A)
        # torch.where, not boolean-mask assignment: the latter calls nonzero (a host sync on CUDA)
        positive = best_iou >= self.fg_thresh
        if self.allow_low_quality_matches:
            best_per_gt = iou.max(dim=2, keepdim=True).values  # (B, M, 1)
            positive |= ((iou == best_per_gt) & (best_per_gt > 0)).any(dim=1)  # (B, A)
        state = torch.where(positive, 1, torch.where(best_iou >= self.bg_thresh, -1, 0)).to(torch.int8)
        return matched, state


def assign_targets(anchors: torch.Tensor, targets: Sequence[dict], matcher: Matcher, num_classes: int,
                   crowd_ioa_thresh: Optional[float] = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Classification labels and matched boxes for every anchor of every image.

    Args:
        anchors: ``(A, 4)`` float32 xyxy, all levels concatenated.
        targets: per image ``boxes (n, 4)`` xyxy pixels, ``labels (n,)`` int64 in [0, K),
            optional ``crowd_boxes (m, 4)``.
    Returns:
        labels ``(B, A)`` int64: class in [0, K) for positives, K for background, −1 ignored
        (ignore band, and non-positive anchors with more than ``crowd_ioa_thresh`` of their area
        inside a crowd box); matched_boxes ``(B, A, 4)`` float32: the matched ground truth of each
        positive, the anchor itself elsewhere (so deltas and IoUs stay finite everywhere).
    """
    device = anchors.device
    gt_boxes, valid = pad_boxes([t["boxes"] for t in targets], device)
    gt_labels = pad_sequence([t["labels"].to(device=device, dtype=torch.long).reshape(-1) for t in targets],
                             batch_first=True)
    B, A = len(targets), anchors.shape[0]
    if gt_boxes.shape[1] == 0:
        labels = torch.full((B, A), num_classes, dtype=torch.long, device=device)
        matched_boxes = anchors.expand(B, A, 4)
    else:
        matched, state = matcher(batched_box_iou(gt_boxes, anchors), valid)
        labels = torch.gather(gt_labels, 1, matched)
        labels = torch.where(state == 1, labels, torch.where(state == 0, num_classes, IGNORE))
        matched_boxes = torch.gather(gt_boxes, 1, matched[..., None].expand(B, A, 4))
        matched_boxes = torch.where((state == 1)[..., None], matched_boxes, anchors)
    if crowd_ioa_thresh is not None and any("crowd_boxes" in t and t["crowd_boxes"].numel() for t in targets):
        crowd, crowd_valid = pad_boxes([t.get("crowd_boxes", anchors.new_zeros(0, 4)) for t in targets], device)
        ioa = batched_ioa(crowd, anchors).masked_fill_(~crowd_valid[..., None], 0.0)
        in_crowd = ioa.amax(dim=1) > crowd_ioa_thresh
        # a real object inside a crowd region stays positive; only background/ignored anchors drop out
        labels = torch.where(in_crowd & (labels == num_classes), IGNORE, labels)
    return labels, matched_boxes
