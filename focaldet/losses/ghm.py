"""Gradient harmonizing classification loss, GHM-C (Li et al., AAAI 2019).

``g = |p - y|`` is the gradient norm of BCE with respect to the logit; with ``z_t = ±x`` as in
:mod:`.focal` it is ``1 - p_t = σ(-z_t)``. Every non-ignored element gets

    β_i = N / (M · GD(g_i)),   GHM-C = (1/N) Σ β_i CE_i,   ∂/∂x_i = (β_i/N) (p_i - y_i)

with ``GD`` the number of elements in ``g_i``'s bin (``bins`` equal bins on [0, 1], smoothed over
iterations by an EMA with ``momentum``), ``N`` the number of elements and ``M`` the number of
non-empty bins; β is a constant for autograd.

Two passes, both on the fused path: one counts the elements per bin, the second is the formula
below with the per-bin weights β/N as a small lookup table. Both compute the bin the same way.

Normalisation: GHM-C brings its own (the 1/N above, as in the paper and mmdetection, whose GHMC
ignores ``avg_factor``), so ``normalizer`` is accepted for the common call convention but not used.
The EMA starts from the first observed count of a bin (mmdetection starts from 0, which inflates
the first iteration's weights by 1/(1-momentum)).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from focaldet.losses.base import SigmoidLoss
from focaldet.losses.checks import Range, as_normalizer
from focaldet.losses.fused import Compiler, compute_dtype, positive_mask, sigmoid_loss
from focaldet.losses.grad_stats import GradStats


def ghm_bin(x: Tensor, y: Tensor, bins: int):
    """``(bin index as float, 1 - p_t = |p - y|, z_t)`` of every element; both passes bin through
    this one function, so an element is weighted with the bin it was counted in."""
    z = torch.where(y, x, -x)
    q = torch.sigmoid(-z)  # one op: GHM's two passes run eagerly on small inputs, op by op
    return torch.clamp(torch.floor(q * bins), max=bins - 1), q, z


def ghm(x: Tensor, y: Tensor, t, *, bin_weight: Tensor, bins: int):
    """Elementwise ``(β CE / N, ∂/∂x)``; ``bin_weight (bins,)`` holds β/N of each bin."""
    idx, q, z = ghm_bin(x, y, bins)
    w = bin_weight[idx.long()]
    ce = F.softplus(-z)  # -log p_t
    return w * ce, torch.where(y, -w * q, w * q)  # p - y: -(1 - p) for a positive, p for a negative


def ghm_bin_counts(x: Tensor, labels: Tensor, bins: int) -> Tensor:
    """Number of non-ignored elements of ``x (N, K)`` in each bin, ``(bins,)`` int64."""
    idx, _, _ = ghm_bin(x, positive_mask(x, labels), bins)
    idx = torch.where((labels >= 0)[:, None], idx, -1.0)  # ignored: in no bin
    if torch.compiler.is_compiling():
        # one comparison-sum per bin; compiled, they are all one pass over the logits
        return torch.stack([(idx == b).sum() for b in range(bins)])
    # eagerly, one histogram op instead of 2 × bins passes (bin b holds exactly the value b)
    return torch.histc(idx, bins=bins, min=0, max=bins).long()


def ghm_loss(logits: Tensor, labels: Tensor, *, normalizer, acc_sum: Tensor, bins: int = 10,
             momentum: float = 0.75, grad_stats: GradStats | None = None,
             compiler: Compiler | None = None) -> Tensor:
    """GHM-C over ``logits (N, K)``; ``acc_sum (bins,)`` float32 is the EMA state, updated in place
    (``momentum = 0`` uses the current counts only)."""
    device = logits.device
    as_normalizer(normalizer, device)  # checked for the common contract, not used (see module doc)
    with torch.no_grad(), torch.autocast(device.type, enabled=False):
        x = logits.detach().to(compute_dtype(logits))
        args = (x, labels.detach().long(), bins)
        counts = (compiler(ghm_bin_counts, *args) if compiler is not None else ghm_bin_counts(*args))
        counts = counts.to(acc_sum.dtype)
        nonempty = counts > 0
        if momentum > 0:
            ema = torch.where(acc_sum > 0, momentum * acc_sum + (1.0 - momentum) * counts, counts)
            acc_sum.copy_(torch.where(nonempty, ema, acc_sum))
            density = acc_sum
        else:
            density = counts
        num_bins = nonempty.sum().clamp(min=1)
        bin_weight = torch.where(nonempty, 1.0 / (density.clamp(min=1e-12) * num_bins), 0.0)  # β / N
    return sigmoid_loss(ghm, logits, labels, norm=torch.ones((), device=device), grad_stats=grad_stats,
                        params=dict(bin_weight=bin_weight, bins=bins), compiler=compiler)


class GHMLoss(SigmoidLoss):
    """GHM-C with its EMA state in the buffer ``acc_sum (bins,)``."""

    name = "ghm"

    ranges = {"bins": Range(1, integer=True), "momentum": Range(0, 1, high_open=True)}

    def __init__(self, num_classes: int, track_grad_stats: bool = False, *, bins: int = 10,
                 momentum: float = 0.75, compile: bool | None = None):
        super().__init__(num_classes, track_grad_stats, compile, bins=bins, momentum=momentum)
        self.register_buffer("acc_sum", torch.zeros(self.params["bins"], dtype=torch.float32))

    def _loss(self, logits, labels, *, normalizer, quality):
        return ghm_loss(logits, labels, normalizer=normalizer, acc_sum=self.acc_sum,
                        grad_stats=self.grad_stats, compiler=self.compiler, **self.params)
