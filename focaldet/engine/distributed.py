"""Process-group set-up and teardown for ``torchrun`` (gloo on CPU, NCCL on GPU).

``torchrun`` exports RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; without them the
run is single-process and nothing here does anything.

Teardown: a gloo process can abort at interpreter exit ("terminate called without an active
exception") when its background threads are still being torn down while Python finalises.
:func:`teardown` therefore synchronises all ranks, destroys the process group, flushes every
stream and — when a process group was used — leaves with ``os._exit`` so no C++ destructor runs
during interpreter shutdown. Everything that matters was written atomically before that point.
"""
from __future__ import annotations

import datetime
import os
import sys
from typing import Optional

import torch
import torch.distributed as dist

from focaldet.utils.dist import get_rank, get_world_size, is_distributed


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def setup(device: str = "auto", timeout_s: int = 1800) -> torch.device:
    """Pick the device and, under torchrun, start the process group. Returns the device this
    rank computes on (``cuda:LOCAL_RANK`` under torchrun with GPUs)."""
    want_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if device.startswith("cuda") and not torch.cuda.is_available():
        from focaldet.config import ConfigError
        raise ConfigError(f"runtime.device={device!r}: CUDA is not available on this machine",
                          hint="use runtime.device=cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if want_cuda:
        dev = torch.device(device if ":" in device else f"cuda:{local_rank}")
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    if launched_by_torchrun() and not is_distributed():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        kwargs = {"device_id": dev} if dev.type == "cuda" else {}
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s), **kwargs)
    return dev


def teardown(exit_code: Optional[int] = None) -> None:
    """Synchronise, destroy the process group and flush. With ``exit_code`` and a process group
    that was in use, end the process right here with ``os._exit(exit_code)`` (see module doc)."""
    had_group = is_distributed()
    if had_group:
        try:
            if get_world_size() > 1:
                dist.barrier()
        finally:
            dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    if had_group and exit_code is not None:
        os._exit(exit_code)


def all_gather_objects(obj) -> list:
    """``[obj of rank 0, obj of rank 1, …]``; ``[obj]`` without a process group."""
    if not is_distributed() or get_world_size() == 1:
        return [obj]
    out = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, src: int = 0):
    if not is_distributed() or get_world_size() == 1:
        return obj
    box = [obj if get_rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]
