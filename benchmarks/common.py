"""Shared pieces of the model benchmarks: the same RetinaNet built by focaldet and by torchvision,
the same random batch, memory readings and timing.

Both models are built with the *same* architecture: torchvision's ResNet (FrozenBatchNorm2d, stem and
layer1 frozen), FPN on C3–C5 with 256 channels, P6/P7 from P5 (torchvision v1; ours with
``model.preset=torchvision_v1``, which also selects torchvision's anchor table and 300 detections),
a 4 × 256 head, 9 anchors per location, ``num_classes`` sigmoid outputs, focal loss γ = 2, α = 0.25,
L1 box loss. torchvision gets ``min_size = max_size = size`` so it never resizes. Both pad every input
to a multiple of ``--size-divisible``: default 32, each library's default (torchvision's
``size_divisible``, focaldet's ``data.size_divisibility``), so the ratios compare the libraries as
they ship. 128 (P7's stride; the benchmarks' default before 2026-12-04) makes torchvision's anchors
exact: it derives each level's stride as padded size // grid size, which is 106 instead of 128 for
P7 on a 320-px input padded to 32 (the detection check still matched every box at 32).
``--ours-size-divisible`` sets ours alone (128: focaldet's own padding before 2026-12-03).
"""
from __future__ import annotations

import os
import re
import statistics
import time
from typing import Callable

import torch
import torchvision
from torchvision.models.detection import RetinaNet as TVRetinaNet
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from focaldet.config import load_config
from focaldet.model import build_model
from focaldet.model.torchvision_compat import load_torchvision_retinanet_state_dict

SETTINGS = {  # name -> (backbone, image size, batch)
    "r18-320-b4": ("resnet18", 320, 4),
    "r50-512-b2": ("resnet50", 512, 2),
}
NUM_CLASSES = 80


def build_torchvision(backbone: str, size: int, num_classes: int = NUM_CLASSES,
                      size_divisible: int = 32) -> TVRetinaNet:
    """torchvision RetinaNet with our architecture choices (see the module docstring)."""
    resnet = getattr(torchvision.models, backbone)(weights=None, norm_layer=FrozenBatchNorm2d)
    body = _resnet_fpn_extractor(resnet, trainable_layers=3, returned_layers=[2, 3, 4],
                                 extra_blocks=LastLevelP6P7(256, 256))
    return TVRetinaNet(body, num_classes, min_size=size, max_size=size, size_divisible=size_divisible)


def build_ours(backbone: str, num_classes: int = NUM_CLASSES, overrides: tuple[str, ...] = ()):
    cfg = load_config(None, [f"model.backbone={backbone}", "model.norm=frozen_bn", "model.frozen_stages=2",
                             "model.preset=torchvision_v1", "model.p6_from=p5", "model.head_depth=4",
                             "model.head_width=256", "model.fpn_channels=256", "model.box_loss.name=l1",
                             "loss.name=focal", *overrides])
    return build_model(cfg, num_classes=num_classes)


def build_pair(backbone: str, size: int, num_classes: int = NUM_CLASSES, cls_bias: float | None = None,
               overrides: tuple[str, ...] = (), size_divisible: int = 32, ours_size_divisible: int | None = None):
    """(ours, torchvision) with identical weights (torchvision's init copied into ours).
    ``cls_bias`` overrides the class-output bias of both (e.g. 0.0 so every candidate passes the
    0.05 score threshold: the worst case for post-processing); ``overrides`` are config
    ``key=value`` strings for ours (e.g. ``runtime.channels_last=false``). ``size_divisible``: the
    padding of both (``ours_size_divisible``, if given, of ours alone)."""
    torch.manual_seed(0)
    tv = build_torchvision(backbone, size, num_classes, size_divisible)
    if cls_bias is not None:
        torch.nn.init.constant_(tv.head.classification_head.cls_logits.bias, cls_bias)
    ours_div = size_divisible if ours_size_divisible is None else ours_size_divisible
    ours = build_ours(backbone, num_classes, (f"data.size_divisibility={ours_div}", *overrides))
    load_torchvision_retinanet_state_dict(ours, tv.state_dict())
    return ours, tv


def make_batch(batch: int, size: int, num_classes: int = NUM_CLASSES, seed: int = 0):
    """``images (B, 3, size, size)`` in [0, 1] and per image 3–12 random boxes (8–60 % of the side)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, size, size, generator=g)
    targets = []
    for _ in range(batch):
        n = int(torch.randint(3, 13, (1,), generator=g))
        wh = (torch.rand(n, 2, generator=g) * 0.52 + 0.08) * size
        xy = torch.rand(n, 2, generator=g) * (size - wh)
        boxes = torch.cat([xy, xy + wh], dim=1)
        targets.append({"boxes": boxes, "labels": torch.randint(0, num_classes, (n,), generator=g)})
    return images, targets


# ------------------------------------------------------------------------------------------------
def rss_bytes() -> int:
    """Current resident set size of this process (Linux /proc)."""
    with open("/proc/self/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1)) * 1024


def peak_rss_bytes() -> int:
    """Peak resident set size since the process started or since :func:`reset_peak_rss`."""
    with open("/proc/self/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+) kB", f.read()).group(1)) * 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux ≥ 4.0: ``clear_refs`` value 5), so
    the peak of a measured phase excludes warm-up and compilation. False where it is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages, e.g. ``"4.1/3.8/2.9"`` (CPUs busy or waiting)."""
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def ratio_summary(ratios: list[float]) -> str:
    """Median of per-pair ratios with its spread: ``"1.52× (1.31–1.70, 5 pairs)"``."""
    if not ratios:
        return "n/a"
    return f"{statistics.median(ratios):.2f}× ({min(ratios):.2f}–{max(ratios):.2f}, {len(ratios)} pairs)"


def pad_note(args) -> str:
    """``", padding ours 32 / torchvision 32"``: each side's ``--size-divisible``."""
    ours = args.size_divisible if args.ours_size_divisible is None else args.ours_size_divisible
    return f", padding ours {ours} / torchvision {args.size_divisible}"


def amp_dtype(amp: str):
    """``--amp`` → autocast dtype (None for ``none``)."""
    return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def autocast(dtype, device: str):
    """Autocast context for ``dtype`` on ``device`` (a no-op for None)."""
    return torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype is not None)


def synchronize(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def bf16_note(amp: str, device: str) -> str:
    """Whether this CPU has fast bf16 convolutions (oneDNN needs AVX512-BF16 / AMX; without them
    PyTorch falls back to a slow reference convolution)."""
    if amp != "bf16" or torch.device(device).type != "cpu":
        return ""
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return "; oneDNN bf16 supported"
    return ("; oneDNN bf16 NOT supported on this CPU (no AVX512-BF16/AMX): bf16 convolutions take "
            "the slow reference path")


def median_time(step: Callable[[], None], repeats: int, warmup: int = 1) -> tuple[float, list[float]]:
    """Median wall seconds of ``step`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return (statistics.median(times) if times else float("nan")), times


def machine_line() -> str:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = re.search(r"model name\s*:\s*(.*)", f.read()).group(1).strip()
    except (OSError, AttributeError):
        pass
    return (f"{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__}, torchvision {torchvision.__version__}, "
            f"{torch.get_num_threads()} threads, load average {load_average()}")


def add_model_bench_arguments(parser, pairs: int, pairs_help: str) -> None:
    """The options both model benchmarks share (settings, pairs, device, amp, layout, profile)."""
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--pairs", type=int, default=pairs, help=pairs_help)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none", help="autocast for ours")
    parser.add_argument("--amp-reference", action="store_true", help="use --amp for torchvision too")
    parser.add_argument("--channels-last", action="store_true", help="torchvision's weights in channels_last too")
    parser.add_argument("--profile", metavar="SETTING", help="print torch.profiler's top ops for both sides")
    parser.add_argument("--rows", type=int, default=15)
    parser.add_argument("--size-divisible", type=int, default=32,
                        help="both pad to a multiple of this (default 32: each library's default; 128: exact "
                             "torchvision anchors)")
    parser.add_argument("--ours-size-divisible", type=int, default=None,
                        help="ours alone pads to a multiple of this (default: --size-divisible)")
