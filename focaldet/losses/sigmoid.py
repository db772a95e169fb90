"""The sigmoid-family losses of SPEC §2: functional forms and ``nn.Module`` forms.

Call convention (design.md): ``loss(logits (N, K), labels (N,) int64, *, normalizer, quality=None,
batch_index=None) -> 0-d float32``; labels 0..K-1 are foreground classes, K is background, -1 is
ignored. The result is the sum over all non-ignored (anchor, class) elements divided by
``normalizer``. Logits of any floating dtype are accepted; the loss is computed in float32 (float64
logits stay float64) with autocast disabled, and the gradient is returned in the logits' dtype.
"""
from __future__ import annotations

import math

from torch import Tensor, nn

from focaldet.losses.checks import check_num_classes, check_range
from focaldet.losses.engine import check_inputs, sigmoid_loss
from focaldet.losses.grad_stats import GradStats

# ---------------------------------------------------------------------------------------------
# functional forms


def bce_loss(logits: Tensor, labels: Tensor, *, normalizer, grad_stats: GradStats | None = None) -> Tensor:
    """Binary cross entropy ``CE(p_t)`` summed over elements / normalizer."""
    return sigmoid_loss("focal", logits, labels, normalizer=normalizer, grad_stats=grad_stats,
                        consts=dict(alpha_pos=1.0, alpha_neg=1.0, gamma=0.0))


def balanced_bce_loss(logits, labels, *, normalizer, alpha: float = 0.75, grad_stats=None) -> Tensor:
    """α-balanced CE ``α_t CE(p_t)`` (focal-loss paper eq. 3)."""
    return sigmoid_loss("focal", logits, labels, normalizer=normalizer, grad_stats=grad_stats,
                        consts=dict(alpha_pos=alpha, alpha_neg=1.0 - alpha, gamma=0.0))


def focal_loss(logits, labels, *, normalizer, gamma: float = 2.0, alpha: float | None = 0.25,
               grad_stats=None) -> Tensor:
    """Focal loss ``α_t (1-p_t)^γ CE(p_t)`` (eq. 5); ``alpha=None`` means no α weighting."""
    a_pos, a_neg = (1.0, 1.0) if alpha is None else (alpha, 1.0 - alpha)
    return sigmoid_loss("focal", logits, labels, normalizer=normalizer, grad_stats=grad_stats,
                        consts=dict(alpha_pos=a_pos, alpha_neg=a_neg, gamma=gamma))


def modified_focal_loss(logits, labels, *, normalizer, gamma: float = 2.0, alpha: float = 0.25,
                        max_weight: float | None = None, grad_stats=None) -> Tensor:
    """``α_t ((1-p_t)/p_t)^γ CE(p_t) = α_t exp(-γ z_t) CE(p_t)``.

    The weight grows like ``exp(γ|x|)`` for hard examples and overflows float32 (value and gradient
    become inf) once ``γ·|x| > ~88.7``, e.g. |x| > 44 at γ = 2. ``max_weight`` caps the weight
    (default ``None``: faithful, uncapped); where the cap binds the weight is a constant.
    """
    log_max = math.inf if max_weight is None else math.log(max_weight)
    return sigmoid_loss("modified_focal", logits, labels, normalizer=normalizer, grad_stats=grad_stats,
                        consts=dict(alpha_pos=alpha, alpha_neg=1.0 - alpha, gamma=gamma, log_max_weight=log_max))


def focal_star_loss(logits, labels, *, normalizer, gamma: float = 2.0, beta: float = 1.0,
                    alpha: float = 0.25, grad_stats=None) -> Tensor:
    """FL* (paper Appendix A): ``α_t · -log σ(γ z_t + β) / γ``."""
    return sigmoid_loss("focal_star", logits, labels, normalizer=normalizer, grad_stats=grad_stats,
                        consts=dict(alpha_pos=alpha, alpha_neg=1.0 - alpha, gamma=gamma, beta=beta))


def poly_focal_loss(logits, labels, *, normalizer, gamma: float = 2.0, alpha: float = 0.25,
                    epsilon: float = 1.0, grad_stats=None) -> Tensor:
    """Poly-1 focal loss: ``FL + ε (1-p_t)^(γ+1)``."""
    return sigmoid_loss("poly_focal", logits, labels, normalizer=normalizer, grad_stats=grad_stats,
                        consts=dict(alpha_pos=alpha, alpha_neg=1.0 - alpha, gamma=gamma, epsilon=epsilon),
                        neg_grad_nonnegative=epsilon >= 0)  # ε < 0 can make a negative's gradient < 0


def quality_focal_loss(logits, labels, *, normalizer, quality: Tensor, beta: float = 2.0,
                       grad_stats=None) -> Tensor:
    """QFL (GFL): ``|q - p|^β · BCE(p, q)``, soft target ``q = quality[row]`` on the positive
    element of a positive row, 0 elsewhere. ``quality (N,)`` in [0, 1]."""
    return sigmoid_loss("quality_focal", logits, labels, normalizer=normalizer, grad_stats=grad_stats,
                        quality=quality, consts=dict(beta=beta))


def varifocal_loss(logits, labels, *, normalizer, quality: Tensor, alpha: float = 0.75,
                   gamma: float = 2.0, grad_stats=None) -> Tensor:
    """VFL: positives ``q·BCE(p, q)``, negatives ``α p^γ (-log(1-p))``; ``quality (N,)``."""
    return sigmoid_loss("varifocal", logits, labels, normalizer=normalizer, grad_stats=grad_stats,
                        quality=quality, consts=dict(alpha=alpha, gamma=gamma))


# ---------------------------------------------------------------------------------------------
# module forms


class SigmoidLoss(nn.Module):
    """Base of the sigmoid-family modules: holds ``name``, ``family``, ``needs_quality``,
    ``params`` (resolved keyword parameters) and ``grad_stats`` (a :class:`GradStats` when built
    with ``track_grad_stats=True``, else ``None``)."""

    name = ""
    family = "sigmoid"
    needs_quality = False

    def __init__(self, num_classes: int, track_grad_stats: bool = False, **params):
        super().__init__()
        self.num_classes = check_num_classes(self.name, num_classes)
        self.params = params
        self.grad_stats = GradStats(num_classes) if track_grad_stats else None

    def forward(self, logits: Tensor, labels: Tensor, *, normalizer, quality: Tensor | None = None,
                batch_index: Tensor | None = None) -> Tensor:
        check_inputs(self.name, logits, labels, self.num_classes, quality, self.needs_quality)
        return self._loss(logits, labels, normalizer=normalizer, quality=quality)

    def _loss(self, logits, labels, *, normalizer, quality):
        raise NotImplementedError

    def extra_repr(self) -> str:
        return ", ".join([f"num_classes={self.num_classes}"] + [f"{k}={v}" for k, v in self.params.items()])


class BCELoss(SigmoidLoss):
    name = "bce"

    def __init__(self, num_classes: int, track_grad_stats: bool = False):
        super().__init__(num_classes, track_grad_stats)

    def _loss(self, logits, labels, *, normalizer, quality):
        return bce_loss(logits, labels, normalizer=normalizer, grad_stats=self.grad_stats)


class BalancedBCELoss(SigmoidLoss):
    name = "balanced_bce"

    def __init__(self, num_classes: int, track_grad_stats: bool = False, *, alpha: float = 0.75):
        super().__init__(num_classes, track_grad_stats, alpha=check_range(self.name, "alpha", alpha, 0, 1))

    def _loss(self, logits, labels, *, normalizer, quality):
        return balanced_bce_loss(logits, labels, normalizer=normalizer, grad_stats=self.grad_stats, **self.params)


class FocalLoss(SigmoidLoss):
    name = "focal"

    def __init__(self, num_classes: int, track_grad_stats: bool = False, *, gamma: float = 2.0,
                 alpha: float | None = 0.25):
        super().__init__(num_classes, track_grad_stats, gamma=check_range(self.name, "gamma", gamma, 0),
                         alpha=check_range(self.name, "alpha", alpha, 0, 1, allow_none=True))

    def _loss(self, logits, labels, *, normalizer, quality):
        return focal_loss(logits, labels, normalizer=normalizer, grad_stats=self.grad_stats, **self.params)


class ModifiedFocalLoss(SigmoidLoss):
    name = "modified_focal"

    def __init__(self, num_classes: int, track_grad_stats: bool = False, *, gamma: float = 2.0,
                 alpha: float = 0.25, max_weight: float | None = None):
        super().__init__(num_classes, track_grad_stats, gamma=check_range(self.name, "gamma", gamma, 0),
                         alpha=check_range(self.name, "alpha", alpha, 0, 1),
                         max_weight=check_range(self.name, "max_weight", max_weight, 0, low_open=True,
                                                allow_none=True))

    def _loss(self, logits, labels, *, normalizer, quality):
        return modified_focal_loss(logits, labels, normalizer=normalizer, grad_stats=self.grad_stats, **self.params)


class FocalStarLoss(SigmoidLoss):
    name = "focal_star"

    def __init__(self, num_classes: int, track_grad_stats: bool = False, *, gamma: float = 2.0,
                 beta: float = 1.0, alpha: float = 0.25):
        super().__init__(num_classes, track_grad_stats,
                         gamma=check_range(self.name, "gamma", gamma, 0, low_open=True),
                         beta=check_range(self.name, "beta", beta), alpha=check_range(self.name, "alpha", alpha, 0, 1))

    def _loss(self, logits, labels, *, normalizer, quality):
        return focal_star_loss(logits, labels, normalizer=normalizer, grad_stats=self.grad_stats, **self.params)


class PolyFocalLoss(SigmoidLoss):
    name = "poly_focal"

    def __init__(self, num_classes: int, track_grad_stats: bool = False, *, gamma: float = 2.0,
                 alpha: float = 0.25, epsilon: float = 1.0):
        # ε may be negative in PolyLoss, but ε < -1 makes the loss unbounded below
        super().__init__(num_classes, track_grad_stats, gamma=check_range(self.name, "gamma", gamma, 0),
                         alpha=check_range(self.name, "alpha", alpha, 0, 1),
                         epsilon=check_range(self.name, "epsilon", epsilon, -1))

    def _loss(self, logits, labels, *, normalizer, quality):
        return poly_focal_loss(logits, labels, normalizer=normalizer, grad_stats=self.grad_stats, **self.params)


class QualityFocalLoss(SigmoidLoss):
    name = "quality_focal"
    needs_quality = True

    def __init__(self, num_classes: int, track_grad_stats: bool = False, *, beta: float = 2.0):
        super().__init__(num_classes, track_grad_stats, beta=check_range(self.name, "beta", beta, 0))

    def _loss(self, logits, labels, *, normalizer, quality):
        return quality_focal_loss(logits, labels, normalizer=normalizer, quality=quality,
                                  grad_stats=self.grad_stats, **self.params)


class VarifocalLoss(SigmoidLoss):
    name = "varifocal"
    needs_quality = True

    def __init__(self, num_classes: int, track_grad_stats: bool = False, *, alpha: float = 0.75,
                 gamma: float = 2.0):
        super().__init__(num_classes, track_grad_stats, alpha=check_range(self.name, "alpha", alpha, 0, 1),
                         gamma=check_range(self.name, "gamma", gamma, 0))

    def _loss(self, logits, labels, *, normalizer, quality):
        return varifocal_loss(logits, labels, normalizer=normalizer, quality=quality,
                              grad_stats=self.grad_stats, **self.params)
