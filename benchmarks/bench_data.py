"""Throughput of the embedded benchmarks: generation (images/s, both kinds, serial and forked
workers) and, when the data layer is present, loading (images/s through CocoDetection + the
training transforms + collate, with 0 and 2 DataLoader workers).

Usage::

    .venv/bin/python benchmarks/bench_data.py [--train 200 --val 50 --size 288 --workers 2]

Each measurement runs once (generation writes real JPEG files into a temporary folder); the
machine's load matters, so report the numbers with the machine they came from.
(The data layer's own comparison with pycocotools / torchvision is benchmarks/bench_data_loading.py.)
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def bench_generation(kind: str, out: Path, *, train: int, val: int, size: int,
                     workers: int) -> tuple[float, float]:
    """(images per wall-clock second, images per CPU second of this process — serial runs only:
    the second number does not depend on how busy a shared machine is)."""
    from focaldet.data.benchmark import _load_sources, make_benchmark

    _load_sources(kind)  # decoding the sources once per process is not part of the per-image rate
    t0, c0 = time.perf_counter(), time.process_time()
    make_benchmark(kind, out, train=train, val=val, size=size, seed=0, workers=workers)
    n = train + val
    return n / (time.perf_counter() - t0), n / (time.process_time() - c0)


def bench_loading(ann: Path, images: Path, *, size: int, workers: int, batch_size: int = 8) -> float:
    import torch
    from torch.utils.data import DataLoader

    from focaldet.config import DataConfig
    from focaldet.data.coco import CocoDetection
    from focaldet.data.collate import collate
    from focaldet.data.transforms import build_transforms

    cfg = DataConfig(train_sizes=[size], max_size=2 * size, test_size=size)
    ds = CocoDetection(ann, images, build_transforms(cfg, train=True))
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers,
                        collate_fn=lambda s: collate(s, size_divisibility=cfg.size_divisibility))
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    n = sum(len(b.image_ids) for b in loader)
    return n / (time.perf_counter() - t0)  # wall clock: workers are other processes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", type=int, default=200)
    ap.add_argument("--val", type=int, default=50)
    ap.add_argument("--size", type=int, default=288)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    from focaldet.data.benchmark import default_kind
    from focaldet.data.benchmark.sources_stamps import stamps_available

    kinds = (["lt-stamps"] if stamps_available() else []) + ["lt-digits"]
    print(f"generation, {args.train}+{args.val} images of {args.size}x{args.size} px, "
          f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for kind in kinds:
            for w in sorted({0, args.workers}):
                wall, cpu = bench_generation(kind, tmp / f"{kind}-w{w}", train=args.train, val=args.val,
                                             size=args.size, workers=w)
                per_cpu = f" ({cpu:.1f} images per CPU-second)" if w <= 1 else ""
                print(f"  {kind:<10} workers={w}: {wall:6.1f} images/s{per_cpu}")
        try:
            import focaldet.data.coco  # noqa: F401  (the other part of focaldet.data)
        except ImportError:
            print("loading: focaldet.data.coco not available, skipped")
            return
        kind = default_kind()
        d = tmp / f"{kind}-w0"
        print(f"loading {kind} train split (CocoDetection + train transforms at {args.size} px + collate, batch 8)")
        for w in (0, 2):
            rate = bench_loading(d / "annotations" / "train.json", d / "train", size=args.size, workers=w)
            print(f"  num_workers={w}: {rate:6.1f} images/s")


if __name__ == "__main__":
    main()
