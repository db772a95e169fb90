"""Elementwise loss and gradient of the sigmoid-family losses, computed together.

Every kernel takes the float32 (or float64) logits ``x``, a boolean ``y`` (True where the element
is the positive class of its anchor), the soft target ``t`` (IoU quality of positives, 0 elsewhere;
only the quality-aware losses read it) and the loss's parameters as tensors that broadcast against
``x`` (0-d, or ``(K,)`` for per-class parameters). It returns ``(loss, dloss_dx)``, both shaped like
``x``. Scalar parameters are Python numbers, so a compiled kernel specialises on them (``(1-p_t)**2``
becomes a multiplication; a new value compiles once more); per-class parameters are ``(K,)`` tensors.

Numerics (SPEC §1): with ``z = x`` for positives and ``-x`` for negatives, one ``e = exp(-|z|)`` and
one ``log1p(e)`` give all of ``p_t = σ(z)``, ``1 - p_t = σ(-z)`` and ``CE = softplus(-z)``; nothing
is computed as ``log(sigmoid(x))``, so values and gradients stay finite for |x| up to 100 and beyond.
"""
from __future__ import annotations

import torch
from torch import Tensor


def _sigmoid_parts(z: Tensor):
    """``(σ(z), σ(-z), softplus(-z), softplus(z))`` from one exp and one log1p."""
    e = torch.exp(-z.abs())
    log1p_e = torch.log1p(e)
    r = 1.0 / (1.0 + e)
    nonneg = z >= 0
    p = torch.where(nonneg, r, e * r)
    q = torch.where(nonneg, e * r, r)
    sp_neg = torch.clamp(-z, min=0) + log1p_e  # softplus(-z) = -log σ(z)
    sp_pos = torch.clamp(z, min=0) + log1p_e   # softplus(z) = -log σ(-z)
    return p, q, sp_neg, sp_pos


def _pow_q(q: Tensor, sp_pos: Tensor, gamma):
    """``(1-p_t)^γ``; for a per-class tensor γ as ``exp(-γ·softplus(z_t))`` (one exp, not a pow)."""
    if isinstance(gamma, Tensor):
        return torch.exp(-gamma * sp_pos)
    return q ** gamma


def focal(x: Tensor, y: Tensor, t: Tensor, alpha_pos: Tensor, alpha_neg: Tensor, gamma: Tensor):
    """``α_t (1-p_t)^γ CE(p_t)``. With γ = 0 this is (α-balanced) BCE; with per-class ``gamma`` and
    ``alpha_*`` it is the equalized focal loss (the weighting factor folded into α)."""
    z = torch.where(y, x, -x)
    a = torch.where(y, alpha_pos, alpha_neg)
    p, q, ce, sp_pos = _sigmoid_parts(z)
    qg = _pow_q(q, sp_pos, gamma)
    loss = a * qg * ce
    # d/dz [(1-p)^γ CE] = -(1-p)^γ (γ p CE + (1-p)); written without (1-p)^(γ-1) so γ < 1 is safe
    dz = -a * qg * (gamma * p * ce + q)
    return loss, torch.where(y, dz, -dz)


def poly_focal(x, y, t, alpha_pos, alpha_neg, gamma, epsilon):
    """``FL + ε (1-p_t)^(γ+1)`` (Poly-1); α_t multiplies only the FL term, as SPEC writes it."""
    z = torch.where(y, x, -x)
    a = torch.where(y, alpha_pos, alpha_neg)
    p, q, ce, _ = _sigmoid_parts(z)
    qg = q ** gamma
    loss = a * qg * ce + epsilon * qg * q
    dz = -a * qg * (gamma * p * ce + q) - epsilon * (gamma + 1.0) * p * qg * q
    return loss, torch.where(y, dz, -dz)


def modified_focal(x, y, t, alpha_pos, alpha_neg, gamma, log_max_weight):
    """``α_t exp(-γ z_t) CE(p_t)`` with the weight capped at ``exp(log_max_weight)``.

    Uncapped (``log_max_weight = +inf``) the weight overflows float32 once ``-γ z_t > ~88.7``
    (e.g. a negative with x > 44 at γ = 2): value and gradient become inf, faithfully. Where the
    cap binds the weight is a constant, so its derivative is dropped.
    """
    z = torch.where(y, x, -x)
    a = torch.where(y, alpha_pos, alpha_neg)
    p, q, ce, _ = _sigmoid_parts(z)
    log_w = -gamma * z
    capped = log_w > log_max_weight
    w = torch.exp(torch.clamp(log_w, max=log_max_weight))
    loss = a * w * ce
    dz = a * w * (torch.where(capped, torch.zeros_like(ce), -gamma * ce) - q)
    return loss, torch.where(y, dz, -dz)


def focal_star(x, y, t, alpha_pos, alpha_neg, gamma, beta):
    """``α_t · softplus(-(γ z_t + β)) / γ`` (FL*, focal-loss paper Appendix A)."""
    z = torch.where(y, x, -x)
    a = torch.where(y, alpha_pos, alpha_neg)
    u = gamma * z + beta
    _, q_u, ce_u, _ = _sigmoid_parts(u)
    loss = a * ce_u / gamma
    dz = -a * q_u  # d/dz softplus(-u)/γ = -σ(-u)
    return loss, torch.where(y, dz, -dz)


def quality_focal(x, y, t, beta):
    """``|t - p|^β · BCE(p, t)`` with soft target ``t`` (IoU for positives, 0 for negatives)."""
    p, q, _, sp_pos = _sigmoid_parts(x)
    bce = sp_pos - t * x  # -(t log p + (1-t) log(1-p))
    d = p - t
    ad = d.abs()
    mod = ad ** beta
    # d|d|^β/dx = β |d|^(β-1) sign(d) p(1-p); taken as 0 where d = 0 (finite for β < 1 too)
    dmod = torch.where(ad > 0, beta * ad ** (beta - 1.0) * torch.sign(d), torch.zeros_like(d)) * (p * q)
    loss = mod * bce
    grad = dmod * bce + mod * d
    return loss, grad


def varifocal(x, y, t, alpha, gamma):
    """Positives ``t · BCE(p, t)``; negatives ``α p^γ · (-log(1-p))``."""
    p, q, _, sp_pos = _sigmoid_parts(x)
    pos_loss = t * (sp_pos - t * x)
    pos_grad = t * (p - t)
    pg = p ** gamma
    neg_loss = alpha * pg * sp_pos
    neg_grad = alpha * pg * (gamma * q * sp_pos + p)
    return torch.where(y, pos_loss, neg_loss), torch.where(y, pos_grad, neg_grad)


# Dense entry points, one per kernel. The label comparison, the ignore mask and the reductions live
# inside them so that a compiled one is a single fused pass over the (N, K) logits that never
# materialises a one-hot target. Each is its own function (own code object) on purpose: compiled
# caches are kept per code object, and sharing one would make the kernels evict each other.

def _targets(x: Tensor, labels: Tensor, quality):
    y = labels[:, None] == torch.arange(x.shape[1], device=x.device)
    t = torch.where(y, quality[:, None].to(x.dtype), 0.0) if quality is not None else 0.0
    return y, t


def _reduce(loss: Tensor, grad: Tensor, labels: Tensor, norm: Tensor):
    """``(Σ loss / norm, grad / norm)`` over non-ignored rows."""
    valid = (labels >= 0)[:, None]
    # where(), not a multiplication: an ignored row's inf (modified_focal) must not become NaN
    loss = torch.where(valid, loss, 0.0)
    grad = torch.where(valid, grad * (1.0 / norm), 0.0)
    return loss.sum() / norm, grad


def focal_dense(x, labels, quality, norm, alpha_pos, alpha_neg, gamma):
    y, t = _targets(x, labels, quality)
    return _reduce(*focal(x, y, t, alpha_pos, alpha_neg, gamma), labels, norm)


def poly_focal_dense(x, labels, quality, norm, alpha_pos, alpha_neg, gamma, epsilon):
    y, t = _targets(x, labels, quality)
    return _reduce(*poly_focal(x, y, t, alpha_pos, alpha_neg, gamma, epsilon), labels, norm)


def modified_focal_dense(x, labels, quality, norm, alpha_pos, alpha_neg, gamma, log_max_weight):
    y, t = _targets(x, labels, quality)
    return _reduce(*modified_focal(x, y, t, alpha_pos, alpha_neg, gamma, log_max_weight), labels, norm)


def focal_star_dense(x, labels, quality, norm, alpha_pos, alpha_neg, gamma, beta):
    y, t = _targets(x, labels, quality)
    return _reduce(*focal_star(x, y, t, alpha_pos, alpha_neg, gamma, beta), labels, norm)


def quality_focal_dense(x, labels, quality, norm, beta):
    y, t = _targets(x, labels, quality)
    return _reduce(*quality_focal(x, y, t, beta), labels, norm)


def varifocal_dense(x, labels, quality, norm, alpha, gamma):
    y, t = _targets(x, labels, quality)
    return _reduce(*varifocal(x, y, t, alpha, gamma), labels, norm)


# name -> (elementwise kernel, dense entry point)
KERNELS = {
    "focal": (focal, focal_dense),
    "poly_focal": (poly_focal, poly_focal_dense),
    "modified_focal": (modified_focal, modified_focal_dense),
    "focal_star": (focal_star, focal_star_dense),
    "quality_focal": (quality_focal, quality_focal_dense),
    "varifocal": (varifocal, varifocal_dense),
}
