import pytest
import torch

from focaldet.losses import EqualizedFocalLoss, build_loss, focal_loss
from tests.losses import reference as R

K = 3


def test_efl_equals_focal_at_start():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, K, generator=g) * 4
    x[0] = 100.0
    x[1] = -100.0
    labels = torch.randint(-1, K + 1, (40,), generator=g)
    efl = build_loss("equalized_focal", num_classes=K)
    assert efl.grad_stats is not None and efl.params == {"gamma_b": 2.0, "scale": 8.0, "alpha": 0.25}
    torch.testing.assert_close(efl.gamma(), torch.full((K,), 2.0))
    xe, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
    le = efl(xe, labels, normalizer=5.0)
    lf = focal_loss(xf, labels, normalizer=5.0, gamma=2.0, alpha=0.25)
    le.backward()
    lf.backward()
    torch.testing.assert_close(le, lf)
    torch.testing.assert_close(xe.grad, xf.grad)


def ref_efl(x, y, gamma_j, gamma_b=2.0, alpha=0.25):
    """docs/spec.md §3 in float64: α_t (γ_j/γ_b) (1-p_t)^γ_j CE(p_t), γ_j per class (column)."""
    _, q_t, ce = R.parts(x, y)
    return R.alpha_t(y, alpha) * (gamma_j / gamma_b) * q_t ** gamma_j * ce


def batches():
    """Class 0 becomes frequent (one positive in the first batch, eight low-confidence ones in every
    later batch); class 2 is rare (one positive in the first batch, none after); class 1 in between."""
    g = torch.Generator().manual_seed(7)
    for it in range(5):
        n = 60
        x = torch.randn(n, K, generator=g, dtype=torch.float64) * 2 - 2
        labels = torch.full((n,), K)
        labels[: 1 if it == 0 else 8] = 0
        labels[20:22] = 1
        if it == 0:
            labels[23] = 2
        labels[50:55] = -1
        yield x, labels


@pytest.mark.parametrize("compile", [False, True])
def test_rare_class_gamma_rises_frequent_falls_matching_hand_computation(compile):
    efl = EqualizedFocalLoss(K, compile=compile)
    efl.compiler.min_elements = 1  # these inputs are tiny: compile them anyway
    G_pos = torch.zeros(K, dtype=torch.float64)
    G_neg = torch.zeros(K, dtype=torch.float64)
    gammas = []
    for it, (x64, labels) in enumerate(batches()):
        # hand computation of γ_j from the statistics so far (g_j = 1 before the first update)
        g = (G_pos / (G_neg + 1e-10)).clamp(0, 1) if it > 0 else torch.ones(K, dtype=torch.float64)
        gamma_j = 2.0 + 8.0 * (1 - g)
        torch.testing.assert_close(efl.gamma().double(), gamma_j, rtol=1e-4, atol=1e-4)
        normalizer = max(int(((labels >= 0) & (labels < K)).sum()), 1)
        xr = x64.clone().requires_grad_()
        y = R.one_hot(labels, K)
        total = R.ref_total(ref_efl(xr, y, gamma_j), labels, normalizer)
        total.backward()
        valid = (labels >= 0)[:, None].double()
        G_pos += (xr.grad.abs() * y * valid).sum(0)
        G_neg += (xr.grad.abs() * (1 - y) * valid).sum(0)

        xo = x64.float().requires_grad_()
        out = efl(xo, labels, normalizer=normalizer)
        torch.testing.assert_close(out.double(), total.detach(), rtol=1e-5, atol=1e-5)
        out.backward()
        torch.testing.assert_close(xo.grad.double(), xr.grad, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(efl.grad_stats.pos_grad.double(), G_pos, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(efl.grad_stats.neg_grad.double(), G_neg, rtol=1e-4, atol=1e-7)
        gammas.append(efl.gamma())
    gammas = torch.stack(gammas)  # (iterations, K): γ used from iteration 2 on
    assert efl.grad_stats.num_updates.item() == 5
    assert (gammas[1:, 2].diff() > 0).all(), gammas  # the rare class is focused harder and harder
    assert (gammas[1:, 0].diff() < 0).all(), gammas  # the frequent class relaxes towards γ_b
    assert gammas[-1, 2] > gammas[-1, 1] > gammas[-1, 0]
    assert not efl.compiler.failed


def test_state_dict_round_trip_restores_statistics():
    efl = EqualizedFocalLoss(K)
    for x64, labels in list(batches())[:3]:
        efl(x64.float().requires_grad_(), labels, normalizer=20).backward()
    state = efl.state_dict()
    assert set(state) == {"grad_stats.pos_grad", "grad_stats.neg_grad", "grad_stats.num_updates"}
    restored = build_loss("equalized_focal", num_classes=K)
    restored.load_state_dict(state)
    torch.testing.assert_close(restored.gamma(), efl.gamma())
    x64, labels = next(iter(batches()))
    torch.testing.assert_close(restored(x64.float(), labels, normalizer=20), efl(x64.float(), labels, normalizer=20))
    assert not torch.equal(restored.gamma(), torch.full((K,), 2.0))


def test_class_never_positive_drifts_to_gamma_b_plus_s():
    efl = EqualizedFocalLoss(2, gamma_b=1.0, scale=4.0)
    x = torch.randn(30, 2).requires_grad_()
    labels = torch.zeros(30, dtype=torch.long)  # class 1 never positive
    efl(x, labels, normalizer=30).backward()
    assert efl.gamma()[1].item() == pytest.approx(5.0)
