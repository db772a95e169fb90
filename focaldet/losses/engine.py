"""The machinery shared by the sigmoid losses: run a kernel from :mod:`.kernels` (compiled where
possible), attach its precomputed gradient to the autograd graph, and feed :class:`GradStats`.

Compilation: each dense kernel is compiled with ``torch.compile`` with the anchor dimension marked
dynamic, so new anchor counts do not recompile (a new class count or a new scalar parameter value
compiles once more; a training run uses one of each). If compiling fails (no C++ compiler, an
unsupported platform) the loss warns once and falls back to the eager path for the
rest of the process. ``FOCALDET_COMPILE=0`` turns compilation off. Inputs with fewer than
``FOCALDET_COMPILE_MIN_ELEMENTS`` elements (default 2**20) run eagerly: on small CPU presets the
one-off compile costs tens of seconds and saves only milliseconds per step. Only float32 work is compiled;
float64 inputs (gradcheck, references) run eagerly.

The eager path never builds a one-hot target either: it evaluates every element as a negative and
then overwrites the few positive elements with gather/scatter.
"""
from __future__ import annotations

import os
import warnings

import torch
from torch import Tensor

from focaldet.losses import kernels
from focaldet.losses.grad_stats import GradStats

_compiled: dict = {}
_compile_failed = False


def compile_enabled() -> bool:
    return os.environ.get("FOCALDET_COMPILE", "1").strip().lower() not in ("0", "false", "no", "off")


def compile_min_elements() -> int:
    return int(os.environ.get("FOCALDET_COMPILE_MIN_ELEMENTS", str(2 ** 20)))


def _compiled_dense(kernel: str):
    fn = _compiled.get(kernel)
    if fn is None:
        fn = _compiled[kernel] = torch.compile(kernels.KERNELS[kernel][1], dynamic=None)
    return fn


def _dense_compiled(kernel, x, labels, quality, norm, consts):
    global _compile_failed
    torch._dynamo.maybe_mark_dynamic(x, 0)
    torch._dynamo.maybe_mark_dynamic(labels, 0)
    if quality is not None:
        torch._dynamo.maybe_mark_dynamic(quality, 0)
    try:
        # each kernel is one code object with a few specialisations (parameter values, class
        # counts); the default limit of 8 would silently send the extra ones to eager
        with torch._dynamo.config.patch(recompile_limit=64):
            return _compiled_dense(kernel)(x, labels, quality, norm, **consts)
    except Exception as e:  # noqa: BLE001 - any compiler failure means: use eager from now on
        _compile_failed = True
        warnings.warn(f"focaldet.losses: torch.compile failed ({type(e).__name__}: {str(e)[:200]}); "
                      "using the eager loss kernels from now on (set FOCALDET_COMPILE=0 to skip compiling)",
                      RuntimeWarning, stacklevel=3)
        return None


def _dense_eager(kernel, x, labels, quality, norm, pos_rows, pos_cols, consts, class_params):
    """Every element as a negative, then the positive elements recomputed and scattered in."""
    elem = kernels.KERNELS[kernel][0]
    no = torch.zeros((), dtype=torch.bool, device=x.device)
    loss, grad = elem(x, no, 0.0, **consts)
    valid = (labels >= 0)[:, None]
    loss = torch.where(valid, loss, 0.0)
    grad = torch.where(valid, grad / norm, 0.0)
    pos_consts = {k: (v[pos_cols] if k in class_params else v) for k, v in consts.items()}
    t = quality[pos_rows].to(x.dtype) if quality is not None else 0.0
    yes = torch.ones((), dtype=torch.bool, device=x.device)
    pos_loss, pos_grad = elem(x[pos_rows, pos_cols], yes, t, **pos_consts)
    loss[pos_rows, pos_cols] = pos_loss
    grad[pos_rows, pos_cols] = pos_grad / norm
    return loss.sum() / norm, grad


def class_grad_sums(grad: Tensor, pos_rows: Tensor, pos_cols: Tensor, neg_grad_nonnegative: bool = True):
    """Per-class ``(Σ|g| over positives, Σ|g| over negatives)`` of a gradient ``(N, K)`` whose
    ignored rows are zero.

    Column sums are taken as ``ones(N) @ grad`` (a BLAS gemv that reads the array row by row; a
    column reduction is several times slower for small K). Where every negative element's gradient
    is ≥ 0 — true for every sigmoid loss here (a negative's loss grows with its logit) except
    ``poly_focal`` with ε < 0 — the signed column sum with the positive entries zeroed is the
    negative |g| sum, and no |grad| copy is needed.
    """
    pos_vals = grad[pos_rows, pos_cols].float()
    pos_abs = torch.zeros(grad.shape[1], dtype=torch.float32, device=grad.device)
    pos_abs.index_add_(0, pos_cols, pos_vals.abs())
    ones = grad.new_ones(grad.shape[0])
    if neg_grad_nonnegative:
        # Zero the few positive entries for the column sum instead of subtracting them afterwards:
        # a positive's |g| is orders of magnitude above a class's whole negative sum early in
        # training, and the subtraction would cancel catastrophically in float32.
        grad[pos_rows, pos_cols] = 0
        neg_abs = torch.mv(grad.t(), ones).float()
        grad[pos_rows, pos_cols] = pos_vals.to(grad.dtype)
    else:
        abs_grad = grad.abs()
        abs_grad[pos_rows, pos_cols] = 0
        neg_abs = torch.mv(abs_grad.t(), ones).float()
    return pos_abs, neg_abs.clamp_(min=0.0)


class _AttachGrad(torch.autograd.Function):
    """Returns ``total`` and, in backward, ``grad_output * grad`` for the logits; optionally feeds
    ``(pos_abs, neg_abs)`` to a :class:`GradStats` when backward actually runs."""

    @staticmethod
    def forward(ctx, logits, total, grad, pos_abs, neg_abs, stats):
        ctx.save_for_backward(grad)
        ctx.logits_dtype = logits.dtype
        ctx.stats = (stats, pos_abs, neg_abs) if stats is not None else None
        return total.clone()

    @staticmethod
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        if ctx.stats is not None:
            stats, pos_abs, neg_abs = ctx.stats
            stats.accumulate(pos_abs, neg_abs)
        return (grad_output * grad).to(ctx.logits_dtype), None, None, None, None, None


def as_normalizer(normalizer, device) -> Tensor:
    if isinstance(normalizer, Tensor):
        if normalizer.numel() != 1:
            raise ValueError(f"normalizer must be a number or a 0-d tensor, got shape {tuple(normalizer.shape)}")
        return normalizer.detach().reshape(()).to(device=device, dtype=torch.float32)
    if isinstance(normalizer, bool) or not isinstance(normalizer, (int, float)) or not normalizer > 0:
        raise ValueError(f"normalizer must be a positive number (the number of positive anchors, at least 1), "
                         f"got {normalizer!r}")
    return torch.tensor(float(normalizer), device=device)


def check_inputs(name: str, logits: Tensor, labels: Tensor, num_outputs: int, quality=None,
                 needs_quality=False, batch_index=None):
    if logits.dim() != 2 or logits.shape[1] != num_outputs:
        raise ValueError(f"loss '{name}': logits must have shape (N, {num_outputs}), got {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise ValueError(f"loss '{name}': logits must be floating point, got {logits.dtype}")
    if labels.shape != (logits.shape[0],) or labels.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"loss '{name}': labels must be an int64 tensor of shape ({logits.shape[0]},), "
                         f"got {labels.dtype} {tuple(labels.shape)}")
    if needs_quality and quality is None:
        raise ValueError(f"loss '{name}' needs quality= (the IoU target of each positive anchor)")
    if quality is not None and quality.shape != (logits.shape[0],):
        raise ValueError(f"loss '{name}': quality must have shape ({logits.shape[0]},), got {tuple(quality.shape)}")
    if batch_index is not None and batch_index.shape != (logits.shape[0],):
        raise ValueError(f"loss '{name}': batch_index must have shape ({logits.shape[0]},), "
                         f"got {tuple(batch_index.shape)}")


def compute_dtype(logits: Tensor) -> torch.dtype:
    """float32 for half/bfloat16/float32 logits (SPEC: never compute a loss in half), float64 kept."""
    return torch.float64 if logits.dtype == torch.float64 else torch.float32


def sigmoid_loss(kernel: str, logits: Tensor, labels: Tensor, *, normalizer, consts: dict,
                 class_params=(), quality=None, grad_stats: GradStats | None = None,
                 neg_grad_nonnegative: bool = True) -> Tensor:
    """Sum of ``kernel``'s elementwise loss over non-ignored rows of ``logits (N, K)`` divided by
    ``normalizer``, as a 0-d float32 tensor (float64 for float64 logits).

    ``labels (N,)``: 0..K-1 foreground, K background, -1 ignored (values above K act as background).
    ``consts``: the kernel's parameters, Python numbers or tensors; those named in ``class_params``
    are per-class ``(K,)`` tensors. ``quality (N,)``: soft targets of positive rows.
    ``neg_grad_nonnegative``: whether every negative element's gradient is ≥ 0 (see
    :func:`class_grad_sums`).
    """
    dtype = compute_dtype(logits)
    device = logits.device
    track = grad_stats is not None
    norm = as_normalizer(normalizer, device).to(dtype)
    with torch.no_grad(), torch.autocast(device.type, enabled=False):
        x = logits.detach().to(dtype)
        labels = labels.detach().long()
        consts = {k: (v.to(device=device, dtype=dtype) if isinstance(v, Tensor) else float(v))
                  for k, v in consts.items()}
        out = None
        if dtype == torch.float32 and compile_enabled() and not _compile_failed \
                and x.numel() >= max(1, compile_min_elements()):
            out = _dense_compiled(kernel, x, labels, quality, norm, consts)
        if track or out is None:
            pos_rows = ((labels >= 0) & (labels < x.shape[1])).nonzero().squeeze(1)
            pos_cols = labels[pos_rows]
        if out is None:
            out = _dense_eager(kernel, x, labels, quality, norm, pos_rows, pos_cols, consts, set(class_params))
        total, grad = out
        pos_abs = neg_abs = None
        if track:
            pos_abs, neg_abs = class_grad_sums(grad, pos_rows, pos_cols, neg_grad_nonnegative)
    if not logits.requires_grad:
        return total
    return _AttachGrad.apply(logits, total, grad, pos_abs, neg_abs, grad_stats)
