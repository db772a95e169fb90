"""One full training iteration (forward + loss + backward + SGD step, data already in memory) of
focaldet's RetinaNet and of ``torchvision.models.detection.RetinaNet`` with the same architecture and
the same initial weights (see ``benchmarks/common.py``), the same random images and boxes, 2 threads.

    .venv/bin/python benchmarks/bench_train_step.py [--settings r18-320-b4,r50-512-b2] [--pairs 3] [--steps 3]
    .venv/bin/python benchmarks/bench_train_step.py --amp bf16          # ours in bf16 autocast vs torchvision fp32
    .venv/bin/python benchmarks/bench_train_step.py --device cuda --amp fp16 --amp-reference
    .venv/bin/python benchmarks/bench_train_step.py --profile r18-320-b4   # torch.profiler top ops

Timing is interleaved in *fresh processes*: ours, torchvision, ours, torchvision, … (``--pairs``
pairs). Each process builds its model, runs 1 warm-up iteration (which includes the one-time
compile of our loss kernel), resets the kernel's peak-RSS mark (VmHWM; on CUDA the allocator's
peak) and times ``--steps`` iterations; its median is one sample. The ratio of each adjacent pair
(torchvision / ours, > 1 = ours faster) cancels most of a shared machine's changing load; the
median of those ratios is printed with its min–max spread, the load average before and after each
setting, and the median peak memory of each side (each process's memory is its own).

Ours runs channels_last (the default, ``runtime.channels_last``) unless ``--ours-nchw``.
``--channels-last`` gives torchvision the same
(weights in NHWC; its own transform batches the input, the convolutions follow the weights).
``--amp`` applies to ours only unless ``--amp-reference`` (the targets compare against fp32 torchvision).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (SETTINGS, add_model_bench_arguments, amp_dtype, autocast, bf16_note, build_pair,  # noqa: E402
                    load_average, machine_line, make_batch, median_time, pad_note, peak_rss_bytes, ratio_summary, reset_peak_rss, rss_bytes,
                    synchronize)

GiB = 1024 ** 3


def make_step(side: str, setting: str, device: str = "cpu", amp: str = "none", channels_last: bool = False,
              ours_nchw: bool = False, size_divisible: int = 32, ours_size_divisible: int | None = None):
    """A closure running one training iteration of ``side`` ("ours" or "torchvision")."""
    backbone, size, batch = SETTINGS[setting]
    ours, tv = build_pair(backbone, size, overrides=("runtime.channels_last=false",) if ours_nchw else (),
                          size_divisible=size_divisible, ours_size_divisible=ours_size_divisible)
    model = (tv if side == "torchvision" else ours).to(device).train()
    del ours, tv
    if side == "torchvision" and channels_last:
        model = model.to(memory_format=torch.channels_last)
    images, targets = make_batch(batch, size)
    images = images.to(device)
    targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
    image_list = list(images)
    sizes = [(size, size)] * batch
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9, weight_decay=1e-4)
    dtype = amp_dtype(amp)

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast(dtype, device):
            if side == "ours":
                losses = model(images, sizes, targets)
                loss = losses["loss_cls"] + losses["loss_box"]
            else:
                losses = model(image_list, targets)
                loss = losses["classification"] + losses["bbox_regression"]
        loss.float().backward()
        opt.step()
        synchronize(device)
        return loss

    return step, batch


def worker(side: str, setting: str, steps: int, device: str, amp: str, channels_last: bool,
           ours_nchw: bool = False, size_divisible: int = 32, ours_size_divisible: int | None = None) -> dict:
    """Run in a fresh process: time ``steps`` iterations after 1 warm-up; report time and memory."""
    torch.set_num_threads(2)
    step, batch = make_step(side, setting, device, amp, channels_last, ours_nchw, size_divisible,
                            ours_size_divisible)
    median_time(step, repeats=0, warmup=1)
    rss0 = rss_bytes()
    reset_peak_rss()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    med, times = median_time(step, steps, warmup=0)
    out = {"side": side, "batch": batch, "median_s": med, "times": times, "rss_before": rss0,
           "peak": peak_rss_bytes()}
    if device.startswith("cuda"):
        out["peak"] = torch.cuda.max_memory_allocated()
    return out


def run_worker(side: str, setting: str, args) -> dict:
    amp = args.amp if side == "ours" or args.amp_reference else "none"
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", side, "--settings", setting, "--steps",
           str(args.steps), "--device", args.device, "--amp", amp]
    if args.channels_last:
        cmd.append("--channels-last")
    if args.ours_nchw:
        cmd.append("--ours-nchw")
    cmd += ["--size-divisible", str(args.size_divisible)]
    if args.ours_size_divisible is not None:
        cmd += ["--ours-size-divisible", str(args.ours_size_divisible)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{side} worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(setting: str, args) -> None:
    load_before = load_average()
    ours, tv = [], []
    for i in range(args.pairs):  # A B A B …: each adjacent pair sees nearly the same load
        ours.append(run_worker("ours", setting, args))
        tv.append(run_worker("torchvision", setting, args))
        print(f"  {setting} pair {i + 1}: ours {ours[-1]['median_s']:.3f} s, torchvision {tv[-1]['median_s']:.3f} s, "
              f"ratio {tv[-1]['median_s'] / ours[-1]['median_s']:.2f}, load {load_average()}", file=sys.stderr, flush=True)
    ratios = [t["median_s"] / o["median_s"] for o, t in zip(ours, tv)]
    batch = ours[0]["batch"]
    o_s = statistics.median(r["median_s"] for r in ours)
    t_s = statistics.median(r["median_s"] for r in tv)
    o_m = statistics.median(r["peak"] for r in ours) / GiB
    t_m = statistics.median(r["peak"] for r in tv) / GiB
    print(f"| {setting} | {o_s:.3f} | {t_s:.3f} | {batch / o_s:.2f} | {batch / t_s:.2f} | **{ratio_summary(ratios)}** "
          f"| {o_m:.2f} | {t_m:.2f} | {o_m / t_m:.2f} | {load_before} → {load_average()} |", flush=True)


def profile(setting: str, rows: int, device: str, amp: str, size_divisible: int = 32) -> None:
    from torch.profiler import ProfilerActivity, profile as torch_profile

    torch.set_num_threads(2)
    for side in ("ours", "torchvision"):
        step, _ = make_step(side, setting, device, amp if side == "ours" else "none", size_divisible=size_divisible)
        median_time(step, repeats=0, warmup=2)
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            step()
        print(f"\n### {side}, {setting}, one training iteration (self CPU time)\n")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=40))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_bench_arguments(parser, 3, "fresh-process pairs (ours, torchvision) per setting")
    parser.add_argument("--steps", type=int, default=3, help="timed iterations per process, after 1 warm-up")
    parser.add_argument("--ours-nchw", action="store_true",
                        help="ours with runtime.channels_last=false (NCHW: faster training of large ResNets on CPU)")
    parser.add_argument("--worker", choices=("ours", "torchvision"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.settings, args.steps, args.device, args.amp, args.channels_last,
                                args.ours_nchw, args.size_divisible, args.ours_size_divisible)))
        return 0
    if args.profile:
        profile(args.profile, args.rows, args.device, args.amp, args.size_divisible)
        return 0
    torch.set_num_threads(2)
    ref = f"torchvision {'amp ' + args.amp if args.amp_reference else 'fp32'}" + (" NHWC" if args.channels_last else "")
    ours = f"ours {'NCHW' if args.ours_nchw else 'NHWC'} amp {args.amp}" + pad_note(args)
    print(f"{machine_line()}; device {args.device}, {ours} vs {ref}{bf16_note(args.amp, args.device)}; "
          f"{args.pairs} fresh-process pairs, median of {args.steps} iterations after 1 warm-up each\n")
    mem = "peak GPU GiB" if args.device.startswith("cuda") else "peak RSS GiB"
    print(f"| setting | ours s/iter | torchvision s/iter | ours img/s | torchvision img/s | speed ratio (median, "
          f"min–max) | ours {mem} | torchvision {mem} | memory ratio | load 1/5/15 before → after |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for setting in args.settings.split(","):
        measure(setting, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
