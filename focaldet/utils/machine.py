"""Which machine and which arithmetic a run used, in words a report can print.

float32 convolutions round differently on different CPUs, and ``train.amp: bf16`` trains in
bfloat16 only where the CPU computes it natively (float32 elsewhere, ``engine/amp.py``), so a run
is reproducible to the digit only on the same kind of machine in the same precision: every
``result.json`` records both.
"""
from __future__ import annotations

import platform
from typing import Optional

import torch


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``'s "model name" on Linux, else what ``platform``
    reports), e.g. ``"AMD EPYC"`` or ``"Intel(R) Xeon(R) Platinum 8480+"``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, sep, value = line.partition(":")
                if sep and key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def describe_device(device: torch.device) -> str:
    """``"cuda: NVIDIA H200"`` or ``"cpu: AMD EPYC, 2 threads"`` (the intra-op threads torch uses)."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    if device.type == "cpu":
        n = torch.get_num_threads()
        return f"cpu: {cpu_name()}, {n} thread{'s' if n != 1 else ''}"
    return device.type


def precision_name(amp_dtype: Optional[torch.dtype]) -> str:
    """The arithmetic of the forward pass: ``float32`` without autocast, else the autocast dtype."""
    return "float32" if amp_dtype is None else str(amp_dtype).removeprefix("torch.")
