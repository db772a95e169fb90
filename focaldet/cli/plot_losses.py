"""``focaldet plot-losses --out DIR``: loss and gradient against p_t for the focal-loss family."""
from __future__ import annotations

import argparse
from pathlib import Path

from focaldet.errors import FocaldetError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="outputs/loss_shapes", metavar="DIR",
                        help="folder for loss_vs_pt.png and grad_vs_pt.png (created if missing)")


def run(args) -> int:
    from focaldet.analysis.loss_shapes import plot_loss_shapes

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise FocaldetError(f"--out {out}: exists and is not a folder", hint="give a folder path")
    for path in plot_loss_shapes(out):
        print(path)
    return 0
