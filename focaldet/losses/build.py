"""Choosing a loss by name: ``LOSSES`` (name → class), ``loss_names()``, ``check_loss_params`` and
``build_loss``."""
from __future__ import annotations

import inspect

from torch import nn

from focaldet.losses.checks import LossConfigError
from focaldet.losses.equalized_focal import EqualizedFocalLoss
from focaldet.losses.focal import BalancedBCELoss, BCELoss, FocalLoss
from focaldet.losses.focal_star import FocalStarLoss
from focaldet.losses.ghm import GHMLoss
from focaldet.losses.modified_focal import ModifiedFocalLoss
from focaldet.losses.poly_focal import PolyFocalLoss
from focaldet.losses.quality_focal import QualityFocalLoss
from focaldet.losses.softmax import OHEMLoss, SampledLoss, SoftmaxCELoss
from focaldet.losses.varifocal import VarifocalLoss

LOSSES: dict[str, type] = {cls.name: cls for cls in (
    BCELoss, BalancedBCELoss, FocalLoss, ModifiedFocalLoss, FocalStarLoss, PolyFocalLoss, GHMLoss,
    QualityFocalLoss, VarifocalLoss, EqualizedFocalLoss, SoftmaxCELoss, OHEMLoss, SampledLoss)}


def loss_names() -> list[str]:
    return list(LOSSES)


def loss_parameters(name: str) -> dict:
    """The keyword parameters of loss ``name`` with their defaults (the formula's parameters; how
    it runs, ``compile``, is not one of them)."""
    sig = inspect.signature(LOSSES[name].__init__)
    return {p.name: p.default for p in sig.parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != "compile"}


def check_loss_params(name: str, params: dict) -> None:
    """Check loss ``name`` and its keyword ``params`` without building it: the name, the parameter
    names (against the loss's signature) and each value (against the loss's own ``ranges``, the
    rule its constructor applies). Needs no ``num_classes``, so a config is checked once, when it
    is loaded, before any data is generated or read.

    Raises :class:`LossConfigError` whose ``param`` is the offending key (``"name"`` for an unknown
    loss), with the valid names or parameters listed, or the allowed range.
    """
    if name not in LOSSES:
        raise LossConfigError(f"unknown loss {name!r}; valid names: {', '.join(LOSSES)}", param="name")
    valid = loss_parameters(name)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        listed = ", ".join(f"{k}={v!r}" for k, v in valid.items()) or "(none)"
        raise LossConfigError(f"loss '{name}': unknown parameter(s) {', '.join(unknown)}; "
                              f"valid parameters (with defaults): {listed}", param=unknown[0])
    LOSSES[name].check_params(params)


def build_loss(name: str, *, num_classes: int, track_grad_stats: bool = False, compile: bool | None = None,
               **params) -> nn.Module:
    """Build loss ``name`` for ``num_classes`` foreground classes with keyword ``params``.

    ``compile``: run a sigmoid loss's fused pass through ``torch.compile`` (inputs of at least
    2**20 elements); None reads ``FOCALDET_COMPILE`` once, now (default on). Softmax losses ignore it.

    Raises :class:`LossConfigError` (a ``ValueError``) naming the valid names or parameters when
    ``name`` or a parameter is unknown, and the allowed range when a value is out of it
    (see :func:`check_loss_params`).
    """
    check_loss_params(name, params)
    return LOSSES[name](num_classes, track_grad_stats, compile=compile, **params)
