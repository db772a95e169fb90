"""How much faster than torchvision *can* float32 inference or training be on this CPU? The arithmetic bound.

    .venv/bin/python benchmarks/bench_arithmetic.py [--settings r18-320-b4,r50-512-b2] [--pairs 3]
    .venv/bin/python benchmarks/bench_arithmetic.py --train --settings r18-320-b4

Both RetinaNets (same architecture and weights, ``benchmarks/common.py``) do the same float32
arithmetic: the convolutions are ~99 % of it, and any speed-up that keeps the numerics (folding,
layout, fewer operator calls, one NMS) can only remove the time spent *outside* that arithmetic.
This script measures how much of it there is left:

1. the FLOPs of one inference batch of each model, or with ``--train`` of one training iteration
   (forward, loss, backward and SGD step, as ``bench_train_step.py`` runs it), counted by
   ``torch.utils.flop_counter.FlopCounterMode``: 2 per multiply-add of the convolutions and matrix
   products, the backward's included;
2. the fastest float32 rate this CPU sustains on the model's own dominant convolution (a head
   layer, 3 × 3, 256 → 256 channels, on the P3 map of the batch, NHWC and NCHW) and on one large
   matrix product, with the benchmark's two threads; the best of them is the "peak" here (a
   convolution's backward runs slower than its forward, so for training the bound is generous);
3. ours and torchvision timed interleaved in one process (``--pairs`` pairs after a warm-up);
4. the share of ours' time spent inside PyTorch's convolution kernels (torch.profiler), and from it
   the **ceiling with these kernels**: torchvision's time over ours' convolution time, the ratio
   ours would reach if everything else (post-processing, loss, element-wise work, the optimiser)
   took no time at all.

Both pad to a multiple of ``--size-divisible`` (default 32, each library's default, as in the other
model benchmarks).

It prints each side's achieved GFLOP/s, the share of ours' time the arithmetic would take at the
peak, and the **bound**: torchvision's time divided by the time of our FLOPs at the peak, i.e.
the largest speed ratio any implementation doing this arithmetic at the fastest rate measured
here could show (a faster algorithm, e.g. Winograd or reduced precision, changes the numerics).
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_train_step import make_step  # noqa: E402
from common import SETTINGS, build_pair, load_average, machine_line, make_batch  # noqa: E402


def count_flops(fn) -> int:
    """FLOPs of one call of ``fn`` (convolutions and matrix products, 2 per multiply-add)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def best_rate(fn, flops: int, repeats: int = 5) -> float:
    """The best GFLOP/s of ``repeats`` timed calls after one warm-up."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return flops / best / 1e9


@torch.inference_mode()
def peak_rates(batch: int, size: int, size_divisible: int = 32) -> dict[str, float]:
    """GFLOP/s of the head's 3 × 3, 256 → 256 convolution on the P3 map (stride 8 of the input padded
    to a multiple of ``size_divisible``) in both layouts, and of a 4096² matrix product."""
    padded = math.ceil(size / size_divisible) * size_divisible
    side = math.ceil(padded / 8)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 256, side, side, generator=g)
    w = torch.randn(256, 256, 3, 3, generator=g) * 0.02
    b = torch.zeros(256)
    conv_flops = 2 * batch * side * side * 256 * 256 * 9
    x_nhwc, w_nhwc = x.contiguous(memory_format=torch.channels_last), w.contiguous(memory_format=torch.channels_last)
    a, m = torch.randn(4096, 4096, generator=g), torch.randn(4096, 4096, generator=g)
    return {
        f"conv 3×3 256→256 on {batch}×{side}² NHWC": best_rate(lambda: F.conv2d(x_nhwc, w_nhwc, b, padding=1), conv_flops),
        f"conv 3×3 256→256 on {batch}×{side}² NCHW": best_rate(lambda: F.conv2d(x, w, b, padding=1), conv_flops),
        "matmul 4096³": best_rate(lambda: a @ m, 2 * 4096 ** 3),
    }


CONV_OPS = ("aten::mkldnn_convolution", "aten::convolution_backward", "mkldnn::_convolution_pointwise")


def convolution_share(run) -> float:
    """The share of one call of ``run`` that PyTorch's convolution kernels take (their self CPU
    time over the whole self CPU time, torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    return sum(e.self_cpu_time_total for e in events if e.key in CONV_OPS) / total


def measure(setting: str, pairs: int, train: bool = False, size_divisible: int = 32) -> None:
    backbone, size, batch = SETTINGS[setting]
    if train:
        runs = {side: make_step(side, setting, size_divisible=size_divisible)[0] for side in ("ours", "torchvision")}
        grad_mode = torch.enable_grad
    else:
        ours, tv = (m.eval() for m in build_pair(backbone, size, cls_bias=0.0, size_divisible=size_divisible))
        images, _ = make_batch(batch, size)
        sizes = [(size, size)] * batch
        runs = {"ours": lambda: ours(images, sizes), "torchvision": lambda: tv(list(images))}
        grad_mode = torch.inference_mode
    with grad_mode():
        flops = {side: count_flops(run) for side, run in runs.items()}
        times = {side: [] for side in runs}
        for run in runs.values():
            run()
        load_before = load_average()
        for _ in range(pairs):
            for side, run in runs.items():
                t0 = time.perf_counter()
                run()
                times[side].append(time.perf_counter() - t0)
        conv_share = convolution_share(runs["ours"])
    peaks = peak_rates(batch, size, size_divisible)
    peak_name, peak = max(peaks.items(), key=lambda kv: kv[1])
    t_ours, t_tv = statistics.median(times["ours"]), statistics.median(times["torchvision"])
    at_peak = flops["ours"] / (peak * 1e9)
    what = "one training iteration" if train else "inference"
    print(f"\n### {setting}, {what}: {batch} images of {size}² padded to {size_divisible}, "
          f"load {load_before} → {load_average()}\n")
    print("| | GFLOP per batch | s per batch (median of %d) | achieved GFLOP/s |\n|---|---:|---:|---:|" % pairs)
    for side, t in (("ours", t_ours), ("torchvision", t_tv)):
        print(f"| {side} | {flops[side] / 1e9:.1f} | {t:.3f} | {flops[side] / t / 1e9:.1f} |")
    for name, rate in peaks.items():
        print(f"| {name} (alone) | | | {rate:.1f} |")
    print(f"\n- speed ratio torchvision / ours: {t_tv / t_ours:.2f}× (medians)")
    print(f"- ours' FLOPs at the peak ({peak_name}, {peak:.1f} GFLOP/s) take {at_peak:.3f} s = "
          f"{at_peak / t_ours:.0%} of ours' time")
    print(f"- **bound**: torchvision's time / our FLOPs at that peak = **{t_tv / at_peak:.2f}×**: the most any "
          f"implementation of the same float32 arithmetic could gain over torchvision here")
    t_conv = conv_share * t_ours
    print(f"- ours' convolutions (PyTorch's oneDNN kernels, profiled) take {conv_share:.0%} of ours' time, "
          f"{t_conv:.3f} s; **ceiling with these kernels**: torchvision's time / that = **{t_tv / t_conv:.2f}×**, "
          f"the ratio ours would show if everything but its convolutions took no time", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--pairs", type=int, default=3, help="interleaved (ours, torchvision) pairs")
    parser.add_argument("--train", action="store_true", help="one training iteration instead of inference")
    parser.add_argument("--size-divisible", type=int, default=32, help="both pad to a multiple of this")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    print(machine_line())
    for setting in args.settings.split(","):
        measure(setting, args.pairs, args.train, args.size_divisible)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
