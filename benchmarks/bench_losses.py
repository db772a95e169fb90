"""Forward + backward time of every sigmoid loss vs ``torchvision.ops.sigmoid_focal_loss`` (eager,
with the dense one-hot target it needs), in one process, 2 CPU threads.

    .venv/bin/python benchmarks/bench_losses.py [--repeats 10] [--sizes 100000x80,200000x10] [--threads 2]

Prints a markdown table: median milliseconds per forward+backward (after a warm-up that includes
the one-time compile, reported separately; all variants timed round-robin), the speed-up of our ``focal`` over torchvision and the cost
of every loss relative to our ``focal``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torchvision

from focaldet.losses import build_loss


def make_inputs(n: int, k: int, num_pos: int = 100, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, k, generator=g) * 2 - 4.0  # mostly confident negatives, as after prior init
    labels = torch.full((n,), k, dtype=torch.long)
    pos = torch.randperm(n, generator=g)[:num_pos]
    labels[pos] = torch.randint(0, k, (num_pos,), generator=g)
    labels[torch.randperm(n, generator=g)[: n // 20]] = -1  # ignore band
    labels[pos] = torch.randint(0, k, (num_pos,), generator=g)
    quality = torch.rand(n, generator=g)
    return x, labels, quality


def time_interleaved(steps: dict, repeats: int):
    """Median seconds per step and first-call seconds. The steps are timed round-robin, so a change
    in machine load during the run hits every step alike and the ratios stay fair."""
    first = {}
    for name, step in steps.items():
        t0 = time.perf_counter()
        step()  # warm-up: compiles on first use
        first[name] = time.perf_counter() - t0
        step()
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}, first


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--sizes", default="100000x80,200000x10")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", default="", help="comma-separated subset of the rows, e.g. focal,equalized_focal")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    variants = [("focal", {}, False), ("focal", {}, True), ("bce", {}, False), ("balanced_bce", {}, False),
                ("modified_focal", {}, False), ("modified_focal", {"max_weight": 1e4}, False),
                ("focal_star", {}, False), ("poly_focal", {}, False), ("quality_focal", {}, False),
                ("varifocal", {}, False), ("equalized_focal", {}, True), ("ghm", {}, False)]
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, threads {torch.get_num_threads()}, "
          f"median of {args.repeats} after warm-up, load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs at start\n")
    print("| loss | N × K | ms fwd+bwd | first call s | vs our focal | torchvision ms | speed-up vs torchvision |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for n, k in sizes:
        x, labels, quality = make_inputs(n, k)
        normalizer = float(((labels >= 0) & (labels < k)).sum())

        def tv_step():
            xr = x.detach().requires_grad_()
            valid = labels >= 0
            target = torch.nn.functional.one_hot(labels.clamp(min=0), k + 1)[:, :k].to(x.dtype)
            loss = torchvision.ops.sigmoid_focal_loss(xr[valid], target[valid], alpha=0.25, gamma=2.0,
                                                      reduction="sum") / normalizer
            loss.backward()

        def our_step(loss_fn):
            def step():
                xr = x.detach().requires_grad_()
                loss_fn(xr, labels, normalizer=normalizer, quality=quality).backward()
            return step

        steps = {"torchvision": tv_step}
        for name, params, track in variants:
            if args.only and name not in args.only.split(","):
                continue
            label = name + "".join(f", {a}={b:g}" for a, b in params.items())
            label += " (+grad stats)" if track and name != "equalized_focal" else ""
            steps[label] = our_step(build_loss(name, num_classes=k, track_grad_stats=track, **params))
        med, first = time_interleaved(steps, args.repeats)
        tv, focal = med.pop("torchvision"), med["focal"]
        for label, t in med.items():
            tv_cols = f"{tv * 1e3:.1f} | **{tv / t:.1f}×**" if label == "focal" else " | "
            print(f"| {label} | {n}×{k} | {t * 1e3:.1f} | {first[label]:.1f} | {t / focal:.2f} | {tv_cols} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
