"""Inference post-processing (SPEC §4 "Inference"): threshold, top-k per level, decode, NMS, top-N."""
from __future__ import annotations

from typing import Sequence

import torch
from torchvision.ops import batched_nms

from focaldet.model.box_coder import BoxCoder


def postprocess_detections(cls_logits: torch.Tensor, box_deltas: torch.Tensor, anchors: Sequence[torch.Tensor],
                           image_sizes: Sequence[tuple[int, int]], box_coder: BoxCoder, *, softmax: bool = False,
                           score_thresh: float = 0.05, topk_candidates: int = 1000, nms_thresh: float = 0.5,
                           detections_per_img: int = 100) -> list[dict[str, torch.Tensor]]:
    """Turn head outputs into detections.

    Args:
        cls_logits: ``(B, N, C)`` (C = K, or K + 1 with background last when ``softmax``).
        box_deltas: ``(B, N, 4)``.
        anchors: per level ``(N_l, 4)`` with Σ N_l = N, xyxy pixels.
        image_sizes: (h, w) of each image's valid region; boxes are clipped to it.
    Returns:
        per image ``boxes (k, 4)`` float32 xyxy pixels, ``scores (k,)``, ``labels (k,)`` int64, sorted by
        score, k ≤ ``detections_per_img``.

    Per level, every (anchor, class) pair with score > ``score_thresh`` competes for the top
    ``topk_candidates``; only those are decoded. This runs batched over images; only the
    class-wise NMS runs per image (torchvision's ``batched_nms``, exactly as torchvision's RetinaNet).
    """
    B = cls_logits.shape[0]
    if softmax:
        scores_all = torch.softmax(cls_logits.float(), dim=-1)[..., :-1]
    else:
        scores_all = torch.sigmoid(cls_logits.float())
    K = scores_all.shape[-1]
    boxes_l, scores_l, labels_l = [], [], []
    start = 0
    for anchors_l in anchors:
        n = anchors_l.shape[0]
        scores = scores_all[:, start:start + n].reshape(B, n * K)
        deltas = box_deltas[:, start:start + n].float()
        start += n
        k = min(topk_candidates, n * K)
        # below-threshold pairs get -1 so they sort last and are dropped after top-k
        top_scores, top_idx = scores.masked_fill(scores <= score_thresh, -1.0).topk(k, dim=1)
        anchor_idx = torch.div(top_idx, K, rounding_mode="floor")
        boxes = box_coder.decode(torch.gather(deltas, 1, anchor_idx[..., None].expand(B, k, 4)), anchors_l[anchor_idx])
        boxes_l.append(boxes)
        scores_l.append(top_scores)
        labels_l.append(top_idx % K)
    boxes = torch.cat(boxes_l, dim=1)
    scores = torch.cat(scores_l, dim=1)
    labels = torch.cat(labels_l, dim=1)
    sizes = torch.tensor(image_sizes, dtype=boxes.dtype, device=boxes.device)  # (B, 2) as (h, w)
    max_xy = sizes.flip(1).repeat(1, 2)[:, None, :]  # (B, 1, 4): w, h, w, h
    boxes = torch.minimum(boxes.clamp(min=0), max_xy)
    results = []
    for i in range(B):
        keep = scores[i] > score_thresh
        b, s, l = boxes[i][keep], scores[i][keep], labels[i][keep]
        kept = batched_nms(b, s, l, nms_thresh)[:detections_per_img]
        results.append({"boxes": b[kept], "scores": s[kept], "labels": l[kept]})
    return results
