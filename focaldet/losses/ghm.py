"""Gradient harmonizing classification loss, GHM-C (Li et al., AAAI 2019; SPEC §2).

Every non-ignored element gets ``β_i = N / (M · GD(g_i))`` with ``g = |p - y|`` (the gradient norm of
BCE w.r.t. the logit), ``GD`` the number of elements in ``g_i``'s bin (``bins`` equal bins on [0, 1],
smoothed over iterations by an EMA with ``momentum``), ``N`` the number of elements and ``M`` the
number of non-empty bins; the loss is ``(1/N) Σ β_i CE_i``, β constant for autograd.

Normalisation: GHM-C brings its own (the 1/N above, as in the paper and mmdetection, whose GHMC
ignores ``avg_factor``), so ``normalizer`` is accepted for the common call convention but not used.
The EMA starts from the first observed count of a bin (mmdetection starts from 0, which inflates
the first iteration's weights by 1/(1-momentum)).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from focaldet.losses.checks import LossConfigError, check_range
from focaldet.losses.engine import _AttachGrad, as_normalizer, class_grad_sums, compute_dtype
from focaldet.losses.grad_stats import GradStats
from focaldet.losses.sigmoid import SigmoidLoss


def ghm_loss(logits: Tensor, labels: Tensor, *, normalizer, acc_sum: Tensor, bins: int = 10,
             momentum: float = 0.75, grad_stats: GradStats | None = None) -> Tensor:
    """GHM-C over ``logits (N, K)``; ``acc_sum (bins,)`` float32 is the EMA state, updated in place
    (``momentum = 0`` uses the current counts only)."""
    as_normalizer(normalizer, logits.device)  # checked for the common contract, not used (see module doc)
    dtype = compute_dtype(logits)
    K = logits.shape[1]
    with torch.no_grad(), torch.autocast(logits.device.type, enabled=False):
        x = logits.detach().to(dtype)
        labels = labels.detach().long()
        valid = (labels >= 0)[:, None]
        pos_rows = ((labels >= 0) & (labels < K)).nonzero().squeeze(1)
        pos_cols = labels[pos_rows]
        # every element as a negative (y = 0), then the few positives patched: no one-hot target
        p = torch.sigmoid(x)
        g = p.clone()
        g[pos_rows, pos_cols] = 1.0 - p[pos_rows, pos_cols]
        dce = p.clone()  # dCE/dx = p - y
        dce[pos_rows, pos_cols] -= 1.0
        ce = nn.functional.softplus(x)  # -log(1-p)
        ce[pos_rows, pos_cols] = nn.functional.softplus(-x[pos_rows, pos_cols])

        idx = (g * bins).floor().long().clamp_(max=bins - 1)
        idx = torch.where(valid, idx, bins)  # ignored rows go to an overflow bin that is dropped
        counts = torch.bincount(idx.flatten(), minlength=bins + 1)[:bins].to(acc_sum.dtype)
        total = counts.sum().clamp(min=1.0)
        nonempty = counts > 0
        if momentum > 0:
            ema = torch.where(acc_sum > 0, momentum * acc_sum + (1.0 - momentum) * counts, counts)
            acc_sum.copy_(torch.where(nonempty, ema, acc_sum))
            density = acc_sum
        else:
            density = counts
        num_bins = nonempty.sum().clamp(min=1)
        bin_weight = torch.where(nonempty, total / (density.clamp(min=1e-12) * num_bins), 0.0).to(dtype)
        # per element β_i / N, with the overflow bin weighing 0
        w = torch.cat([bin_weight, bin_weight.new_zeros(1)])[idx] / total.to(dtype)
        loss_total = (w * ce).sum()
        grad = w * dce
        pos_abs = neg_abs = None
        if grad_stats is not None:
            pos_abs, neg_abs = class_grad_sums(grad, pos_rows, pos_cols)
    if not logits.requires_grad:
        return loss_total
    return _AttachGrad.apply(logits, loss_total, grad, pos_abs, neg_abs, grad_stats)


class GHMLoss(SigmoidLoss):
    """GHM-C with its EMA state in the buffer ``acc_sum (bins,)``."""

    name = "ghm"

    def __init__(self, num_classes: int, track_grad_stats: bool = False, *, bins: int = 10,
                 momentum: float = 0.75):
        super().__init__(num_classes, track_grad_stats,
                         bins=check_range(self.name, "bins", bins, 1, integer=True),
                         momentum=check_range(self.name, "momentum", momentum, 0, 1))
        if self.params["momentum"] >= 1:
            raise LossConfigError(
                f"loss '{self.name}': parameter 'momentum' must satisfy 0 <= momentum < 1, got {momentum!r}")
        self.register_buffer("acc_sum", torch.zeros(self.params["bins"], dtype=torch.float32))

    def _loss(self, logits, labels, *, normalizer, quality):
        return ghm_loss(logits, labels, normalizer=normalizer, acc_sum=self.acc_sum,
                        grad_stats=self.grad_stats, **self.params)
