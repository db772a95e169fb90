"""Checks shared by the losses: parameters (constructors, :func:`focaldet.losses.build_loss` and
:func:`focaldet.losses.check_loss_params`) and the inputs of a call."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from focaldet.errors import FocaldetError


class LossConfigError(FocaldetError, ValueError):
    """A wrong loss name, an unknown parameter or a parameter out of its range; the message names
    the loss and the parameter and lists what is valid. ``param`` is the offending key (``"name"``
    for an unknown loss), so a config error can name ``loss.<param>``."""

    def __init__(self, message: str, hint: str = "", *, param: str | None = None):
        super().__init__(message, hint)
        self.param = param


def check_range(loss: str, name: str, value, low=None, high=None, *, low_open=False, high_open=False,
                integer=False, allow_none=False):
    """Return ``value`` as float (or int) after checking ``low <= value <= high`` (``low < value``
    when ``low_open``, ``value < high`` when ``high_open``); raise :class:`LossConfigError` naming
    ``loss.name`` otherwise."""
    if value is None and allow_none:
        return None

    def fail(what):
        return LossConfigError(f"loss '{loss}': parameter '{name}' {what}, got {value!r}", param=name)

    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise fail("must be a number")
    if integer and int(value) != value:
        raise fail("must be an integer")
    value = int(value) if integer else float(value)
    if not math.isfinite(value):
        raise fail("must be finite")
    bad_low = low is not None and (value <= low if low_open else value < low)
    bad_high = high is not None and (value >= high if high_open else value > high)
    if bad_low or bad_high:
        lo = "" if low is None else f"{low} {'<' if low_open else '<='} "
        hi = "" if high is None else f" {'<' if high_open else '<='} {high}"
        raise fail(f"must satisfy {lo}{name}{hi}")
    return value


@dataclass(frozen=True)
class Range:
    """The allowed values of one loss parameter, declared next to the loss (its ``ranges``) so that
    the same rule checks a constructor call and, without building anything, a config at load time."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    allow_none: bool = False

    def check(self, loss: str, name: str, value):
        return check_range(loss, name, value, self.low, self.high, low_open=self.low_open,
                           high_open=self.high_open, integer=self.integer, allow_none=self.allow_none)


def check_num_classes(loss: str, num_classes) -> int:
    """``num_classes`` must be a positive int (the K of the logits' class dimension)."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"loss '{loss}': num_classes must be a positive integer, got {num_classes!r}")
    return num_classes


def as_normalizer(normalizer, device) -> Tensor:
    """The loss divisor as a 0-d float32 tensor on ``device``: a positive number or a 0-d tensor."""
    if isinstance(normalizer, Tensor):
        if normalizer.numel() != 1:
            raise ValueError(f"normalizer must be a number or a 0-d tensor, got shape {tuple(normalizer.shape)}")
        return normalizer.detach().reshape(()).to(device=device, dtype=torch.float32)
    if isinstance(normalizer, bool) or not isinstance(normalizer, (int, float)) or not normalizer > 0:
        raise ValueError(f"normalizer must be a positive number (the number of positive anchors, at least 1), "
                         f"got {normalizer!r}")
    return torch.tensor(float(normalizer), device=device)


def check_inputs(name: str, logits: Tensor, labels: Tensor, num_outputs: int, quality=None,
                 needs_quality=False, batch_index=None) -> None:
    """Shapes and dtypes of a loss call: ``logits (N, num_outputs)`` floating, ``labels (N,)``
    int64/int32, and ``quality`` / ``batch_index`` ``(N,)`` where given."""
    if logits.dim() != 2 or logits.shape[1] != num_outputs:
        raise ValueError(f"loss '{name}': logits must have shape (N, {num_outputs}), got {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise ValueError(f"loss '{name}': logits must be floating point, got {logits.dtype}")
    if labels.shape != (logits.shape[0],) or labels.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"loss '{name}': labels must be an int64 tensor of shape ({logits.shape[0]},), "
                         f"got {labels.dtype} {tuple(labels.shape)}")
    if needs_quality and quality is None:
        raise ValueError(f"loss '{name}' needs quality= (the IoU target of each positive anchor)")
    if quality is not None and quality.shape != (logits.shape[0],):
        raise ValueError(f"loss '{name}': quality must have shape ({logits.shape[0]},), got {tuple(quality.shape)}")
    if batch_index is not None and batch_index.shape != (logits.shape[0],):
        raise ValueError(f"loss '{name}': batch_index must have shape ({logits.shape[0]},), "
                         f"got {tuple(batch_index.shape)}")
