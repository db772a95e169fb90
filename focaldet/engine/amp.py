"""Mixed precision: the one place that turns ``train.amp`` into an autocast dtype.

``bf16`` runs on CUDA and on CPUs (PyTorch's CPU autocast supports bfloat16; it is fast on CPUs
with AVX512-BF16 or AMX and correct, if slower, elsewhere). ``fp16`` needs CUDA: CPU autocast has
no useful fp16 path, so it is refused with one line instead of being ignored.
"""
from __future__ import annotations

import contextlib
from typing import Optional

import torch

from focaldet.config import ConfigError


def amp_settings(amp: str, device: torch.device) -> tuple[Optional[torch.dtype], bool]:
    """(autocast dtype or None, GradScaler enabled) for ``train.amp`` on ``device``."""
    if amp == "none":
        return None, False
    if amp == "bf16":
        return torch.bfloat16, False
    if device.type != "cuda":
        raise ConfigError(f"train.amp=fp16 needs a CUDA device (this run is on {device.type}); "
                          "use train.amp=bf16 on CPU")
    return torch.float16, True


def autocast(amp_dtype: Optional[torch.dtype], device: torch.device):
    """An autocast context for ``amp_dtype`` (a no-op context when it is None)."""
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=amp_dtype)
