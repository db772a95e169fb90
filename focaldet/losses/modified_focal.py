"""Modified focal loss: the focal loss with the weight ``((1-p_t)/p_t)^γ = exp(-γ z_t)``.

With ``z_t = ±x`` and ``p_t = σ(z_t)`` as in :mod:`.focal`:

    MFL = α_t w CE,   w = exp(-γ z_t) (capped at ``max_weight``),   CE = -log p_t
    ∂MFL/∂z_t = α_t w (-γ CE - (1 - p_t)),   ∂z_t/∂x = ±1

The weight grows like ``exp(γ|x|)`` for hard examples: uncapped it overflows float32 once
``γ·|x| > ~88.7`` (|x| > 44 at γ = 2), and value and gradient become inf, faithfully.
``max_weight`` caps it; where the cap binds the weight is a constant, so its derivative is dropped.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from focaldet.losses.base import SigmoidLoss
from focaldet.losses.checks import Range, as_normalizer
from focaldet.losses.fused import Compiler, sigmoid_loss, sigmoid_parts
from focaldet.losses.grad_stats import GradStats


def modified_focal(x: Tensor, y: Tensor, t, *, alpha_pos, alpha_neg, gamma, log_max_weight):
    """Elementwise ``(MFL, ∂MFL/∂x)``; ``log_max_weight = inf`` leaves the weight uncapped."""
    z = torch.where(y, x, -x)
    _, q, ce, _ = sigmoid_parts(z)  # 1 - p_t, CE
    log_w = -gamma * z
    capped = log_w > log_max_weight
    w = torch.exp(torch.clamp(log_w, max=log_max_weight))
    loss = w * ce
    dz = w * (torch.where(capped, 0.0, -gamma * ce) - q)
    return torch.where(y, alpha_pos * loss, alpha_neg * loss), torch.where(y, alpha_pos * dz, -alpha_neg * dz)


def modified_focal_loss(logits: Tensor, labels: Tensor, *, normalizer, gamma: float = 2.0, alpha: float = 0.25,
                        max_weight: float | None = None, grad_stats: GradStats | None = None,
                        compiler: Compiler | None = None) -> Tensor:
    """Modified focal loss over ``logits (N, K)``; ``max_weight=None``: uncapped (faithful)."""
    log_max = math.inf if max_weight is None else math.log(max_weight)
    return sigmoid_loss(modified_focal, logits, labels, norm=as_normalizer(normalizer, logits.device),
                        params=dict(alpha_pos=alpha, alpha_neg=1.0 - alpha, gamma=gamma, log_max_weight=log_max),
                        grad_stats=grad_stats, compiler=compiler)


class ModifiedFocalLoss(SigmoidLoss):
    name = "modified_focal"

    ranges = {"gamma": Range(0), "alpha": Range(0, 1), "max_weight": Range(0, low_open=True, allow_none=True)}

    def __init__(self, num_classes: int, track_grad_stats: bool = False, *, gamma: float = 2.0,
                 alpha: float = 0.25, max_weight: float | None = None, compile: bool | None = None):
        super().__init__(num_classes, track_grad_stats, compile, gamma=gamma, alpha=alpha, max_weight=max_weight)

    def _loss(self, logits, labels, *, normalizer, quality):
        return modified_focal_loss(logits, labels, normalizer=normalizer, grad_stats=self.grad_stats,
                                   compiler=self.compiler, **self.params)
