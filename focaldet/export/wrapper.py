"""Export wrappers: a trained :class:`~focaldet.model.retinanet.RetinaNet` as one traceable module.

The wrappers call the model's own ``backbone``, ``fpn``, ``head`` and ``box_coder``
(so the exported network is the trained one, not a copy) and replace only the two parts whose
eager form does not trace: the normalisation (a Python loop over the batch's sizes), the anchor cache (Python dict keyed by grid size) and the per-image
post-processing loop (boolean indexing, a different number of boxes per image). See
``docs/export.md`` for the input / output contract.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import nms


class _Network(nn.Module):
    """Backbone → FPN → head of ``model``, plus the anchors of the actual feature-map sizes."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        gen = model.anchor_generator
        self.strides = list(gen.strides)
        # float64 cell anchors, as the eager generator keeps them, so the grid adds up exactly
        for level, cells in enumerate(gen.cells):
            self.register_buffer(f"cells_{level}", cells.clone(), persistent=False)

    def level_anchors(self, level: int, feature: torch.Tensor) -> torch.Tensor:
        """``(h·w·A, 4)`` float32 anchors of one level: location-major (y, then x), anchor-minor,
        centred at (x·stride, y·stride); built in float64 then cast, as the eager generator does."""
        h, w = feature.shape[-2], feature.shape[-1]
        stride = self.strides[level]
        cells = getattr(self, f"cells_{level}")
        xs = torch.arange(w, device=feature.device, dtype=torch.float64) * stride
        ys = torch.arange(h, device=feature.device, dtype=torch.float64) * stride
        sx = xs[None, :].expand(h, w)
        sy = ys[:, None].expand(h, w)
        shifts = torch.stack([sx, sy, sx, sy], dim=-1).reshape(-1, 1, 4)
        return (shifts + cells[None]).reshape(-1, 4).to(torch.float32)

    def normalize(self, images: torch.Tensor, image_sizes: torch.Tensor) -> torch.Tensor:
        """The model's normalisation (ImageNet mean/std, padding zeroed after it, size rounded up
        to a multiple of the model's ``size_divisibility``) written with tensor ops only, so the batch size and the image sizes
        stay inputs of the exported graph instead of being traced as constants."""
        x = (images - self.model.pixel_mean) / self.model.pixel_std
        H, W = x.shape[-2], x.shape[-1]
        sizes = image_sizes.reshape(-1, 2).to(x.device)
        rows = torch.arange(H, device=x.device)[None, :, None] < sizes[:, 0, None, None]
        cols = torch.arange(W, device=x.device)[None, None, :] < sizes[:, 1, None, None]
        x = x * (rows & cols)[:, None].to(x.dtype)
        d = self.model.size_divisibility
        return F.pad(x, (0, (-W) % d, 0, (-H) % d))

    def forward(self, images: torch.Tensor, image_sizes: torch.Tensor):
        """``images (B, 3, H, W)``, ``image_sizes (B, 2)`` → ``cls_logits (B, N, C)``,
        ``box_deltas (B, N, 4)``, per-level anchors ``[(N_l, 4)]``."""
        x = self.normalize(images, image_sizes)
        features = self.model.fpn(self.model.backbone(x))
        cls_logits, box_deltas = self.model.head(features)
        anchors = [self.level_anchors(i, f) for i, f in enumerate(features)]
        return cls_logits.float(), box_deltas.float(), anchors


class RawExport(nn.Module):
    """Network outputs without post-processing (``--raw``).

    ``forward(images (B, 3, H, W) float32 RGB in [0, 1], image_sizes (B, 2) int64 (h, w))`` →
    ``cls_logits (B, N, C)`` float32, ``box_deltas (B, N, 4)`` float32 (dx, dy, dw, dh),
    ``anchors (N, 4)`` float32 xyxy pixels of the padded input.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.net = _Network(model)

    def forward(self, images: torch.Tensor, image_sizes: torch.Tensor):
        cls_logits, box_deltas, anchors = self.net(images, image_sizes)
        return cls_logits, box_deltas, torch.cat(anchors, dim=0)


class DetectionExport(nn.Module):
    """Network plus the full post-processing of ``postprocess_detections`` (docs/spec.md §4 "Inference")
    with a fixed output size.

    ``forward(images (B, 3, H, W) float32 RGB in [0, 1], image_sizes (B, 2) int64 (h, w))`` →
    ``boxes (B, D, 4)`` float32 xyxy pixels of the input, ``scores (B, D)`` float32,
    ``labels (B, D)`` int64 in ``0..K-1``, ``num_detections (B,)`` int64; D =
    ``detections_per_img``. Row ``j < num_detections[i]`` is a detection, sorted by score; the
    rows after it are padding (boxes 0, score 0, label −1).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.net = _Network(model)
        self.softmax = bool(model.softmax)
        self.score_thresh = float(model.score_thresh)
        self.topk_candidates = int(model.topk_candidates)
        self.nms_thresh = float(model.nms_thresh)
        self.detections_per_img = int(model.detections_per_img)
        self.box_coder = model.box_coder

    def candidates(self, cls_logits: torch.Tensor, box_deltas: torch.Tensor, anchors: list[torch.Tensor]):
        """Per level, the top ``topk_candidates`` (anchor, class) pairs by score, decoded.
        Returns ``boxes (B, M, 4)``, ``scores (B, M)`` (−1 below the threshold), ``labels (B, M)``."""
        if self.softmax:
            scores_all = torch.softmax(cls_logits, dim=-1)[..., :-1]
        else:
            scores_all = torch.sigmoid(cls_logits)
        K = scores_all.shape[-1]
        k = self.topk_candidates
        boxes_l, scores_l, labels_l = [], [], []
        start = 0
        for anchors_l in anchors:
            n = anchors_l.shape[0]
            scores = scores_all[:, start:start + n].flatten(1)
            deltas = box_deltas[:, start:start + n]
            start += n
            # pad with k entries of −1 so top-k needs no min(k, n·K) of a traced size; the pads,
            # like the pairs below the threshold, have score −1 and are dropped below
            scores = scores.masked_fill(scores <= self.score_thresh, -1.0)
            scores = torch.cat([scores, torch.full_like(scores[:, :1], -1.0).expand(-1, k)], dim=1)
            top_scores, top_idx = scores.topk(k, dim=1)
            anchor_idx = torch.div(top_idx, K, rounding_mode="floor").clamp(max=n - 1)
            picked = torch.gather(deltas, 1, anchor_idx[..., None].expand(-1, -1, 4))
            boxes_l.append(self.box_coder.decode(picked, anchors_l[anchor_idx]))
            scores_l.append(top_scores)
            labels_l.append(top_idx % K)
        return torch.cat(boxes_l, dim=1), torch.cat(scores_l, dim=1), torch.cat(labels_l, dim=1)

    def forward(self, images: torch.Tensor, image_sizes: torch.Tensor):
        cls_logits, box_deltas, anchors = self.net(images, image_sizes)
        boxes, scores, labels = self.candidates(cls_logits, box_deltas, anchors)
        sizes = image_sizes.to(boxes.dtype)  # (B, 2) as (h, w)
        max_xy = sizes.flip(1).repeat(1, 2)[:, None, :]  # (B, 1, 4): w, h, w, h
        boxes = torch.minimum(boxes.clamp(min=0), max_xy)
        return self.select(boxes, scores, labels, sizes)

    def select(self, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, sizes: torch.Tensor):
        """Class-wise NMS per image in one ``nms`` call, then the top D per image.

        Boxes of different classes are shifted apart along x, those of different images along y,
        by more than any clipped coordinate (torchvision's ``batched_nms`` shifts classes the
        same way), so one NMS over the whole batch is NMS per (image, class). Candidates below
        the threshold score −1: lower than any kept box, they suppress nothing.
        """
        B, M = scores.shape
        D = self.detections_per_img
        span = sizes.max() + 1
        image_idx = torch.arange(B, device=boxes.device)[:, None].expand(B, M)
        shift_x = labels.to(boxes.dtype) * span
        shift_y = image_idx.to(boxes.dtype) * span
        shift = torch.stack([shift_x, shift_y, shift_x, shift_y], dim=-1)
        flat_boxes = boxes.reshape(-1, 4)
        flat_scores = scores.reshape(-1)
        keep = nms((boxes + shift).reshape(-1, 4), flat_scores, self.nms_thresh)  # (S,) by score
        kept_scores = flat_scores[keep]
        mine = (torch.div(keep, M, rounding_mode="floor")[None, :] == image_idx[:, :1]) & (
            kept_scores[None, :] > self.score_thresh)
        ranked = torch.where(mine, kept_scores[None, :], torch.full_like(kept_scores[None, :], -1.0))
        ranked = torch.cat([ranked, torch.full_like(ranked[:, :1], -1.0).expand(B, D)], dim=1)
        keep = torch.cat([keep, torch.zeros_like(keep[:1]).expand(D)])
        top_scores, top_pos = ranked.topk(D, dim=1)  # (B, D)
        index = keep[top_pos]
        valid = top_scores > self.score_thresh
        det_boxes = torch.where(valid[..., None], flat_boxes[index], torch.zeros_like(flat_boxes[index]))
        det_scores = torch.where(valid, top_scores, torch.zeros_like(top_scores))
        det_labels = torch.where(valid, labels.reshape(-1)[index], torch.full_like(index, -1))
        return det_boxes, det_scores, det_labels, valid.sum(dim=1)
