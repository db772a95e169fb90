"""User-facing errors. Each carries a message that names what is wrong (file, record, field,
key, iteration) and an optional hint on what to do; the CLI prints them as one line, without a
traceback."""
from __future__ import annotations


class FocaldetError(Exception):
    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.hint = hint


class DataError(FocaldetError, ValueError):
    """A malformed annotation file or image; the message names the file, record and field."""


class CheckpointError(FocaldetError):
    """A checkpoint that cannot be loaded (truncated, wrong model, newer format, unsafe)."""


class TrainingDiverged(FocaldetError, FloatingPointError):
    """A non-finite loss; the message names the iteration, loss values, lr, loss and the last
    good checkpoint."""
