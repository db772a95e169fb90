"""One full training iteration (forward + loss + backward + SGD step, data already in memory) of
focaldet's RetinaNet and of ``torchvision.models.detection.RetinaNet`` with the same architecture
(see ``benchmarks/common.py``), the same random images and boxes, 2 threads.

    .venv/bin/python benchmarks/bench_train_step.py [--settings r18-320-b4,r50-512-b2] [--repeats 5]
    .venv/bin/python benchmarks/bench_train_step.py --profile r18-320-b4   # torch.profiler top ops

Each side runs in its own fresh subprocess, so its peak memory is its own: the kernel's peak-RSS
mark (VmHWM) is reset after the warm-up (which includes the one-time compile of our loss kernel)
and read after the timed steps; "step memory" is that peak minus the RSS before the timed steps.
Prints a markdown table: median seconds per iteration, images/s, memory and the ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (SETTINGS, build_pair, machine_line, make_batch, median_time, peak_rss_bytes,  # noqa: E402
                    reset_peak_rss, rss_bytes)

GiB = 1024 ** 3


def make_step(side: str, setting: str, device: str = "cpu"):
    backbone, size, batch = SETTINGS[setting]
    ours, tv = build_pair(backbone, size)
    model = (tv if side == "torchvision" else ours).to(device).train()
    del ours, tv
    images, targets = make_batch(batch, size)
    images = images.to(device)
    if side == "ours_cl":  # what channels_last would give: weights and input in NHWC (model unchanged)
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
    image_list = list(images)
    sizes = [(size, size)] * batch
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9, weight_decay=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        if side != "torchvision":
            losses = model(images, sizes, targets)
            loss = losses["loss_cls"] + losses["loss_box"]
        else:
            losses = model(image_list, targets)
            loss = losses["classification"] + losses["bbox_regression"]
        loss.backward()
        opt.step()
        if device != "cpu":
            torch.cuda.synchronize()
        return loss

    return step, batch


def worker(side: str, setting: str, repeats: int, device: str) -> dict:
    torch.set_num_threads(2)
    step, batch = make_step(side, setting, device)
    median_time(step, repeats=0, warmup=1)  # includes the one-time compile of our loss kernel
    rss0 = rss_bytes()
    exact = reset_peak_rss()
    if device != "cpu":
        torch.cuda.reset_peak_memory_stats()
    med, times = median_time(step, repeats, warmup=0)
    out = {"side": side, "setting": setting, "batch": batch, "median_s": med, "times": times,
           "rss_before": rss0, "peak_rss": peak_rss_bytes(), "peak_exact": exact}
    if device != "cpu":
        out["cuda_peak"] = torch.cuda.max_memory_allocated()
    return out


def profile(setting: str, rows: int) -> None:
    from torch.profiler import ProfilerActivity, profile as torch_profile

    torch.set_num_threads(2)
    for side in ("ours", "torchvision"):
        step, _ = make_step(side, setting)
        median_time(step, repeats=0, warmup=2)
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            step()
        print(f"\n### {side}, {setting}, one training iteration (self CPU time)\n")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=40))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--profile", metavar="SETTING", help="print torch.profiler's top ops for both sides")
    parser.add_argument("--rows", type=int, default=15)
    parser.add_argument("--channels-last", action="store_true",
                        help="also time ours with weights and input in channels_last (a row 'ours, NHWC')")
    parser.add_argument("--torchvision-first", action="store_true",
                        help="run torchvision's subprocess before ours (to see the effect of the order under load)")
    parser.add_argument("--worker", choices=("ours", "ours_cl", "torchvision"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.settings, args.repeats, args.device)))
        return 0
    if args.profile:
        profile(args.profile, args.rows)
        return 0
    torch.set_num_threads(2)
    print(f"{machine_line()} at start; median of {args.repeats} after 1 warm-up iteration, device {args.device}\n")
    print("| setting | ours s/iter | torchvision s/iter | ours img/s | torchvision img/s | speed ratio "
          "| ours peak GiB (step) | torchvision peak GiB (step) | memory ratio | load |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    sides = ("ours", "ours_cl", "torchvision") if args.channels_last else ("ours", "torchvision")
    for setting in args.settings.split(","):
        res = {}
        for side in (sides[::-1] if args.torchvision_first else sides):
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", side, "--settings", setting,
                   "--repeats", str(args.repeats), "--device", args.device]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                return proc.returncode
            res[side] = json.loads(proc.stdout.strip().splitlines()[-1])
        for name in sides[:-1]:
            print_row(setting, name, res[name], res["torchvision"], args.device)
    return 0


def print_row(setting: str, name: str, o: dict, t: dict, device: str) -> None:
    b = o["batch"]
    if name == "ours_cl":
        setting += " (ours NHWC)"
    if device == "cpu":
        mo, mt = o["peak_rss"] / GiB, t["peak_rss"] / GiB
        so, st = (o["peak_rss"] - o["rss_before"]) / GiB, (t["peak_rss"] - t["rss_before"]) / GiB
        mem = f"{mo:.2f} ({so:.2f}) | {mt:.2f} ({st:.2f}) | {so / st:.2f}"
    else:
        mo, mt = o["cuda_peak"] / GiB, t["cuda_peak"] / GiB
        mem = f"{mo:.2f} | {mt:.2f} | {mo / mt:.2f}"
    print(f"| {setting} | {o['median_s']:.3f} | {t['median_s']:.3f} | {b / o['median_s']:.2f} | "
          f"{b / t['median_s']:.2f} | **{t['median_s'] / o['median_s']:.2f}×** | {mem} | "
          f"{os.getloadavg()[0]:.1f} |", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
