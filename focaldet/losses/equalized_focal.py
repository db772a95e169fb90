"""Equalized focal loss (Li et al., CVPR 2022; SPEC §3).

For foreground class j: ``EFL_j = α_t (γ_j/γ_b) (1-p_t)^γ_j CE(p_t)`` with
``γ_j = γ_b + s(1 - g_j)`` and ``g_j = clamp(G⁺_j / (G⁻_j + 1e-10), 0, 1)``. G⁺/G⁻ live in the module's
:class:`GradStats` and are updated in the loss's own backward from the exact gradient the optimizer
sees (normalizer, α_t and both factors included); γ_j and the weight are constants for autograd.
Before the first update ``g_j = 1``, so EFL starts out as the focal loss.
"""
from __future__ import annotations

import torch
from torch import Tensor

from focaldet.losses.checks import check_range
from focaldet.losses.engine import sigmoid_loss
from focaldet.losses.grad_stats import GradStats
from focaldet.losses.sigmoid import SigmoidLoss


def efl_gamma(grad_stats: GradStats, gamma_b: float, scale: float) -> Tensor:
    """Per-class focusing factor ``γ_j (K,)`` from the current statistics (``γ_b`` before any update)."""
    g = grad_stats.ratio().clamp(0.0, 1.0)
    g = torch.where(grad_stats.num_updates > 0, g, torch.ones_like(g))
    return gamma_b + scale * (1.0 - g)


def equalized_focal_loss(logits: Tensor, labels: Tensor, *, normalizer, grad_stats: GradStats,
                         gamma_b: float = 2.0, scale: float = 8.0, alpha: float = 0.25) -> Tensor:
    """EFL over ``logits (N, K)``; reads γ_j from ``grad_stats`` and, in backward, updates it."""
    gamma = efl_gamma(grad_stats, gamma_b, scale).to(logits.device)
    weight = gamma / gamma_b
    # the weighting factor is folded into α_t: α_t (γ_j/γ_b) is one per-class factor
    return sigmoid_loss("focal", logits, labels, normalizer=normalizer, grad_stats=grad_stats,
                        consts=dict(alpha_pos=alpha * weight, alpha_neg=(1.0 - alpha) * weight, gamma=gamma),
                        class_params=("alpha_pos", "alpha_neg", "gamma"))


class EqualizedFocalLoss(SigmoidLoss):
    """Stateful EFL; its ``grad_stats`` is always present (``track_grad_stats`` is ignored)."""

    name = "equalized_focal"

    def __init__(self, num_classes: int, track_grad_stats: bool = True, *, gamma_b: float = 2.0,
                 scale: float = 8.0, alpha: float = 0.25):
        super().__init__(num_classes, True,
                         gamma_b=check_range(self.name, "gamma_b", gamma_b, 0, low_open=True),
                         scale=check_range(self.name, "scale", scale, 0),
                         alpha=check_range(self.name, "alpha", alpha, 0, 1))

    def gamma(self) -> Tensor:
        """Current ``γ_j (K,)`` (what the next forward will use)."""
        return efl_gamma(self.grad_stats, self.params["gamma_b"], self.params["scale"])

    def _loss(self, logits, labels, *, normalizer, quality):
        return equalized_focal_loss(logits, labels, normalizer=normalizer, grad_stats=self.grad_stats, **self.params)
