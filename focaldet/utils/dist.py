"""Everything distributed, in one place: rank queries, collectives that are no-ops in a single
process, and the process-group set-up / teardown for ``torchrun`` (gloo on CPU, NCCL on GPU).

``torchrun`` exports RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; without them the
run is single-process and every helper here degrades to the obvious single-process answer.

Teardown: a gloo process can abort at interpreter exit ("terminate called without an active
exception") when its background threads are still being torn down while Python finalises.
:func:`teardown` therefore synchronises all ranks, destroys the process group, flushes every
stream and — when a process group was used — leaves with ``os._exit`` so no C++ destructor runs
during interpreter shutdown. Everything that matters was written atomically before that point.

Failure: a rank that fails must not wait for the others (they may sit in a collective it will
never join, until the 30-minute timeout). :func:`abort` leaves at once, without any collective;
``torchrun`` then stops the other workers within seconds.
"""
from __future__ import annotations

import datetime
import os
import re
import sys
from typing import Optional

import torch
import torch.distributed as dist

_DEVICE_RE = re.compile(r"^(auto|cpu|cuda|cuda:\d+|mps)$")


# --------------------------------------------------------------------------------------------
# Rank queries and collectives (no-ops without a process group)
# --------------------------------------------------------------------------------------------
def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over all ranks in place (no-op without a process group) and return it."""
    if is_distributed() and get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier() -> None:
    if is_distributed() and get_world_size() > 1:
        dist.barrier()


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


# --------------------------------------------------------------------------------------------
# Process group life cycle
# --------------------------------------------------------------------------------------------
def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def check_device(device: str) -> None:
    """Raise a one-line :class:`~focaldet.config.ConfigError` for anything but auto / cpu / cuda /
    cuda:N / mps, and for CUDA on a machine without it."""
    from focaldet.config import ConfigError

    if not isinstance(device, str) or not _DEVICE_RE.match(device):
        raise ConfigError(f"runtime.device={str(device)[:40]!r}: not a device; use auto, cpu, cuda, cuda:N or mps")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"runtime.device={device!r}: CUDA is not available on this machine",
                          hint="use runtime.device=cpu")
    if device.startswith("cuda:") and int(device[5:]) >= torch.cuda.device_count():
        raise ConfigError(f"runtime.device={device!r}: this machine has {torch.cuda.device_count()} GPU(s)")
    if device == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError("runtime.device='mps': MPS is not available on this machine", hint="use runtime.device=cpu")


def setup(device: str = "auto", timeout_s: int = 1800) -> torch.device:
    """Pick the device and, under torchrun, start the process group. Returns the device this
    rank computes on (``cuda:LOCAL_RANK`` under torchrun with GPUs)."""
    check_device(device)
    want_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if want_cuda:
        dev = torch.device(device if ":" in device else f"cuda:{local_rank}")
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("mps" if device == "mps" else "cpu")
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


def abort(exit_code: int) -> None:
    """Leave this rank now, without any collective: the other ranks may be inside one this rank
    will never join. torchrun sees the exit code and stops them. A no-op without a process group
    (the caller returns the exit code as usual)."""
    if not is_distributed():
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)
