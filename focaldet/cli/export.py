"""``focaldet export --weights CKPT --format onnx|torchscript --out FILE`` — a trained detector as a
file that runs without focaldet (docs/export.md)."""
from __future__ import annotations

import argparse

EPILOG = """examples:
  focaldet export --weights runs/lt_digits_cpu/checkpoints/best.pt --format onnx --out model.onnx --dynamic
  focaldet export --weights best.pt --format torchscript --out model.ts --size 128x256
  focaldet export --weights best.pt --format onnx --out raw.onnx --raw --opset 20

inputs: images (B, 3, H, W) float32 RGB in [0, 1] (zero-padded), image_sizes (B, 2) int64 (h, w)
outputs: boxes (B, D, 4), scores (B, D), labels (B, D), num_detections (B,); with --raw:
cls_logits (B, N, C), box_deltas (B, N, 4), anchors (N, 4). See docs/export.md."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--weights", required=True, metavar="CKPT",
                        help="checkpoint (.pt) written by focaldet train; its stored config defines the model")
    parser.add_argument("--format", required=True, choices=["onnx", "torchscript"],
                        help="onnx (needs the 'export' extra: onnx, onnxscript, onnxruntime) or torchscript "
                             "(torch.jit.load; import torchvision first for its nms op)")
    parser.add_argument("--out", required=True, metavar="FILE", help="file to write (replaced atomically)")
    parser.add_argument("--size", default=None, metavar="H[xW]",
                        help="input size in pixels the graph is traced at (default: the config's data.test_size "
                             "rounded up to a multiple of 128, square)")
    parser.add_argument("--dynamic", action="store_true",
                        help="ONNX only: dynamic batch and dynamic height / width (multiples of 128)")
    parser.add_argument("--opset", type=int, default=None,
                        help="ONNX opset, 18 to 23 (default 18)")
    parser.add_argument("--raw", action="store_true",
                        help="export the network outputs and anchors without decoding / NMS")
    parser.add_argument("--no-check", action="store_true",
                        help="skip running the written file once against the eager model")


def run(args: argparse.Namespace) -> int:
    from focaldet.export.exporter import export_model, parse_size

    summary = export_model(args.weights, args.format, args.out, size=parse_size(args.size), dynamic=args.dynamic,
                           opset=args.opset, raw=args.raw, check=not args.no_check)
    size = "x".join(map(str, summary["size"])) + (" (dynamic batch and size)" if args.dynamic else "")
    checked = (f"; check run max |diff| {summary['max_abs_diff']:.2e} vs eager" if "max_abs_diff" in summary else "")
    print(f"focaldet export: {summary['format']}{' raw' if args.raw else ''} {size} -> {summary['out']} "
          f"({summary['bytes'] / 1e6:.1f} MB){checked}", flush=True)
    return 0
