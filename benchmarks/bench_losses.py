"""Forward + backward time of the sigmoid losses against ``torchvision.ops.sigmoid_focal_loss``
(eager, with the dense one-hot target it needs) and against our own ``focal``.

    python benchmarks/bench_losses.py [--pairs 15] [--sizes 100000x80,200000x10] [--threads 2]
                                      [--only focal,equalized_focal,ghm] [--device cpu|cuda]

Every round times torchvision, our ``focal`` and every other row once, in that order (A B C … A B C
…), so a change in machine load hits all of them alike; a ratio is taken within each round (one
"pair") and the table prints the median of the per-round ratios with its spread (the 25th–75th
percentile of those ratios). The load average is printed before and after each size: compare
ratios, not milliseconds, across machines. The first call of each loss (the one-time
``torch.compile``) is timed separately and not part of the rounds.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torchvision

from focaldet.losses import build_loss

# (row label, loss name, parameters, track_grad_stats)
ROWS = [
    ("focal (+grad stats)", "focal", {}, True),
    ("bce", "bce", {}, False),
    ("balanced_bce", "balanced_bce", {}, False),
    ("modified_focal", "modified_focal", {}, False),
    ("modified_focal, max_weight=1e4", "modified_focal", {"max_weight": 1e4}, False),
    ("focal_star", "focal_star", {}, False),
    ("poly_focal", "poly_focal", {}, False),
    ("quality_focal", "quality_focal", {}, False),
    ("varifocal", "varifocal", {}, False),
    ("equalized_focal", "equalized_focal", {}, True),
    ("ghm", "ghm", {}, False),
]


def make_inputs(n: int, k: int, device: str, num_pos: int = 100, seed: int = 0):
    """Logits ``(n, k)`` like those after prior-probability init, ~100 positives, 5 % ignored rows."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, k, generator=g) * 2 - 4.0
    labels = torch.full((n,), k, dtype=torch.long)
    labels[torch.randperm(n, generator=g)[: n // 20]] = -1
    pos = torch.randperm(n, generator=g)[:num_pos]
    labels[pos] = torch.randint(0, k, (num_pos,), generator=g)
    quality = torch.rand(n, generator=g)
    return x.to(device), labels.to(device), quality.to(device)


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    pos = (len(s) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({percentile(values, 0.25):.2f}–{percentile(values, 0.75):.2f})"


def timer(device: str):
    """Wall seconds of one call, with the device synchronised before and after (CUDA)."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def run(step) -> float:
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        return time.perf_counter() - t0
    return run


def make_steps(n: int, k: int, device: str, only: set[str], compile_: bool | None):
    x, labels, quality = make_inputs(n, k, device)
    normalizer = float(((labels >= 0) & (labels < k)).sum())

    def torchvision_step():
        xr = x.detach().requires_grad_()
        valid = labels >= 0
        target = torch.nn.functional.one_hot(labels.clamp(min=0), k + 1)[:, :k].to(x.dtype)
        loss = torchvision.ops.sigmoid_focal_loss(xr[valid], target[valid], alpha=0.25, gamma=2.0,
                                                  reduction="sum") / normalizer
        loss.backward()

    def ours(name, params, track):
        extra = {} if compile_ is None else {"compile": compile_}
        loss_fn = build_loss(name, num_classes=k, track_grad_stats=track, **params, **extra).to(device)

        def step():
            xr = x.detach().requires_grad_()
            loss_fn(xr, labels, normalizer=normalizer, quality=quality).backward()
        return step

    steps = {"torchvision": torchvision_step, "focal": ours("focal", {}, False)}
    for label, name, params, track in ROWS:
        if not only or name in only:
            steps[label] = ours(name, params, track)
    return steps


def run_size(n: int, k: int, args, compile_) -> None:
    steps = make_steps(n, k, args.device, set(filter(None, args.only.split(","))), compile_)
    run = timer(args.device)
    first = {label: run(step) for label, step in steps.items()}  # compiles on first use
    for step in steps.values():
        step()
    load_before = os.getloadavg()[0]
    times = {label: [] for label in steps}
    for _ in range(args.pairs):
        for label, step in steps.items():
            times[label].append(run(step))
    load_after = os.getloadavg()[0]
    tv, focal = times["torchvision"], times["focal"]
    print(f"\n{n} × {k}, {args.pairs} rounds, load average {load_before:.1f} → {load_after:.1f} "
          f"on {os.cpu_count()} CPUs\n")
    print("| loss | ms fwd+bwd (median) | first call s | × our focal, median (IQR) | "
          "torchvision ms | torchvision / ours, median (IQR) |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, ts in times.items():
        if label == "torchvision":
            continue
        vs_focal = spread([t / f for t, f in zip(ts, focal)])
        tv_cols = " | "
        if label == "focal":
            tv_cols = f"{statistics.median(tv) * 1e3:.1f} | **{spread([a / b for a, b in zip(tv, ts)])}×**"
        print(f"| {label} | {statistics.median(ts) * 1e3:.1f} | {first[label]:.1f} | {vs_focal} | {tv_cols} |",
              flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=15, help="interleaved rounds (default 15)")
    parser.add_argument("--sizes", default="100000x80,200000x10", help="N×K list, e.g. 100000x80")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (ignored on CUDA)")
    parser.add_argument("--only", default="", help="comma-separated loss names besides focal, e.g. ghm")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--no-compile", action="store_true", help="build our losses with compile=False")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    torch.set_num_threads(args.threads)
    compile_ = False if args.no_compile else True
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, device {args.device}, "
          f"threads {torch.get_num_threads()}, compile {compile_ is not False}")
    for size in args.sizes.split(","):
        n, k = (int(v) for v in size.split("x"))
        run_size(n, k, args, compile_)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
