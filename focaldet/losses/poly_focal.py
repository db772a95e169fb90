"""Poly-1 focal loss (Leng et al., ICLR 2022): the focal loss plus ``ε (1-p_t)^(γ+1)``.

With ``z_t = ±x``, ``p_t = σ(z_t)`` and CE as in :mod:`.focal`:

    PolyFL = α_t (1-p_t)^γ CE + ε (1-p_t)^(γ+1)      (α_t weights only the focal term)
    ∂PolyFL/∂z_t = -α_t (1-p_t)^γ (γ p_t CE + (1-p_t)) - ε (γ+1) p_t (1-p_t)^(γ+1),   ∂z_t/∂x = ±1

ε < 0 is allowed (down to -1, below which the loss is unbounded below); a negative element's
gradient can then be negative.
"""
from __future__ import annotations

import torch
from torch import Tensor

from focaldet.losses.base import SigmoidLoss
from focaldet.losses.checks import Range, as_normalizer
from focaldet.losses.fused import Compiler, sigmoid_loss, sigmoid_parts
from focaldet.losses.grad_stats import GradStats


def poly_focal(x: Tensor, y: Tensor, t, *, alpha_pos, alpha_neg, gamma, epsilon):
    """Elementwise ``(PolyFL, ∂PolyFL/∂x)``."""
    z = torch.where(y, x, -x)
    p, q, ce, _ = sigmoid_parts(z)  # p_t, 1 - p_t, CE
    w = q ** gamma
    fl, dfl = w * ce, -w * (gamma * p * ce + q)
    poly, dpoly = epsilon * w * q, -epsilon * (gamma + 1.0) * p * w * q
    loss = torch.where(y, alpha_pos * fl, alpha_neg * fl) + poly
    dz = torch.where(y, alpha_pos * dfl, alpha_neg * dfl) + dpoly
    return loss, torch.where(y, dz, -dz)


def poly_focal_loss(logits: Tensor, labels: Tensor, *, normalizer, gamma: float = 2.0, alpha: float = 0.25,
                    epsilon: float = 1.0, grad_stats: GradStats | None = None,
                    compiler: Compiler | None = None) -> Tensor:
    """Poly-1 focal loss over ``logits (N, K)``."""
    return sigmoid_loss(poly_focal, logits, labels, norm=as_normalizer(normalizer, logits.device),
                        params=dict(alpha_pos=alpha, alpha_neg=1.0 - alpha, gamma=gamma, epsilon=epsilon),
                        grad_stats=grad_stats, compiler=compiler)


class PolyFocalLoss(SigmoidLoss):
    name = "poly_focal"

    ranges = {"gamma": Range(0), "alpha": Range(0, 1), "epsilon": Range(-1)}

    def __init__(self, num_classes: int, track_grad_stats: bool = False, *, gamma: float = 2.0,
                 alpha: float = 0.25, epsilon: float = 1.0, compile: bool | None = None):
        super().__init__(num_classes, track_grad_stats, compile, gamma=gamma, alpha=alpha, epsilon=epsilon)

    def _loss(self, logits, labels, *, normalizer, quality):
        return poly_focal_loss(logits, labels, normalizer=normalizer, grad_stats=self.grad_stats,
                               compiler=self.compiler, **self.params)
