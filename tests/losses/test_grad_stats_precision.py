"""G⁻ of a class must stay exact when its positives' gradients dwarf its negatives' (the normal
state at prior-probability init, and the one EFL's rare-class statistics live in)."""
import torch

from focaldet.losses import build_loss
from tests.losses import reference as R


def test_negative_sums_do_not_cancel_against_large_positive_gradients():
    K, N = 6, 20000
    g = torch.Generator().manual_seed(0)
    # prior-init logits: every negative has p ≈ 0.01, so its focal gradient is ~1e-6
    x64 = torch.full((N, K), -4.595, dtype=torch.float64) + 0.05 * torch.randn(N, K, generator=g, dtype=torch.float64)
    labels = torch.full((N,), K, dtype=torch.long)
    labels[:40] = torch.arange(40) % K  # a few positives, each with |g| ~ 0.25
    loss = build_loss("focal", num_classes=K, track_grad_stats=True)
    x = x64.float().requires_grad_()
    loss(x, labels, normalizer=40.0).backward()

    xr = x64.clone().requires_grad_()
    yd = R.one_hot(labels, K)
    R.ref_focal(xr, yd).sum().div(40.0).backward()
    grad = xr.grad
    y = yd.bool()
    want_neg = torch.where(y, 0.0, grad.abs()).sum(0)
    want_pos = torch.where(y, grad.abs(), 0.0).sum(0)
    torch.testing.assert_close(loss.grad_stats.neg_grad.double(), want_neg, rtol=1e-4, atol=0)
    torch.testing.assert_close(loss.grad_stats.pos_grad.double(), want_pos, rtol=1e-4, atol=0)
