"""Repeat a tiny 2-process gloo run many times and count the runs that fail after finishing.

A gloo process sometimes aborts at interpreter exit ("terminate called without an active
exception") although all its work is done. This script launches 2 ranks
``--runs`` times per teardown mode (both ranks started with torchrun's environment variables)
and counts runs in which a rank exits non-zero:

- ``plain``:  ``destroy_process_group()`` and a normal interpreter exit (what most scripts do);
- ``engine``: :func:`focaldet.utils.dist.teardown` — barrier, destroy, flush, ``os._exit``.

Each worker does what a focaldet training rank does with the process group: a DDP model, a few
optimizer steps with all-reduced gradients, an ``all_gather_object`` like the evaluator's, then
teardown. Usage::

    .venv/bin/python benchmarks/ddp_teardown.py --runs 100 [--modes plain engine]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time


def worker(mode: str) -> None:
    import torch
    import torch.distributed as dist

    from focaldet.utils import dist as distributed

    torch.set_num_threads(1)
    distributed.setup("cpu")
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Sequential(torch.nn.Linear(16, 32),
                                                                          torch.nn.ReLU(), torch.nn.Linear(32, 4)))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(5):
        loss = model(torch.randn(8, 16)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    gathered = distributed.all_gather_objects({"rank": dist.get_rank(), "n": 3})
    assert len(gathered) == 2
    if mode == "plain":
        dist.destroy_process_group()
        return  # normal interpreter exit
    distributed.teardown(exit_code=0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=100, help="launches per mode")
    ap.add_argument("--modes", nargs="+", default=["plain", "engine"], choices=["plain", "engine"])
    ap.add_argument("--worker", choices=["plain", "engine"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker)
        return 0
    env = dict(os.environ, OMP_NUM_THREADS="1")
    failures = {m: 0 for m in args.modes}
    messages = {m: {} for m in args.modes}
    t0 = time.time()
    for i in range(args.runs):
        for mode in args.modes:  # interleaved, so both modes see the same machine load
            port = str(29600 + (os.getpid() + 7 * i + len(mode)) % 2000)
            # The two ranks are started the way torchrun starts them (same environment variables),
            # without the launcher process itself, to keep each repetition cheap.
            procs = [subprocess.Popen([sys.executable, __file__, "--worker", mode], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True,
                                      env=dict(env, RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2",
                                               LOCAL_WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=port))
                     for r in range(2)]
            outs = [(p.wait(), p.communicate()[1]) for p in procs]
            bad = [(rc, err) for rc, err in outs if rc != 0]
            if bad:
                failures[mode] += 1
                rc, err = bad[0]
                key = next((ln for ln in err.splitlines() if "terminate" in ln or "Error" in ln),
                           err.strip().splitlines()[-1] if err.strip() else f"rc={rc}")
                messages[mode][key] = messages[mode].get(key, 0) + 1
        if (i + 1) % 5 == 0 or i + 1 == args.runs:
            print(f"after {i + 1} runs each ({time.time() - t0:.0f}s): "
                  + ", ".join(f"{m} {failures[m]}/{i + 1} failed" for m in args.modes), flush=True)
    for mode in args.modes:
        for msg, n in messages[mode].items():
            print(f"  {mode}: {n} x {msg[:160]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
