"""Eval-mode latency per image, post-processing included, of focaldet's RetinaNet and of
``torchvision.models.detection.RetinaNet`` with the same architecture and the *same weights*
(see ``benchmarks/common.py``), 2 threads, timed round-robin in one process.

    .venv/bin/python benchmarks/bench_inference.py [--settings r18-320-b4,r50-512-b2] [--repeats 5]
    .venv/bin/python benchmarks/bench_inference.py --profile r18-320-b4   # torch.profiler top ops

The class-output bias of both is set to 0 so every candidate passes the 0.05 score threshold: each
level keeps its full top-1000 and NMS sees ~4,000 boxes per image, the worst case for
post-processing (a freshly initialised model would keep nothing and time only the network).
Before timing, the detections of both are compared (same weights → same boxes, scores, labels).
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import SETTINGS, build_pair, machine_line, make_batch  # noqa: E402


def make_runs(setting: str, device: str = "cpu", channels_last: bool = False):
    backbone, size, batch = SETTINGS[setting]
    ours, tv = build_pair(backbone, size, cls_bias=0.0)
    ours, tv = ours.to(device).eval(), tv.to(device).eval()
    images, _ = make_batch(batch, size)
    images = images.to(device)
    sizes = [(size, size)] * batch

    def sync():
        if device != "cpu":
            torch.cuda.synchronize()

    @torch.inference_mode()
    def run_ours():
        out = ours(images, sizes)
        sync()
        return out

    @torch.inference_mode()
    def run_tv():
        out = tv(list(images))
        sync()
        return out

    runs = {"ours": run_ours, "torchvision": run_tv}
    if channels_last:  # what channels_last would give: weights and input in NHWC (model code unchanged)
        ours_cl = copy.deepcopy(ours).to(memory_format=torch.channels_last)
        images_cl = images.contiguous(memory_format=torch.channels_last)

        @torch.inference_mode()
        def run_ours_cl():
            out = ours_cl(images_cl, sizes)
            sync()
            return out

        runs["ours_cl"] = run_ours_cl
    return runs, batch


def compare(a: list[dict], b: list[dict]) -> str:
    """Largest box / score difference over the detections both keep (order is by score)."""
    box, score, same_labels, counts = 0.0, 0.0, True, []
    for x, y in zip(a, b):
        n = min(len(x["scores"]), len(y["scores"]))
        counts.append(f"{len(x['scores'])}/{len(y['scores'])}")
        if n:
            box = max(box, float((x["boxes"][:n] - y["boxes"][:n]).abs().max()))
            score = max(score, float((x["scores"][:n] - y["scores"][:n]).abs().max()))
            same_labels &= bool((x["labels"][:n] == y["labels"][:n]).all())
    return (f"detections ours/torchvision {', '.join(counts)}; max |Δbox| {box:.2e} px, max |Δscore| {score:.2e}, "
            f"labels {'identical' if same_labels else 'DIFFER'}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--profile", metavar="SETTING", help="print torch.profiler's top ops for both sides")
    parser.add_argument("--rows", type=int, default=15)
    parser.add_argument("--channels-last", action="store_true",
                        help="also time ours with weights and input in channels_last (a row 'ours NHWC')")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        runs, _ = make_runs(args.profile)
        for side, run in runs.items():
            run()
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                run()
            print(f"\n### {side}, {args.profile}, one inference batch (self CPU time)\n")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows,
                                            max_name_column_width=40))
        return 0
    print(f"{machine_line()} at start; median of {args.repeats} after 1 warm-up, round-robin, "
          f"device {args.device}\n")
    print("| setting | ours ms/img | torchvision ms/img | speed ratio | load |\n|---|---:|---:|---:|---:|", flush=True)
    notes = []
    for setting in args.settings.split(","):
        runs, batch = make_runs(setting, args.device, args.channels_last)
        notes.append(f"{setting}: {compare(runs['ours'](), runs['torchvision']())}")
        times = {side: [] for side in runs}
        for _ in range(args.repeats):
            for side, run in runs.items():  # round-robin: a change of load hits both sides alike
                t0 = time.perf_counter()
                run()
                times[side].append(time.perf_counter() - t0)
        o = statistics.median(times["ours"]) / batch * 1000
        t = statistics.median(times["torchvision"]) / batch * 1000
        print(f"| {setting} | {o:.1f} | {t:.1f} | **{t / o:.2f}×** | {os.getloadavg()[0]:.1f} |", flush=True)
        if "ours_cl" in times:
            c = statistics.median(times["ours_cl"]) / batch * 1000
            print(f"| {setting} (ours NHWC) | {c:.1f} | {t:.1f} | **{t / c:.2f}×** | {os.getloadavg()[0]:.1f} |",
                  flush=True)
            notes.append(f"{setting} NHWC: {compare(runs['ours_cl'](), runs['torchvision']())}")
    print()
    for n in notes:
        print(f"- {n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
