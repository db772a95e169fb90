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
target, with the per-class gradient sums for :class:`GradStats` where asked for.
:func:`sigmoid_loss` wraps it for autograd.
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
               per_class_sums: bool):
    """``(Σ loss / norm, ∂/∂x of that (N, K), pos_abs, neg_abs)`` over the non-ignored rows.

    ``pos_abs``, ``neg_abs`` (``(K,)`` float32, or None unless ``per_class_sums``) are the per-class
    sums of |gradient| over positive and over non-ignored negative elements (:class:`GradStats`).
    """
    y = positive_mask(x, labels)
    t = torch.where(y, quality[:, None], 0.0) if quality is not None else 0.0
    loss, grad = formula(x, y, t, **params)
    valid = (labels >= 0)[:, None]
    inv_norm = 1.0 / norm
    # where(), not a multiplication: an ignored row's inf (modified_focal) must not become NaN
    total = torch.where(valid, loss, 0.0).sum() * inv_norm
    grad = torch.where(valid, grad * inv_norm, 0.0)
    if not per_class_sums:
        return total, grad, None, None
    g = grad.abs()
    # masked column sums, not "all minus positives": a positive's |g| can dwarf its class's whole
    # negative sum, and the subtraction would cancel in float32. Summed here, inside the one
    # compiled call: a few extra small ops would each wait for every thread on a loaded machine.
    pos_abs = torch.where(y, g, 0.0).sum(0)
    neg_abs = torch.where(y, 0.0, g).sum(0)
    return total, grad, pos_abs.float(), neg_abs.float()


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

    def __getstate__(self) -> dict:
        # a copied or pickled loss (deepcopy of a model) compiles again where it runs
        return {**self.__dict__, "_compiled": {}}

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
        # pass over the (N, K) gradient. If the caller then modifies that gradient in place and
        # runs backward through a retained graph again, autograd's version check raises.
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
        out = compiler(fused_pass, *args) if compiler is not None else fused_pass(*args)
        total, grad, pos_abs, neg_abs = out
    if not logits.requires_grad:
        return total
    return _PrecomputedGradient.apply(logits, total, grad, grad_stats, pos_abs, neg_abs)
