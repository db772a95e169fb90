"""Float64 reference formulas written directly from docs/spec.md §1–§3, independent of focaldet's kernels.

Each ``ref_*`` takes float64 logits ``x (N, K)``, a dense float64 target ``y (N, K)`` (built here
in the tests) and returns the per-element loss; autograd of these gives the reference gradient."""
import torch
import torch.nn.functional as F


def one_hot(labels, K):
    y = torch.zeros(labels.shape[0], K, dtype=torch.float64)
    pos = (labels >= 0) & (labels < K)
    y[pos.nonzero()[:, 0], labels[pos]] = 1.0
    return y


def parts(x, y):
    """``(z_t, 1 - p_t, CE)``; 1 - p_t as σ(-z_t) (docs/spec.md §1), which keeps its tiny values in float64."""
    z = torch.where(y > 0, x, -x)
    q_t = torch.sigmoid(-z)
    ce = -F.logsigmoid(z)  # -log p_t
    return z, q_t, ce


def alpha_t(y, alpha):
    return torch.where(y > 0, torch.full_like(y, alpha), torch.full_like(y, 1 - alpha))


def ref_bce(x, y):
    return parts(x, y)[2]


def ref_balanced_bce(x, y, alpha=0.75):
    return alpha_t(y, alpha) * parts(x, y)[2]


def ref_focal(x, y, gamma=2.0, alpha=0.25):
    _, q_t, ce = parts(x, y)
    a = 1.0 if alpha is None else alpha_t(y, alpha)
    return a * q_t ** gamma * ce


def ref_modified_focal(x, y, gamma=2.0, alpha=0.25, max_weight=None):
    z, _, ce = parts(x, y)
    w = torch.exp(-gamma * z)
    if max_weight is not None:
        w = w.clamp(max=max_weight)
    return alpha_t(y, alpha) * w * ce


def ref_focal_star(x, y, gamma=2.0, beta=1.0, alpha=0.25):
    z, _, _ = parts(x, y)
    return alpha_t(y, alpha) * -F.logsigmoid(gamma * z + beta) / gamma


def ref_poly_focal(x, y, gamma=2.0, alpha=0.25, epsilon=1.0):
    _, q_t, _ = parts(x, y)
    return ref_focal(x, y, gamma, alpha) + epsilon * q_t ** (gamma + 1)


def ref_quality_focal(x, y, q, beta=2.0):
    t = y * q[:, None]
    p = torch.sigmoid(x)
    bce = -(t * F.logsigmoid(x) + (1 - t) * F.logsigmoid(-x))
    return (t - p).abs() ** beta * bce


def ref_varifocal(x, y, q, alpha=0.75, gamma=2.0):
    t = y * q[:, None]
    p = torch.sigmoid(x)
    pos = -t * (t * F.logsigmoid(x) + (1 - t) * F.logsigmoid(-x))
    neg = -alpha * p ** gamma * F.logsigmoid(-x)
    return torch.where(y > 0, pos, neg)


def ref_total(elem, labels, normalizer):
    """Sum over non-ignored rows / normalizer."""
    valid = (labels >= 0)[:, None]
    return torch.where(valid, elem, torch.zeros_like(elem)).sum() / normalizer
