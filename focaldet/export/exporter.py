"""``export_model``: a focaldet checkpoint to an ONNX file or a TorchScript archive.

ONNX goes through ``torch.onnx.export`` (the ``torch.export`` based exporter; torchvision's
``nms`` becomes ONNX ``NonMaxSuppression``); TorchScript through ``torch.jit.trace`` at a fixed
input size. Each file carries the class names and the export settings (ONNX: the
``metadata_props`` key ``focaldet``; TorchScript: the extra file ``focaldet.json``). After writing
an ONNX file it is run once with onnxruntime on a random image and compared with the eager
wrapper, so a file that would not run is never reported as exported.
"""
from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path
from typing import Optional, Union

import torch

from focaldet.errors import FocaldetError

FORMATS = ("onnx", "torchscript")

# Opsets the exporter writes and onnxruntime runs: torch's ONNX function library is written
# for opset 18; NonMaxSuppression / TopK with a tensor k exist in every one of these.
MIN_OPSET, MAX_OPSET, DEFAULT_OPSET = 18, 23, 18
INPUT_NAMES = ["images", "image_sizes"]
OUTPUT_NAMES = {False: ["boxes", "scores", "labels", "num_detections"],
                True: ["cls_logits", "box_deltas", "anchors"]}
EXTRA_FILE = "focaldet.json"


class ExportError(FocaldetError):
    """An export that cannot run: bad arguments, a missing optional package, a failed check."""


def parse_size(text: Union[str, int, None]) -> Optional[tuple[int, int]]:
    """``"128"`` → (128, 128); ``"128x256"`` → (128, 256) as (height, width); None stays None."""
    if text is None:
        return None
    parts = str(text).lower().split("x")
    try:
        hw = tuple(int(p) for p in parts)
    except ValueError:
        hw = ()
    if len(hw) == 1:
        hw = hw * 2
    if len(hw) != 2 or min(hw) < 1:
        raise ExportError(f"--size {text}: expected H or HxW in pixels, e.g. 128 or 128x256")
    return hw


def require(*modules: str) -> None:
    """One line naming the missing optional packages and how to get them."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ExportError(f"ONNX export needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
                          f"not installed", hint="pip install 'focaldet[export]' (onnx, onnxscript, onnxruntime)")


def load_exportable(weights: Union[str, Path], raw: bool):
    """(wrapper module in eval mode on the CPU, its config, the checkpoint) for ``weights``."""
    from focaldet.engine.evaluator import load_for_inference
    from focaldet.export.wrapper import DetectionExport, RawExport

    model, cfg, ckpt = load_for_inference(None, weights, torch.device("cpu"))
    wrapper = RawExport(model) if raw else DetectionExport(model)
    return wrapper.eval(), cfg, ckpt


def example_inputs(size: tuple[int, int], batch: int = 1, seed: int = 0):
    """A random ``images (batch, 3, H, W)`` in [0, 1] and ``image_sizes`` of the full size."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, *size, generator=g)
    return images, torch.tensor([list(size)] * batch, dtype=torch.int64)


def metadata(cfg, ckpt, *, fmt: str, size, dynamic: bool, raw: bool, opset: Optional[int], softmax: bool) -> dict:
    """What a user of the file needs besides the tensors: classes, pre-processing, settings."""
    names = list(ckpt["class_names"])
    infer = cfg.model.inference
    return {"format": fmt, "raw": raw, "input_size": list(size), "dynamic": dynamic, "opset": opset,
            "class_names": names, "cat_ids": [int(c) for c in ckpt.get("cat_ids") or range(len(names))],
            "test_size": cfg.data.test_size, "max_size": cfg.data.max_size,
            "size_divisibility": cfg.data.size_divisibility,
            "score_thresh": infer.score_thresh,
            "nms_thresh": infer.nms_thresh, "topk_candidates": infer.topk_candidates,
            "detections_per_img": infer.detections_per_img, "softmax": softmax,
            "input": "RGB float32 in [0, 1], zero-padded bottom/right; normalisation is inside the graph"}


def export_model(weights: Union[str, Path], fmt: str, out: Union[str, Path], *, size=None, dynamic: bool = False,
                 opset: Optional[int] = None, raw: bool = False, check: bool = True) -> dict:
    """Export checkpoint ``weights`` to ``out``. ``size`` (H, W) of the traced input (default: the
    config's ``data.test_size``, square, rounded up to a multiple of ``data.size_divisibility``). ``dynamic``: ONNX
    only, batch, height and width become dynamic axes. Returns a summary dict (``out``,
    ``format``, ``size``, ``max_abs_diff`` of the check run when ``check``)."""
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if fmt == "onnx":
        opset = DEFAULT_OPSET if opset is None else int(opset)
        if not MIN_OPSET <= opset <= MAX_OPSET:
            raise ExportError(f"--opset {opset}: unsupported; this exporter writes opsets {MIN_OPSET} to {MAX_OPSET}")
        require("onnx", "onnxscript", "onnxruntime")
    elif opset is not None:
        raise ExportError("--opset applies to ONNX only (TorchScript has no opset)")
    elif dynamic:
        raise ExportError("--dynamic applies to ONNX only: TorchScript is traced at one fixed input size",
                          hint="export once per --size, or use --format onnx --dynamic")
    wrapper, cfg, ckpt = load_exportable(weights, raw)
    if size is None:
        d = cfg.data.size_divisibility
        side = -(-cfg.data.test_size // d) * d
        size = (side, side)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = metadata(cfg, ckpt, fmt=fmt, size=size, dynamic=dynamic, raw=raw, opset=opset,
                    softmax=bool(wrapper.net.model.softmax))
    inputs = example_inputs(size)
    if fmt == "onnx":
        _export_onnx(wrapper, inputs, out, opset=opset, dynamic=dynamic, raw=raw, meta=meta)
    else:
        _export_torchscript(wrapper, inputs, out, meta=meta)
    summary = {"out": str(out), "format": fmt, "size": list(size), "raw": raw, "dynamic": dynamic,
               "opset": opset, "bytes": out.stat().st_size}
    if check:
        try:
            summary["max_abs_diff"] = check_export(wrapper, out, fmt, size, raw=raw, batch=2 if dynamic else 1)
        except ExportError:
            out.unlink(missing_ok=True)  # a file that does not reproduce the model is not left behind
            raise
    return summary


def _export_onnx(wrapper, inputs, out: Path, *, opset: int, dynamic: bool, raw: bool, meta: dict) -> None:
    import onnx

    dynamic_shapes = None
    if dynamic:
        # H and W as multiples of the model's padding d (meta["size_divisibility"]), up to 8192.
        # torch.export assumes a dynamic size is never 1, so it traces at 256 x 256 (P7 2 x 2) and
        # batch 2; the graph itself has no such assumption (checked at batch 1 and 128 px in the tests).
        d = meta["size_divisibility"]
        blocks = {n: torch.export.Dim(n, min=2, max=8192 // d) for n in ("height_blocks", "width_blocks")}
        batch = torch.export.Dim("batch", min=1, max=1024)
        dynamic_shapes = {"images": {0: batch, 2: d * blocks["height_blocks"], 3: d * blocks["width_blocks"]},
                          "image_sizes": {0: batch}}
        side = -(-256 // d) * d
        inputs = example_inputs((side, side), batch=2)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's own progress and deprecation chatter
        try:
            program = torch.onnx.export(wrapper, inputs, input_names=INPUT_NAMES, output_names=OUTPUT_NAMES[raw],
                                        opset_version=opset, dynamo=True, dynamic_shapes=dynamic_shapes,
                                        external_data=False, verbose=False)
        except Exception as e:  # noqa: BLE001 — the exporter raises many types; name the step instead
            first = next((ln for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
            raise ExportError(f"{out}: torch.onnx.export failed: {first[:300]}") from e
    model = program.model_proto
    entry = model.metadata_props.add()
    entry.key, entry.value = "focaldet", json.dumps(meta)
    onnx.checker.check_model(model)
    from focaldet.utils.io import atomic_write_bytes

    atomic_write_bytes(out, model.SerializeToString())


def _export_torchscript(wrapper, inputs, out: Path, *, meta: dict) -> None:
    import io

    from focaldet.utils.io import atomic_write_bytes

    with torch.no_grad(), warnings.catch_warnings():
        # shape-derived ints are fixed by design; torch's deprecation notice is not the user's concern
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(wrapper, inputs, check_trace=False)
        buf = io.BytesIO()
        torch.jit.save(traced, buf, _extra_files={EXTRA_FILE: json.dumps(meta)})
    atomic_write_bytes(out, buf.getvalue())


def run_exported(path: Union[str, Path], fmt: str, images: torch.Tensor, image_sizes: torch.Tensor) -> list:
    """Outputs of an exported file as a list of tensors, in the order of ``OUTPUT_NAMES``."""
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        outs = session.run(None, {"images": images.numpy(), "image_sizes": image_sizes.numpy()})
        return [torch.from_numpy(o) for o in outs]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        return list(module(images, image_sizes))


def check_export(wrapper, path: Path, fmt: str, size, *, raw: bool, batch: int = 1) -> float:
    """Run the written file on a random input and compare with the eager wrapper; returns the
    largest absolute difference over the outputs. Raises when shapes or labels differ."""
    images, sizes = example_inputs(size, batch=batch, seed=1)
    with torch.no_grad():
        expected = wrapper(images, sizes)
    got = run_exported(path, fmt, images, sizes)
    worst = 0.0
    for name, e, g in zip(OUTPUT_NAMES[raw], expected, got):
        if tuple(e.shape) != tuple(g.shape):
            raise ExportError(f"{path}: check run gave {name} of shape {tuple(g.shape)}, expected {tuple(e.shape)}")
        if not e.is_floating_point():
            if not torch.equal(e, g.to(e.dtype)):
                raise ExportError(f"{path}: check run gave different {name} than the eager model")
            continue
        worst = max(worst, float((e - g).abs().max()) if e.numel() else 0.0)
    return worst
