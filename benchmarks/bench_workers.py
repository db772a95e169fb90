"""Runs per hour of ``focaldet compare`` in one process against ``--workers N``: does splitting a
comparison over processes pay on this CPU?

    .venv/bin/python benchmarks/bench_workers.py [--pairs 3] [--iters 150] [--workers 2] [key=value ...]

One sample is a whole ``focaldet compare`` of N runs (focal and EFL, seeds 0.. as needed) of the
demo's CPU preset shortened to ``--iters`` iterations, its final evaluation on the val images
included, in a fresh output folder: side A trains them one after the other in one process with
all the CPU's threads (``runtime.threads`` = CPUs), side B with ``--workers N`` and
``runtime.threads`` = CPUs / N. Samples are interleaved A, B, A, B, … so a shared machine's changing
load hits both sides; the printed ratio is A's wall time / B's per adjacent pair (> 1: the workers
finish the runs sooner), its median and min–max spread, with the load average. The benchmark must
be cached first (``focaldet data make`` or one ``focaldet demo``); the first sample would otherwise
include its generation.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import load_average, machine_line, ratio_summary  # noqa: E402


def one_sample(out: str, workers: int, threads: int, iters: int, extra: list[str]) -> float:
    seeds = max(1, -(-workers // 2))  # two losses per seed: enough runs to keep every worker busy
    cmd = [sys.executable, "-m", "focaldet", "compare", "lt_stamps_cpu", "--losses", "focal,equalized_focal",
           "--seeds", str(seeds), "--out", out, "--no-plots", "--workers", str(workers),
           f"runtime.threads={threads}", f"train.max_iters={iters}", "train.warmup_iters=10",
           f"train.milestones=[{int(iters * 0.85)}]", "train.eval_interval=0", f"train.ckpt_interval={iters}",
           *extra]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        sys.exit(f"bench_workers: `{' '.join(cmd)}` exited with {done.returncode}:\n{done.stderr[-2000:]}")
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--iters", type=int, default=150, help="iterations per run")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("overrides", nargs="*", help="config overrides for every run, e.g. data.root=/abs/data")
    args = ap.parse_args(argv)
    cpus = os.cpu_count() or 1
    if args.workers < 2 or cpus % args.workers:
        ap.error(f"--workers must be ≥ 2 and divide the {cpus} CPUs")
    one, many = cpus, cpus // args.workers
    print(f"machine: {machine_line()}")
    print(f"A: one process x {one} threads; B: --workers {args.workers} x {many} thread(s); "
          f"{args.iters} iterations per run, the final evaluation included")
    ratios = []
    root = tempfile.mkdtemp(prefix="bench_workers_")
    try:
        for i in range(args.pairs):
            a = one_sample(os.path.join(root, f"a{i}"), 1, one, args.iters, args.overrides)
            b = one_sample(os.path.join(root, f"b{i}"), args.workers, many, args.iters, args.overrides)
            ratios.append(a / b)
            print(f"pair {i + 1}: A {a:.1f} s, B {b:.1f} s, A/B {a / b:.2f}  (load {load_average()})", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"--workers {args.workers}: {ratio_summary(ratios)} the runs per hour of one process  (load {load_average()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
