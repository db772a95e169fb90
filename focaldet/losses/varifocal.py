"""Varifocal loss, VFL (Zhang et al., VarifocalNet, CVPR 2021).

With ``p = σ(x)`` and the soft target ``t`` (the IoU quality of a positive element):

    positive elements:  VFL = t · BCE(p, t),            ∂VFL/∂x = t (p - t)
    other elements:     VFL = α p^γ · (-log(1 - p)),    ∂VFL/∂x = α p^γ (γ (1-p) (-log(1-p)) + p)
"""
from __future__ import annotations

import torch
from torch import Tensor

from focaldet.losses.base import SigmoidLoss
from focaldet.losses.checks import Range, as_normalizer
from focaldet.losses.fused import Compiler, sigmoid_loss, sigmoid_parts
from focaldet.losses.grad_stats import GradStats


def varifocal(x: Tensor, y: Tensor, t, *, alpha, gamma):
    """Elementwise ``(VFL, ∂VFL/∂x)``."""
    p, q, _, softplus_x = sigmoid_parts(x)  # p, 1 - p, -log(1 - p)
    pos_loss = t * (softplus_x - t * x)
    pos_grad = t * (p - t)
    pg = p ** gamma
    neg_loss = alpha * pg * softplus_x
    neg_grad = alpha * pg * (gamma * q * softplus_x + p)
    return torch.where(y, pos_loss, neg_loss), torch.where(y, pos_grad, neg_grad)


def varifocal_loss(logits: Tensor, labels: Tensor, *, normalizer, quality: Tensor, alpha: float = 0.75,
                   gamma: float = 2.0, grad_stats: GradStats | None = None,
                   compiler: Compiler | None = None) -> Tensor:
    """VFL over ``logits (N, K)``; ``quality (N,)`` in [0, 1]."""
    return sigmoid_loss(varifocal, logits, labels, norm=as_normalizer(normalizer, logits.device),
                        params=dict(alpha=alpha, gamma=gamma), quality=quality, grad_stats=grad_stats,
                        compiler=compiler)


class VarifocalLoss(SigmoidLoss):
    name = "varifocal"
    needs_quality = True

    ranges = {"alpha": Range(0, 1), "gamma": Range(0)}

    def __init__(self, num_classes: int, track_grad_stats: bool = False, *, alpha: float = 0.75,
                 gamma: float = 2.0, compile: bool | None = None):
        super().__init__(num_classes, track_grad_stats, compile, alpha=alpha, gamma=gamma)

    def _loss(self, logits, labels, *, normalizer, quality):
        return varifocal_loss(logits, labels, normalizer=normalizer, quality=quality,
                              grad_stats=self.grad_stats, compiler=self.compiler, **self.params)
