"""Mixed precision: the one place that turns ``train.amp`` into an autocast dtype.

``bf16`` runs on CUDA and on CPUs (PyTorch's CPU autocast supports bfloat16; it is fast on CPUs
with AVX512-BF16 or AMX and correct, if slower, elsewhere). ``fp16`` needs CUDA: CPU autocast has
no useful fp16 path, so it is refused with one line instead of being ignored.
"""
from __future__ import annotations

import contextlib
import sys
from typing import Optional

import torch

from focaldet.config import ConfigError


def amp_settings(amp: str, device: torch.device) -> tuple[Optional[torch.dtype], bool]:
    """(autocast dtype or None, GradScaler enabled) for ``train.amp`` on ``device``."""
    if amp == "none":
        return None, False
    if amp == "bf16":
        if device.type == "cpu" and not cpu_has_fast_bf16():
            _warn_once("train.amp=bf16: this CPU has no native bfloat16 (AVX512-BF16/AMX); bf16 would "
                       "be emulated and many times slower, so this run uses float32")
            return None, False
        return torch.bfloat16, False
    if device.type != "cuda":
        raise ConfigError(f"train.amp=fp16 needs a CUDA device (this run is on {device.type}); "
                          "use train.amp=bf16 on CPU")
    return torch.float16, True


def cpu_has_fast_bf16() -> bool:
    """Whether oneDNN reports native bfloat16 on this CPU (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        print(f"focaldet: {message}", file=sys.stderr)


def autocast(amp_dtype: Optional[torch.dtype], device: torch.device):
    """An autocast context for ``amp_dtype`` (a no-op context when it is None)."""
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=amp_dtype)
