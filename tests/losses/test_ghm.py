import pytest
import torch
import torch.nn.functional as F

from focaldet.losses import build_loss
from tests.losses import reference as R


def ref_ghm_step(x, labels, acc, bins, momentum):
    """docs/spec.md / GHM-C paper in float64 with explicit per-bin loops: β_i = N / (M · GD(g_i)), loss =
    Σ β_i CE_i / N; the EMA starts from a bin's first count (documented in focaldet.losses.ghm)."""
    K = x.shape[1]
    y = R.one_hot(labels, K)
    valid = (labels >= 0)[:, None].expand_as(x)
    p = torch.sigmoid(x.detach())
    g = (p - y).abs()[valid]
    ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")[valid]
    n = g.numel()
    beta = torch.zeros_like(g)
    nonempty = 0
    for i in range(bins):
        lo, hi = i / bins, (i + 1) / bins
        inside = (g >= lo) & ((g < hi) if i < bins - 1 else (g <= 1))
        c = int(inside.sum())
        if c == 0:
            continue
        nonempty += 1
        acc[i] = c if acc[i] == 0 else momentum * acc[i] + (1 - momentum) * c
        beta[inside] = n / acc[i]
    beta = beta / nonempty
    return (beta * ce).sum() / n


@pytest.mark.parametrize("compile", [False, True])
def test_ghm_matches_reference_over_iterations(compile):
    K, bins, momentum = 4, 10, 0.75
    loss = build_loss("ghm", num_classes=K, compile=compile, track_grad_stats=True)
    loss.compiler.min_elements = 1  # these inputs are tiny: compile them anyway
    assert loss.params == {"bins": 10, "momentum": 0.75}
    acc = [0.0] * bins
    g = torch.Generator().manual_seed(3)
    pos_before = torch.zeros(K, dtype=torch.float64)
    for it in range(3):
        x = torch.randn(50, K, generator=g, dtype=torch.float64) * 3
        x[0] = 100.0
        x[1] = -100.0
        labels = torch.randint(-1, K + 1, (50,), generator=g)
        xr = x.clone().requires_grad_()
        ref = ref_ghm_step(xr, labels, acc, bins, momentum)
        ref.backward()
        xo = x.float().requires_grad_()
        out = loss(xo, labels, normalizer=7.0)
        out.backward()
        torch.testing.assert_close(out.double(), ref.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(xo.grad.double(), xr.grad, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(loss.acc_sum.double(), torch.tensor(acc, dtype=torch.float64), rtol=1e-6, atol=0)
        y = R.one_hot(labels, K)
        torch.testing.assert_close(loss.grad_stats.pos_grad.double() - pos_before,
                                   (xr.grad.abs() * y).sum(0), rtol=1e-4, atol=1e-7)
        pos_before = loss.grad_stats.pos_grad.double().clone()
    assert not loss.compiler.failed
    restored = build_loss("ghm", num_classes=K, track_grad_stats=True)
    restored.load_state_dict(loss.state_dict())
    assert torch.equal(restored.acc_sum, loss.acc_sum)
