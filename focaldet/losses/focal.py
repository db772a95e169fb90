"""Focal loss (Lin et al., ICCV 2017, eq. 5) and its γ = 0 cases, BCE and α-balanced BCE (eq. 3).

With ``z_t = x`` for the positive element of an anchor and ``-x`` elsewhere, ``p_t = σ(z_t)``:

    FL = α_t (1 - p_t)^γ CE,   CE = -log p_t
    ∂FL/∂z_t = -α_t (1 - p_t)^γ (γ p_t CE + (1 - p_t)),   ∂z_t/∂x = ±1

α_t is α for positive elements and 1 - α for the others (``alpha=None``: 1 for both).
"""
from __future__ import annotations

import torch
from torch import Tensor

from focaldet.losses.base import SigmoidLoss
from focaldet.losses.checks import Range, as_normalizer
from focaldet.losses.fused import Compiler, sigmoid_loss, sigmoid_parts
from focaldet.losses.grad_stats import GradStats


def focal(x: Tensor, y: Tensor, t, *, alpha_pos, alpha_neg, gamma):
    """Elementwise ``(FL, ∂FL/∂x)``; ``alpha_*`` and ``gamma`` are numbers (see :mod:`.fused`)."""
    z = torch.where(y, x, -x)
    p, q, ce, _ = sigmoid_parts(z)  # p_t, 1 - p_t, CE
    w = q ** gamma
    loss = w * ce
    # d/dz [(1-p)^γ CE] written without (1-p)^(γ-1), so γ < 1 stays finite at p = 1
    dz = -w * (gamma * p * ce + q)
    # α_t multiplies each side (not torch.where(y, α, 1-α), which rounds Python numbers to float32)
    return torch.where(y, alpha_pos * loss, alpha_neg * loss), torch.where(y, alpha_pos * dz, -alpha_neg * dz)


def focal_loss(logits: Tensor, labels: Tensor, *, normalizer, gamma: float = 2.0, alpha: float | None = 0.25,
               grad_stats: GradStats | None = None, compiler: Compiler | None = None) -> Tensor:
    """Focal loss over ``logits (N, K)``, summed over non-ignored rows / ``normalizer``.

    ``grad_stats``: updated in backward with the per-class |gradient| sums. ``compiler``: runs the
    fused pass compiled (a loss module passes its own; None runs eagerly).
    """
    a_pos, a_neg = (1.0, 1.0) if alpha is None else (alpha, 1.0 - alpha)
    return sigmoid_loss(focal, logits, labels, norm=as_normalizer(normalizer, logits.device),
                        params=dict(alpha_pos=a_pos, alpha_neg=a_neg, gamma=gamma),
                        grad_stats=grad_stats, compiler=compiler)


def bce_loss(logits: Tensor, labels: Tensor, *, normalizer, grad_stats: GradStats | None = None,
             compiler: Compiler | None = None) -> Tensor:
    """Binary cross entropy ``CE(p_t)``: the focal loss with γ = 0 and no α."""
    return focal_loss(logits, labels, normalizer=normalizer, gamma=0.0, alpha=None, grad_stats=grad_stats,
                      compiler=compiler)


def balanced_bce_loss(logits: Tensor, labels: Tensor, *, normalizer, alpha: float = 0.75,
                      grad_stats: GradStats | None = None, compiler: Compiler | None = None) -> Tensor:
    """α-balanced cross entropy ``α_t CE(p_t)``: the focal loss with γ = 0."""
    return focal_loss(logits, labels, normalizer=normalizer, gamma=0.0, alpha=alpha, grad_stats=grad_stats,
                      compiler=compiler)


class FocalLoss(SigmoidLoss):
    name = "focal"

    ranges = {"gamma": Range(0), "alpha": Range(0, 1, allow_none=True)}

    def __init__(self, num_classes: int, track_grad_stats: bool = False, *, gamma: float = 2.0,
                 alpha: float | None = 0.25, compile: bool | None = None):
        super().__init__(num_classes, track_grad_stats, compile, gamma=gamma, alpha=alpha)

    def _loss(self, logits, labels, *, normalizer, quality):
        return focal_loss(logits, labels, normalizer=normalizer, grad_stats=self.grad_stats,
                          compiler=self.compiler, **self.params)


class BCELoss(SigmoidLoss):
    name = "bce"

    def __init__(self, num_classes: int, track_grad_stats: bool = False, *, compile: bool | None = None):
        super().__init__(num_classes, track_grad_stats, compile)

    def _loss(self, logits, labels, *, normalizer, quality):
        return bce_loss(logits, labels, normalizer=normalizer, grad_stats=self.grad_stats, compiler=self.compiler)


class BalancedBCELoss(SigmoidLoss):
    name = "balanced_bce"

    ranges = {"alpha": Range(0, 1)}

    def __init__(self, num_classes: int, track_grad_stats: bool = False, *, alpha: float = 0.75,
                 compile: bool | None = None):
        super().__init__(num_classes, track_grad_stats, compile, alpha=alpha)

    def _loss(self, logits, labels, *, normalizer, quality):
        return balanced_bce_loss(logits, labels, normalizer=normalizer, grad_stats=self.grad_stats,
                                 compiler=self.compiler, **self.params)
