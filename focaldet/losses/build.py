"""Choosing a loss by name: ``LOSSES`` (name → class), ``loss_names()`` and ``build_loss``."""
from __future__ import annotations

import inspect

from torch import nn

from focaldet.losses.checks import LossConfigError
from focaldet.losses.equalized_focal import EqualizedFocalLoss
from focaldet.losses.ghm import GHMLoss
from focaldet.losses.sigmoid import (BalancedBCELoss, BCELoss, FocalLoss, FocalStarLoss, ModifiedFocalLoss,
                                     PolyFocalLoss, QualityFocalLoss, VarifocalLoss)
from focaldet.losses.softmax import OHEMLoss, SampledLoss, SoftmaxCELoss

LOSSES: dict[str, type] = {cls.name: cls for cls in (
    BCELoss, BalancedBCELoss, FocalLoss, ModifiedFocalLoss, FocalStarLoss, PolyFocalLoss, GHMLoss,
    QualityFocalLoss, VarifocalLoss, EqualizedFocalLoss, SoftmaxCELoss, OHEMLoss, SampledLoss)}


def loss_names() -> list[str]:
    return list(LOSSES)


def loss_parameters(name: str) -> dict:
    """The keyword parameters of loss ``name`` with their defaults."""
    sig = inspect.signature(LOSSES[name].__init__)
    return {p.name: p.default for p in sig.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def build_loss(name: str, *, num_classes: int, track_grad_stats: bool = False, **params) -> nn.Module:
    """Build loss ``name`` for ``num_classes`` foreground classes with keyword ``params``.

    Raises :class:`LossConfigError` (a ``ValueError``) naming the valid names or parameters when
    ``name`` or a parameter is unknown, and the allowed range when a value is out of it.
    """
    if name not in LOSSES:
        raise LossConfigError(f"unknown loss {name!r}; valid names: {', '.join(LOSSES)}")
    valid = loss_parameters(name)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        listed = ", ".join(f"{k}={v!r}" for k, v in valid.items()) or "(none)"
        raise LossConfigError(f"loss '{name}': unknown parameter(s) {', '.join(unknown)}; "
                              f"valid parameters (with defaults): {listed}")
    return LOSSES[name](num_classes, track_grad_stats, **params)
