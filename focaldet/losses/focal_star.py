"""FL* (focal-loss paper, Appendix A): a focal-like loss from a shifted, scaled logit.

With ``z_t = ±x`` as in :mod:`.focal` and ``u = γ z_t + β``:

    FL* = α_t · -log σ(u) / γ = α_t softplus(-u) / γ
    ∂FL*/∂z_t = -α_t σ(-u),   ∂z_t/∂x = ±1
"""
from __future__ import annotations

import torch
from torch import Tensor

from focaldet.losses.base import SigmoidLoss
from focaldet.losses.checks import Range, as_normalizer
from focaldet.losses.fused import Compiler, sigmoid_loss, sigmoid_parts
from focaldet.losses.grad_stats import GradStats


def focal_star(x: Tensor, y: Tensor, t, *, alpha_pos, alpha_neg, gamma, beta):
    """Elementwise ``(FL*, ∂FL*/∂x)``."""
    z = torch.where(y, x, -x)
    _, q_u, ce_u, _ = sigmoid_parts(gamma * z + beta)  # σ(-u), softplus(-u)
    loss = ce_u / gamma
    dz = -q_u
    return torch.where(y, alpha_pos * loss, alpha_neg * loss), torch.where(y, alpha_pos * dz, -alpha_neg * dz)


def focal_star_loss(logits: Tensor, labels: Tensor, *, normalizer, gamma: float = 2.0, beta: float = 1.0,
                    alpha: float = 0.25, grad_stats: GradStats | None = None,
                    compiler: Compiler | None = None) -> Tensor:
    """FL* over ``logits (N, K)``."""
    return sigmoid_loss(focal_star, logits, labels, norm=as_normalizer(normalizer, logits.device),
                        params=dict(alpha_pos=alpha, alpha_neg=1.0 - alpha, gamma=gamma, beta=beta),
                        grad_stats=grad_stats, compiler=compiler)


class FocalStarLoss(SigmoidLoss):
    name = "focal_star"

    ranges = {"gamma": Range(0, low_open=True), "beta": Range(), "alpha": Range(0, 1)}

    def __init__(self, num_classes: int, track_grad_stats: bool = False, *, gamma: float = 2.0,
                 beta: float = 1.0, alpha: float = 0.25, compile: bool | None = None):
        super().__init__(num_classes, track_grad_stats, compile, gamma=gamma, beta=beta, alpha=alpha)

    def _loss(self, logits, labels, *, normalizer, quality):
        return focal_star_loss(logits, labels, normalizer=normalizer, grad_stats=self.grad_stats,
                               compiler=self.compiler, **self.params)
