"""Quality focal loss, QFL (Li et al., Generalized Focal Loss, NeurIPS 2020).

With ``p = σ(x)`` and the soft target ``t`` (the IoU quality of a positive element, 0 elsewhere):

    QFL = |t - p|^β · BCE(p, t),   BCE(p, t) = -(t log p + (1-t) log(1-p)) = softplus(x) - t x
    ∂QFL/∂x = β |t - p|^(β-1) sign(p - t) p (1-p) · BCE + |t - p|^β (p - t)
"""
from __future__ import annotations

import torch
from torch import Tensor

from focaldet.losses.base import SigmoidLoss
from focaldet.losses.checks import Range, as_normalizer
from focaldet.losses.fused import Compiler, sigmoid_loss, sigmoid_parts
from focaldet.losses.grad_stats import GradStats


def quality_focal(x: Tensor, y: Tensor, t, *, beta):
    """Elementwise ``(QFL, ∂QFL/∂x)``; ``t`` is already 0 off the positive elements."""
    p, q, _, softplus_x = sigmoid_parts(x)  # p, 1 - p, -log(1 - p)
    bce = softplus_x - t * x
    d = p - t
    ad = d.abs()
    mod = ad ** beta
    # the derivative of |d|^β is taken as 0 where d = 0 (finite for β < 1 too)
    dmod = torch.where(ad > 0, beta * ad ** (beta - 1.0) * torch.sign(d), 0.0) * (p * q)
    return mod * bce, dmod * bce + mod * d


def quality_focal_loss(logits: Tensor, labels: Tensor, *, normalizer, quality: Tensor, beta: float = 2.0,
                       grad_stats: GradStats | None = None, compiler: Compiler | None = None) -> Tensor:
    """QFL over ``logits (N, K)``; soft target ``quality[row]`` (``(N,)`` in [0, 1]) on the positive
    element of a positive row, 0 elsewhere."""
    return sigmoid_loss(quality_focal, logits, labels, norm=as_normalizer(normalizer, logits.device),
                        params=dict(beta=beta), quality=quality, grad_stats=grad_stats, compiler=compiler)


class QualityFocalLoss(SigmoidLoss):
    name = "quality_focal"
    needs_quality = True

    ranges = {"beta": Range(0)}

    def __init__(self, num_classes: int, track_grad_stats: bool = False, *, beta: float = 2.0,
                 compile: bool | None = None):
        super().__init__(num_classes, track_grad_stats, compile, beta=beta)

    def _loss(self, logits, labels, *, normalizer, quality):
        return quality_focal_loss(logits, labels, normalizer=normalizer, quality=quality,
                                  grad_stats=self.grad_stats, compiler=self.compiler, **self.params)
