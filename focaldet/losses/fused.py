"""The one path every sigmoid loss runs on: a loss *formula* evaluated over ``(N, K)`` logits in a
single pass that also builds the targets from the labels, applies the ignore mask and reduces.

A formula is a plain function ``formula(x, y, t, **params) -> (loss, dloss_dx)``, both shaped like
``x``: ``x`` the float32 (float64 kept) logits, ``y`` a boolean, True where the element is the
positive class of its anchor, ``t`` the soft target (IoU quality of a positive element, 0
elsewhere; only the quality-aware losses read it). ``params`` are Python numbers (scalars, so a
compiled pass specialises on them: ``(1-p_t)**2`` becomes a multiplication) or ``(K,)`` /
small lookup tensors that broadcast against ``x``. Value and gradient come from the same
intermediates, so backward is at most a multiplication by ``grad_output``.

:func:`fused_pass` is that pass. It runs eagerly, or compiled by a :class:`Compiler` (one per loss
module, switched by the module's ``compile=``): ``torch.compile`` then fuses the label comparison,
the formula, the mask and the sum into one loop over the logits that never materialises a one-hot
target. :func:`sigmoid_loss` wraps it for autograd and, for :class:`GradStats`, adds the per-class
gradient sums (:func:`class_grad_sums`).
"""
from __future__ import annotations

import os
import warnings

import torch
from torch import Tensor

from focaldet.losses.grad_stats import GradStats


def sigmoid_parts(z: Tensor):
    """``(σ(z), σ(-z), softplus(-z), softplus(z))`` from one ``exp`` and one ``log1p``.

    ``softplus(-z) = -log σ(z)`` is the cross entropy of ``p = σ(z)``; nothing is computed as
    ``log(sigmoid(z))``, so every part stays finite and accurate for |z| up to 100 and beyond.
    """
    e = torch.exp(-z.abs())
    log1p_e = torch.log1p(e)
    r = 1.0 / (1.0 + e)
    nonneg = z >= 0
    p = torch.where(nonneg, r, e * r)
    q = torch.where(nonneg, e * r, r)
    return p, q, torch.clamp(-z, min=0) + log1p_e, torch.clamp(z, min=0) + log1p_e


def compute_dtype(logits: Tensor) -> torch.dtype:
    """float32 for half/bfloat16/float32 logits (a loss is never computed in half), float64 kept."""
    return torch.float64 if logits.dtype == torch.float64 else torch.float32


def positive_mask(x: Tensor, labels: Tensor) -> Tensor:
    """``(N, K)`` bool, True at ``[i, labels[i]]`` for foreground labels; background (K and above)
    and ignored (-1) rows match no column."""
    return labels[:, None] == torch.arange(x.shape[1], device=x.device)


def fused_pass(x: Tensor, labels: Tensor, quality: Tensor | None, norm: Tensor, formula, params: dict,
               for_class_sums: bool):
    """``(Σ loss / norm, ∂/∂x of that (N, K), neg_min)`` over the non-ignored rows.

    ``neg_min`` (0-d, or None unless ``for_class_sums``) is the smallest gradient of a negative
    element, floored at 0: whether :func:`class_grad_sums` may sum the gradient without ``abs``.
    """
    y = positive_mask(x, labels)
    t = torch.where(y, quality[:, None], 0.0) if quality is not None else 0.0
    loss, grad = formula(x, y, t, **params)
    valid = (labels >= 0)[:, None]
    inv_norm = 1.0 / norm
    # where(), not a multiplication: an ignored row's inf (modified_focal) must not become NaN
    total = torch.where(valid, loss, 0.0).sum() * inv_norm
    grad = torch.where(valid, grad * inv_norm, 0.0)
    neg_min = torch.where(y, 0.0, grad).amin() if for_class_sums else None
    return total, grad, neg_min


def class_grad_sums(grad: Tensor, labels: Tensor, neg_min: Tensor) -> tuple[Tensor, Tensor]:
    """Per-class ``(Σ|g| over positives, Σ|g| over non-ignored negatives)``, each ``(K,)`` float32,
    of a gradient ``grad (N, K)`` whose ignored rows are zero (``neg_min``: see :func:`fused_pass`).

    Column sums are taken as ``ones(N) @ grad``, a BLAS gemv that reads the array once, row by
    row (a compiled column reduction reads it once per vector of columns). The few positive
    entries are zeroed for it, not subtracted afterwards: a positive's |g| can dwarf its class's
    whole negative sum, and the subtraction would cancel in float32.
    """
    num_classes = grad.shape[1]
    pos_rows = ((labels >= 0) & (labels < num_classes)).nonzero().squeeze(1)
    pos_cols = labels[pos_rows]
    pos_vals = grad[pos_rows, pos_cols]
    pos_abs = torch.zeros(num_classes, dtype=torch.float32, device=grad.device)
    pos_abs.index_add_(0, pos_cols, pos_vals.abs().float())
    ones = grad.new_ones(grad.shape[0])
    if grad.device.type == "cpu" and neg_min.item() >= 0:
        # every negative's gradient is >= 0 (all losses but poly_focal with ε < 0): Σ g = Σ |g|,
        # and no |grad| copy is needed; the check is free on CPU, a device sync elsewhere
        grad[pos_rows, pos_cols] = 0
        neg_abs = torch.mv(grad.t(), ones)
        grad[pos_rows, pos_cols] = pos_vals
    else:
        abs_grad = grad.abs()
        abs_grad[pos_rows, pos_cols] = 0
        neg_abs = torch.mv(abs_grad.t(), ones)
    return pos_abs, neg_abs.float()


def compile_from_env() -> bool:
    """``FOCALDET_COMPILE`` (default on; ``0``/``false``/``no``/``off`` turn it off), the default
    of a loss's ``compile=None``; read once, when the loss is built."""
    return os.environ.get("FOCALDET_COMPILE", "1").strip().lower() not in ("0", "false", "no", "off")


class Compiler:
    """Runs a function eagerly or through ``torch.compile``; the compile state of one loss.

    ``enabled``: compile at all (``None``: :func:`compile_from_env`). ``min_elements``: inputs
    smaller than this run eagerly (on small CPU presets the one-off compile costs tens of seconds and
    saves milliseconds per step). Row counts are marked dynamic, so a new number of anchors does
    not recompile; a new class count or a new scalar parameter value compiles once more. If
    compiling fails (no C++ compiler, an unsupported platform) this object warns once and runs
    eagerly from then on.
    """

    def __init__(self, enabled: bool | None = None, min_elements: int = 2 ** 20):
        self.enabled = compile_from_env() if enabled is None else bool(enabled)
        self.min_elements = int(min_elements)
        self.failed = False
        self._compiled: dict = {}

    def __call__(self, fn, x: Tensor, *args):
        """``fn(x, *args)``, compiled when enabled and ``x`` has at least ``min_elements`` elements."""
        if not self.enabled or self.failed or x.numel() < self.min_elements:
            return fn(x, *args)
        for a in (x, *args):
            if isinstance(a, Tensor) and a.dim() > 0 and a.shape[0] == x.shape[0]:
                torch._dynamo.maybe_mark_dynamic(a, 0)
        compiled = self._compiled.get(fn)
        if compiled is None:
            compiled = self._compiled[fn] = torch.compile(fn, dynamic=None)
        try:
            # floats specialised (constants in the kernel); several losses share a code object,
            # and the default limit of 8 specialisations would silently send the rest to eager
            with torch._dynamo.config.patch(recompile_limit=64, specialize_float=True):
                return compiled(x, *args)
        except Exception as e:  # noqa: BLE001 - any compiler failure means: eager from now on
            self.failed = True
            warnings.warn(f"focaldet.losses: torch.compile failed ({type(e).__name__}: {str(e)[:200]}); "
                          "this loss runs eagerly from now on (build it with compile=False to skip compiling)",
                          RuntimeWarning, stacklevel=3)
            return fn(x, *args)

    def __repr__(self) -> str:
        return f"Compiler(enabled={self.enabled}, min_elements={self.min_elements}, failed={self.failed})"


class _PrecomputedGradient(torch.autograd.Function):
    """Returns ``total``; backward returns ``grad_output · grad`` for the logits and, only when
    backward actually runs, adds ``(pos_abs, neg_abs)`` to a :class:`GradStats`."""

    @staticmethod
    def forward(ctx, logits, total, grad, grad_stats, pos_abs, neg_abs):
        ctx.save_for_backward(grad)
        ctx.logits_dtype = logits.dtype
        ctx.stats = (grad_stats, pos_abs, neg_abs) if grad_stats is not None else None
        return total.clone()

    @staticmethod
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        if ctx.stats is not None:
            grad_stats, pos_abs, neg_abs = ctx.stats
            grad_stats.accumulate(pos_abs, neg_abs)
        # a plain loss.backward() on CPU (grad_output 1, readable without a device sync) needs no
        # pass over the (N, K) gradient; autograd never writes into a gradient it is handed
        if not (grad_output.device.type == "cpu" and grad_output.item() == 1.0):
            grad = grad_output * grad
        return grad.to(ctx.logits_dtype), None, None, None, None, None


def sigmoid_loss(formula, logits: Tensor, labels: Tensor, *, norm: Tensor, params: dict,
                 quality: Tensor | None = None, grad_stats: GradStats | None = None,
                 compiler: Compiler | None = None) -> Tensor:
    """``formula`` summed over the non-ignored rows of ``logits (N, K)`` and divided by ``norm``
    (a 0-d tensor), as a 0-d float32 tensor (float64 for float64 logits) whose backward uses the
    formula's own gradient.

    ``labels (N,)``: 0..K-1 foreground, K background, -1 ignored. ``quality (N,)``: soft targets.
    ``compiler``: how to run the pass (None: eagerly). Autocast is off inside: any floating logits
    are computed in float32 and the gradient is returned in the logits' dtype.
    """
    dtype = compute_dtype(logits)
    device = logits.device
    with torch.no_grad(), torch.autocast(device.type, enabled=False):
        x = logits.detach().to(dtype)
        labels = labels.detach().long()
        if quality is not None:
            quality = quality.detach().to(device=device, dtype=dtype)
        params = {k: (v.to(device=device, dtype=dtype) if isinstance(v, Tensor) else v)
                  for k, v in params.items()}
        args = (x, labels, quality, norm.to(dtype), formula, params, grad_stats is not None)
        total, grad, neg_min = compiler(fused_pass, *args) if compiler is not None else fused_pass(*args)
        pos_abs = neg_abs = None
        if grad_stats is not None:
            pos_abs, neg_abs = class_grad_sums(grad, labels, neg_min)
    if not logits.requires_grad:
        return total
    return _PrecomputedGradient.apply(logits, total, grad, grad_stats, pos_abs, neg_abs)
