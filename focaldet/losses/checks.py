"""Parameter checks shared by the loss constructors and :func:`focaldet.losses.build_loss`."""
from __future__ import annotations

import math

from focaldet.errors import FocaldetError


class LossConfigError(FocaldetError, ValueError):
    """A wrong loss name, an unknown parameter or a parameter out of its range; the message names
    the loss and the parameter and lists what is valid."""


def check_range(loss: str, name: str, value, low=None, high=None, *, low_open=False,
                integer=False, allow_none=False):
    """Return ``value`` as float (or int) after checking ``low <= value <= high`` (``low < value``
    when ``low_open``); raise :class:`LossConfigError` naming ``loss.name`` otherwise."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LossConfigError(f"loss '{loss}': parameter '{name}' must be a number, got {value!r}")
    if integer and int(value) != value:
        raise LossConfigError(f"loss '{loss}': parameter '{name}' must be an integer, got {value!r}")
    value = int(value) if integer else float(value)
    if not math.isfinite(value):
        raise LossConfigError(f"loss '{loss}': parameter '{name}' must be finite, got {value!r}")
    bad_low = low is not None and (value <= low if low_open else value < low)
    bad_high = high is not None and value > high
    if bad_low or bad_high:
        lo = "" if low is None else f"{low} {'<' if low_open else '<='} "
        hi = "" if high is None else f" <= {high}"
        raise LossConfigError(f"loss '{loss}': parameter '{name}' must satisfy {lo}{name}{hi}, got {value!r}")
    return value


def check_num_classes(loss: str, num_classes) -> int:
    """``num_classes`` must be a positive int (the K of the logits' class dimension)."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"loss '{loss}': num_classes must be a positive integer, got {num_classes!r}")
    return num_classes
