"""Softmax-family baselines (docs/spec.md §2): cross entropy over ``K + 1`` outputs (background at index
``K``) with optional label smoothing, OHEM and random sampling per image.

Same call convention as the sigmoid family, with ``logits (N, K+1)``; labels 0..K-1 foreground, K
background, -1 ignored. ``ohem`` and ``sampled`` select anchors per image via ``batch_index (N,)``
(all rows one image when it is None), vectorised with sorting, no per-image loop. The result is the
sum over the selected rows divided by ``normalizer``. These losses have no gradient statistics
(``grad_stats`` is None; ``track_grad_stats`` and ``compile`` are accepted and ignored, see
:class:`~focaldet.losses.base.LossModule`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from focaldet.losses.base import SoftmaxLoss
from focaldet.losses.checks import Range, as_normalizer
from focaldet.losses.fused import compute_dtype


def _cross_entropy(logits: Tensor, labels: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Per-row CE in float32 (autocast off); 0 for ignored rows. ``(N,)``"""
    with torch.autocast(logits.device.type, enabled=False):
        return F.cross_entropy(logits.to(compute_dtype(logits)), labels.long(), ignore_index=-1,
                               reduction="none", label_smoothing=label_smoothing)


def _rank_in_group(group: Tensor, key: Tensor) -> Tensor:
    """Rank of each element within its group when sorted by ``key`` descending (0 = largest)."""
    order = torch.argsort(key, descending=True, stable=True)
    order = order[torch.argsort(group[order], stable=True)]
    sorted_group = group[order]
    counts = torch.bincount(sorted_group)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device) - starts[sorted_group]
    return rank


def softmax_ce_loss(logits: Tensor, labels: Tensor, *, normalizer, label_smoothing: float = 0.0) -> Tensor:
    """``(1-ε) H(q, p) + ε H(u, p)`` summed over non-ignored rows / normalizer."""
    norm = as_normalizer(normalizer, logits.device)
    return _cross_entropy(logits, labels, label_smoothing).sum() / norm


def ohem_loss(logits: Tensor, labels: Tensor, *, normalizer, neg_pos_ratio: float = 3.0,
              batch_index: Tensor | None = None) -> Tensor:
    """CE on every positive plus, per image, the ``neg_pos_ratio × (positives in the image)``
    highest-loss background rows (an image without positives contributes no negatives, as in SSD)."""
    norm = as_normalizer(normalizer, logits.device)
    K = logits.shape[1] - 1
    ce = _cross_entropy(logits, labels)
    image = torch.zeros_like(labels) if batch_index is None else batch_index.long()
    pos = (labels >= 0) & (labels < K)
    neg = labels == K
    num_images = int(image.max()) + 1 if image.numel() else 1
    quota = neg_pos_ratio * torch.bincount(image[pos], minlength=num_images).to(ce.dtype)
    neg_idx = neg.nonzero().squeeze(1)
    rank = _rank_in_group(image[neg_idx], ce.detach()[neg_idx])
    keep_neg = neg_idx[rank.to(ce.dtype) < quota[image[neg_idx]]]
    return (ce[pos].sum() + ce[keep_neg].sum()) / norm


def sampled_loss(logits: Tensor, labels: Tensor, *, normalizer, batch_size_per_image: int = 256,
                 positive_fraction: float = 0.25, batch_index: Tensor | None = None) -> Tensor:
    """CE on a random sample per image (Faster R-CNN): up to ``positive_fraction × batch`` positives,
    negatives filling the rest. Uses torch's global RNG (seeded by the engine)."""
    norm = as_normalizer(normalizer, logits.device)
    K = logits.shape[1] - 1
    ce = _cross_entropy(logits, labels)
    image = torch.zeros_like(labels) if batch_index is None else batch_index.long()
    pos = (labels >= 0) & (labels < K)
    neg = labels == K
    num_images = int(image.max()) + 1 if image.numel() else 1
    num_pos = torch.bincount(image[pos], minlength=num_images)
    num_neg = torch.bincount(image[neg], minlength=num_images)
    pos_quota = torch.clamp(num_pos, max=int(batch_size_per_image * positive_fraction))
    neg_quota = torch.clamp(batch_size_per_image - pos_quota, max=num_neg)
    cand = (pos | neg).nonzero().squeeze(1)
    is_pos = pos[cand].long()
    group = image[cand] * 2 + is_pos  # (image, positive?) groups
    rank = _rank_in_group(group, torch.rand(cand.numel(), device=logits.device))
    quota = torch.stack([neg_quota, pos_quota], 1).flatten()  # index image*2 + is_pos
    keep = cand[rank < quota[group]]
    return ce[keep].sum() / norm


class SoftmaxCELoss(SoftmaxLoss):
    name = "softmax_ce"

    ranges = {"label_smoothing": Range(0, 1)}

    def __init__(self, num_classes: int, track_grad_stats: bool = False, *, label_smoothing: float = 0.0,
                 compile: bool | None = None):
        super().__init__(num_classes, track_grad_stats, compile, label_smoothing=label_smoothing)

    def _loss(self, logits, labels, *, normalizer, batch_index):
        return softmax_ce_loss(logits, labels, normalizer=normalizer, **self.params)


class OHEMLoss(SoftmaxLoss):
    name = "ohem"

    ranges = {"neg_pos_ratio": Range(0)}

    def __init__(self, num_classes: int, track_grad_stats: bool = False, *, neg_pos_ratio: float = 3.0,
                 compile: bool | None = None):
        super().__init__(num_classes, track_grad_stats, compile, neg_pos_ratio=neg_pos_ratio)

    def _loss(self, logits, labels, *, normalizer, batch_index):
        return ohem_loss(logits, labels, normalizer=normalizer, batch_index=batch_index, **self.params)


class SampledLoss(SoftmaxLoss):
    name = "sampled"

    ranges = {"batch_size_per_image": Range(1, integer=True), "positive_fraction": Range(0, 1)}

    def __init__(self, num_classes: int, track_grad_stats: bool = False, *, batch_size_per_image: int = 256,
                 positive_fraction: float = 0.25, compile: bool | None = None):
        super().__init__(num_classes, track_grad_stats, compile, batch_size_per_image=batch_size_per_image,
                         positive_fraction=positive_fraction)

    def _loss(self, logits, labels, *, normalizer, batch_index):
        return sampled_loss(logits, labels, normalizer=normalizer, batch_index=batch_index, **self.params)
