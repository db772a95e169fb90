"""``focaldet predict --weights CKPT IMAGE_OR_DIR… --out DIR`` — detections drawn on your own photos."""
from __future__ import annotations

import argparse
import warnings

EPILOG = """examples:
  focaldet predict --weights runs/lt_stamps_cpu/checkpoints/best.pt photos/ --out predictions/
  focaldet predict --weights best.pt a.jpg b.png --out out/ --score-thresh 0.5
  focaldet predict --weights best.pt photos/ --out out/ --amp bf16     # fast mode (AMX/AVX512-BF16 CPUs, GPUs)"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR",
                        help="image files and/or folders; in a folder, entries that are not image files (by "
                             "suffix; also sub-folders, FIFOs, broken symlinks) are skipped and counted")
    parser.add_argument("--weights", required=True, metavar="CKPT",
                        help="checkpoint (.pt) written by focaldet train; its stored config defines the model")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output folder: one <name>.jpg per image with boxes drawn, results.json (COCO "
                             "results) and images.json (image ids); nothing is written outside it")
    parser.add_argument("--score-thresh", type=float, default=0.3,
                        help="draw boxes with at least this score (results.json keeps every detection)")
    parser.add_argument("--test-size", type=int, default=None,
                        help="short side in pixels the images are resized to (default: the training config's "
                             "data.test_size)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--amp", choices=("none", "bf16", "fp16"), default=None,
                        help="autocast for the forward pass (default: the checkpoint's train.amp); bf16 is the "
                             "fast mode on GPUs and on CPUs with AVX512-BF16/AMX, float32 with a notice elsewhere")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bar (it is shown only when stderr is a terminal anyway)")


def run(args: argparse.Namespace) -> int:
    from focaldet.cli.main import CLIError
    from focaldet.engine.predictor import predict

    if not 0.0 <= args.score_thresh <= 1.0:  # also refuses nan
        raise CLIError(f"--score-thresh {args.score_thresh}: must be in [0, 1]")
    if args.test_size is not None and not 1 <= args.test_size <= 16384:
        raise CLIError(f"--test-size {args.test_size}: must be between 1 and 16384 pixels")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        out = predict(args.weights, args.inputs, args.out, score_thresh=args.score_thresh, device=args.device,
                      test_size=args.test_size, progress=False if args.quiet else None, amp=args.amp)
    seen = set()
    for w in caught:  # each distinct warning once
        if str(w.message) not in seen:
            seen.add(str(w.message))
            print(f"focaldet predict: warning: {w.message}")
    print(f"focaldet predict: {out['images']} image(s), {out['detections']} detection(s) -> {out['out_dir']} "
          f"(results: {out['results']})", flush=True)
    return 0
