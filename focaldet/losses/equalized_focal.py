"""Equalized focal loss, EFL (Li et al., CVPR 2022): a focal loss whose focusing factor is set per
class from that class's gradient statistics.

With ``z_t = ±x``, ``p_t = σ(z_t)`` and CE as in :mod:`.focal`, for class j:

    EFL_j = α_t (γ_j/γ_b) (1 - p_t)^γ_j CE
    ∂EFL_j/∂z_t = -α_t (γ_j/γ_b) (1 - p_t)^γ_j (γ_j p_t CE + (1 - p_t)),   ∂z_t/∂x = ±1
    γ_j = γ_b + s (1 - g_j),   g_j = clamp(G⁺_j / (G⁻_j + 1e-10), 0, 1)

G⁺/G⁻ live in the module's :class:`GradStats`, updated in the loss's own backward from the exact
gradient the optimizer sees; γ_j and the weight γ_j/γ_b are constants for autograd. Before the
first update ``g_j = 1``, so EFL starts out as the focal loss.
"""
from __future__ import annotations

import torch
from torch import Tensor

from focaldet.losses.base import SigmoidLoss
from focaldet.losses.checks import Range, as_normalizer
from focaldet.losses.fused import Compiler, compute_dtype, sigmoid_loss, sigmoid_parts
from focaldet.losses.grad_stats import GradStats


def equalized_focal(x: Tensor, y: Tensor, t, *, alpha_pos: Tensor, alpha_neg: Tensor, gamma: Tensor):
    """Elementwise ``(EFL, ∂EFL/∂x)``; ``gamma`` is ``γ_j (K,)``, ``alpha_pos``/``alpha_neg`` are
    ``(K,)`` with the weight ``γ_j/γ_b`` folded into α_t."""
    z = torch.where(y, x, -x)
    p, q, ce, softplus_z = sigmoid_parts(z)  # p_t, 1 - p_t, CE, -log(1 - p_t)
    log_w = -gamma * softplus_z  # log (1 - p_t)^γ_j: one exp for a per-class exponent
    # weights below e^-60 are flushed to 0: with γ_j up to γ_b + s (10 by default), float32 would
    # fill with subnormal numbers, each operation on which costs several normal ones on x86 CPUs;
    # what is dropped lies far below float32's resolution of any sum or gradient it belongs to
    w = torch.where(log_w > -60.0, torch.exp(torch.clamp(log_w, min=-60.0)), 0.0)
    loss = w * ce
    dz = -w * (gamma * p * ce + q)
    return torch.where(y, alpha_pos * loss, alpha_neg * loss), torch.where(y, alpha_pos * dz, -alpha_neg * dz)


def efl_gamma(grad_stats: GradStats, gamma_b: float, scale: float) -> Tensor:
    """Per-class focusing factor ``γ_j (K,)`` from the current statistics (``γ_b`` before any update)."""
    g = grad_stats.ratio().clamp(0.0, 1.0)
    g = torch.where(grad_stats.num_updates > 0, g, torch.ones_like(g))
    return gamma_b + scale * (1.0 - g)


def equalized_focal_loss(logits: Tensor, labels: Tensor, *, normalizer, grad_stats: GradStats,
                         gamma_b: float = 2.0, scale: float = 8.0, alpha: float = 0.25,
                         compiler: Compiler | None = None) -> Tensor:
    """EFL over ``logits (N, K)``; reads γ_j from ``grad_stats`` and, in backward, updates it."""
    gamma = efl_gamma(grad_stats, gamma_b, scale).to(device=logits.device, dtype=compute_dtype(logits))
    weight = gamma / gamma_b
    return sigmoid_loss(equalized_focal, logits, labels, norm=as_normalizer(normalizer, logits.device),
                        params=dict(alpha_pos=alpha * weight, alpha_neg=(1.0 - alpha) * weight, gamma=gamma),
                        grad_stats=grad_stats, compiler=compiler)


class EqualizedFocalLoss(SigmoidLoss):
    """Stateful EFL; its ``grad_stats`` is always present (``track_grad_stats`` is ignored)."""

    name = "equalized_focal"

    ranges = {"gamma_b": Range(0, low_open=True), "scale": Range(0), "alpha": Range(0, 1)}

    def __init__(self, num_classes: int, track_grad_stats: bool = True, *, gamma_b: float = 2.0,
                 scale: float = 8.0, alpha: float = 0.25, compile: bool | None = None):
        super().__init__(num_classes, True, compile, gamma_b=gamma_b, scale=scale, alpha=alpha)

    def gamma(self) -> Tensor:
        """Current ``γ_j (K,)`` (what the next forward will use)."""
        return efl_gamma(self.grad_stats, self.params["gamma_b"], self.params["scale"])

    def _loss(self, logits, labels, *, normalizer, quality):
        return equalized_focal_loss(logits, labels, normalizer=normalizer, grad_stats=self.grad_stats,
                                    compiler=self.compiler, **self.params)
