import math

import pytest
import torch
import torchvision

from focaldet.losses import (Compiler, GradStats, balanced_bce_loss, bce_loss, build_loss, focal_loss, focal_star_loss,
                             modified_focal_loss, poly_focal_loss, quality_focal_loss, varifocal_loss)
from tests.losses import reference as R

K = 6


def make_batch(n=48, k=K, scale=6.0, seed=0, extremes=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, k, generator=g, dtype=torch.float64) * scale
    if extremes:  # exercise ±100 on positive and negative elements alike
        x[0, :] = 100.0
        x[1, :] = -100.0
        x[2, ::2] = 100.0
        x[2, 1::2] = -100.0
    labels = torch.randint(0, k + 1, (n,), generator=g)
    labels[0], labels[1], labels[2] = 1, 2, k  # extreme rows include positives and background
    labels[3:n:7] = -1  # ignored rows
    quality = torch.rand(n, generator=g, dtype=torch.float64)
    return x, labels, quality


# name -> (functional, reference, params, needs quality)
CASES = {
    "bce": (bce_loss, R.ref_bce, {}, False),
    "balanced_bce": (balanced_bce_loss, R.ref_balanced_bce, {"alpha": 0.6}, False),
    "focal": (focal_loss, R.ref_focal, {"gamma": 2.0, "alpha": 0.25}, False),
    "focal_g05": (focal_loss, R.ref_focal, {"gamma": 0.5, "alpha": 0.4}, False),
    "focal_noalpha": (focal_loss, R.ref_focal, {"gamma": 1.5, "alpha": None}, False),
    "modified_focal_capped": (modified_focal_loss, R.ref_modified_focal,
                              {"gamma": 2.0, "alpha": 0.25, "max_weight": 1e6}, False),
    "focal_star": (focal_star_loss, R.ref_focal_star, {"gamma": 2.0, "beta": 1.0, "alpha": 0.25}, False),
    "poly_focal": (poly_focal_loss, R.ref_poly_focal, {"gamma": 2.0, "alpha": 0.25, "epsilon": 1.0}, False),
    "poly_focal_neg_eps": (poly_focal_loss, R.ref_poly_focal, {"gamma": 1.0, "alpha": 0.25, "epsilon": -1.0}, False),
    "quality_focal": (quality_focal_loss, R.ref_quality_focal, {"beta": 2.0}, True),
    "varifocal": (varifocal_loss, R.ref_varifocal, {"alpha": 0.75, "gamma": 2.0}, True),
}


def reference(name, x64, labels, quality, normalizer):
    _, ref, params, needs_q = CASES[name]
    x = x64.detach().clone().requires_grad_()
    y = R.one_hot(labels, x.shape[1])
    elem = ref(x, y, quality, **params) if needs_q else ref(x, y, **params)
    total = R.ref_total(elem, labels, normalizer)
    total.backward()
    return total.detach(), x.grad


def ours(name, x, labels, quality, normalizer, grad_stats=None, compiler=None):
    fn, _, params, needs_q = CASES[name]
    x = x.detach().clone().requires_grad_()
    kw = {"quality": quality.to(torch.float64 if x.dtype == torch.float64 else torch.float32)} if needs_q else {}
    out = fn(x, labels, normalizer=normalizer, grad_stats=grad_stats, compiler=compiler, **kw, **params)
    out.backward()
    return out, x.grad


@pytest.mark.parametrize("name", list(CASES))
def test_value_and_gradient_match_float64_reference(name):
    x64, labels, q = make_batch()
    ref_val, ref_grad = reference(name, x64, labels, q, 7.0)
    val, grad = ours(name, x64.float(), labels, q, 7.0)
    assert val.dtype == torch.float32 and val.dim() == 0
    assert torch.isfinite(val) and torch.isfinite(grad).all()
    torch.testing.assert_close(val.double(), ref_val, rtol=2e-5, atol=1e-5)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["focal_g05", "modified_focal_capped", "focal_star", "poly_focal",
                                  "quality_focal", "varifocal", "balanced_bce"])
def test_gradcheck_float64(name):
    fn, _, params, needs_q = CASES[name]
    x64, labels, q = make_batch(n=10, k=3, scale=2.0, extremes=False)
    kw = {"quality": q} if needs_q else {}
    assert torch.autograd.gradcheck(lambda x: fn(x, labels, normalizer=3.0, **kw, **params),
                                    (x64.clone().requires_grad_(),))


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (0.5, 0.0), (0.75, 0.0), (0.25, 1.0), (0.1, 5.0), (0.9, 0.5)])
def test_focal_and_balanced_bce_match_torchvision(alpha, gamma):
    x64, labels, _ = make_batch(n=64, extremes=False)
    x = x64.float()
    target = R.one_hot(labels, K).float()
    valid = labels >= 0
    xr = x.clone().requires_grad_()
    tv = torchvision.ops.sigmoid_focal_loss(xr[valid], target[valid], alpha=alpha, gamma=gamma, reduction="sum") / 5
    tv.backward()
    xo = x.clone().requires_grad_()
    if gamma == 0:
        out = balanced_bce_loss(xo, labels, normalizer=5, alpha=alpha)
    else:
        out = focal_loss(xo, labels, normalizer=5, alpha=alpha, gamma=gamma)
    out.backward()
    torch.testing.assert_close(out, tv, rtol=1e-5, atol=1e-5)
    assert torch.isfinite(xo.grad).all()
    # torchvision's own gradient is NaN where (1-p_t)^γ, γ < 1, meets 1-p_t == 0 in float32
    ok = torch.isfinite(xr.grad)
    assert ok.float().mean() > 0.98
    torch.testing.assert_close(xo.grad[ok], xr.grad[ok], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("name", ["focal", "modified_focal_capped", "quality_focal", "varifocal"])
def test_ignored_rows_contribute_nothing(name):
    x64, labels, q = make_batch()
    x = x64.float()
    ignored = labels == -1
    val, grad = ours(name, x, labels, q, 4.0)
    keep = ~ignored
    val_kept, _ = ours(name, x[keep], labels[keep], q[keep], 4.0)
    torch.testing.assert_close(val, val_kept, rtol=1e-6, atol=1e-6)
    assert (grad[ignored] == 0).all()
    # changing ignored logits (to anything, even values where a loss overflows) changes nothing
    x2 = x.clone()
    x2[ignored] = 1e4
    val2, _ = ours(name, x2, labels, q, 4.0)
    assert val2 == val


def test_empty_positives_work():
    x = torch.randn(20, K) * 3
    labels = torch.full((20,), K)
    labels[:4] = -1
    for name in CASES:
        val, grad = ours(name, x, labels, torch.rand(20), 1.0)
        ref_val, ref_grad = reference(name, x.double(), labels, torch.rand(20).double() * 0, 1.0)
        assert torch.isfinite(val) and torch.isfinite(grad).all()
        torch.testing.assert_close(val.double(), ref_val, rtol=2e-5, atol=1e-6)
    with pytest.raises(ValueError, match="normalizer"):
        focal_loss(x, labels, normalizer=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_give_float32_results(dtype):
    x64, labels, q = make_batch()
    xh = x64.to(dtype)
    q = q.float().double()
    for name in CASES:
        val, grad = ours(name, xh, labels, q, 7.0)
        assert val.dtype == torch.float32 and grad.dtype == dtype
        assert torch.isfinite(val)
        if name != "modified_focal_capped":  # its gradient reaches max_weight·|x|, beyond float16's range
            assert torch.isfinite(grad).all()
        # the loss is that of the rounded half logits, computed in float32
        ref_val, _ = reference(name, xh.double(), labels, q, 7.0)
        torch.testing.assert_close(val.double(), ref_val, rtol=2e-5, atol=1e-5)


def test_autocast_computes_in_float32():
    x64, labels, _ = make_batch()
    lin = torch.nn.Linear(K, K)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = lin(x64.float())
        assert logits.dtype == torch.bfloat16
        out = focal_loss(logits, labels, normalizer=3.0)
    assert out.dtype == torch.float32
    ref_val, _ = reference("focal", logits.detach().double(), labels, None, 3.0)
    torch.testing.assert_close(out.double(), ref_val, rtol=2e-5, atol=1e-5)
    out.backward()
    assert torch.isfinite(lin.weight.grad).all()


def test_modified_focal_overflows_uncapped_and_is_finite_capped():
    # a negative at x = 50 with γ = 2: the weight exp(100) overflows float32 (> ~3.4e38)
    x = torch.tensor([[50.0, -3.0]])
    labels = torch.tensor([2])
    xr = x.clone().requires_grad_()
    out = modified_focal_loss(xr, labels, normalizer=1.0)
    out.backward()
    assert math.isinf(out.item()) and not torch.isfinite(xr.grad[0, 0])
    # up to γ·|x| ≈ 88 it is finite and faithful
    xs = torch.tensor([[40.0, -3.0]], dtype=torch.float32)
    val, _ = ours("modified_focal_capped", xs, labels, None, 1.0)
    ref = 0.75 * math.exp(80.0) * 40.0 + 0.75 * math.exp(-6) * math.log1p(math.exp(-3))
    assert val.item() == pytest.approx(min(ref, 1e6 * 0.75 * 40.0 + 0.75 * math.exp(-6) * math.log1p(math.exp(-3))),
                                       rel=1e-5)
    fine = modified_focal_loss(xs, labels, normalizer=1.0)
    assert fine.item() == pytest.approx(ref, rel=1e-5)


@pytest.mark.parametrize("name", ["focal", "poly_focal_neg_eps", "quality_focal", "modified_focal_capped"])
def test_grad_stats_match_reference_gradient(name):
    x64, labels, q = make_batch(extremes=False)
    stats = GradStats(K)
    _, ref_grad = reference(name, x64, labels, q, 7.0)
    ours(name, x64.float(), labels, q, 7.0, grad_stats=stats)
    y = R.one_hot(labels, K)
    valid = (labels >= 0)[:, None].double()
    torch.testing.assert_close(stats.pos_grad.double(), (ref_grad.abs() * y * valid).sum(0), rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(stats.neg_grad.double(), (ref_grad.abs() * (1 - y) * valid).sum(0), rtol=1e-4, atol=1e-6)
    assert stats.num_updates.item() == 1
    # independent of grad_output (AMP loss scaling): a scaled backward adds the same statistics
    before = stats.pos_grad.clone()
    x = x64.float().requires_grad_()
    fn, _, params, needs_q = CASES[name]
    kw = {"quality": q.float()} if needs_q else {}
    (fn(x, labels, normalizer=7.0, grad_stats=stats, **kw, **params) * 1024.0).backward()
    torch.testing.assert_close(stats.pos_grad, 2 * before)


@pytest.mark.parametrize("name", ["focal", "modified_focal_capped", "varifocal", "poly_focal_neg_eps"])
def test_compiled_pass_matches_reference(name):
    compiler = Compiler(enabled=True, min_elements=1)
    stats = GradStats(K)
    y_sum = torch.zeros(K, dtype=torch.float64)
    ref_pos = torch.zeros(K, dtype=torch.float64)
    for n in (48, 75):  # a second anchor count must not need another compile to be right
        x64, labels, q = make_batch(n=n, seed=n)
        ref_val, ref_grad = reference(name, x64, labels, q, 7.0)
        val, grad = ours(name, x64.float(), labels, q, 7.0, grad_stats=stats, compiler=compiler)
        torch.testing.assert_close(val.double(), ref_val, rtol=2e-5, atol=1e-5)
        torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-4, atol=1e-6)
        y = R.one_hot(labels, K)
        ref_pos += (ref_grad.abs() * y).sum(0)
        y_sum += (ref_grad.abs() * (1 - y) * (labels >= 0)[:, None]).sum(0)
    torch.testing.assert_close(stats.pos_grad.double(), ref_pos, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(stats.neg_grad.double(), y_sum, rtol=1e-4, atol=1e-6)
    assert not compiler.failed


@pytest.mark.parametrize("name", ["balanced_bce", "focal_g05", "modified_focal_capped", "focal_star", "poly_focal",
                                  "varifocal"])
def test_float64_logits_keep_alpha_in_float64(name):
    """α = 0.4 rounded to float32 is off by 1.5e-8 (0.6 by 4e-8) relative: a float64 result must
    agree with the float64 reference far below that."""
    fn, _, params, needs_q = CASES[name]
    params = {**params, "alpha": 0.4}
    x64, labels, q = make_batch(scale=3.0, extremes=False)
    x = x64.clone().requires_grad_()
    y = R.one_hot(labels, K)
    ref = CASES[name][1]
    elem = ref(x, y, q, **params) if needs_q else ref(x, y, **params)
    ref_val = R.ref_total(elem, labels, 7.0)
    ref_val.backward()
    xo = x64.clone().requires_grad_()
    out = fn(xo, labels, normalizer=7.0, **({"quality": q} if needs_q else {}), **params)
    out.backward()
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, ref_val.detach(), rtol=1e-12, atol=0)
    torch.testing.assert_close(xo.grad, x.grad, rtol=1e-11, atol=1e-300)


def test_module_form_matches_functional():
    x64, labels, q = make_batch()
    x = x64.float()
    m = build_loss("poly_focal", num_classes=K, gamma=1.0, epsilon=0.5)
    assert m.name == "poly_focal" and m.family == "sigmoid" and not m.needs_quality and m.grad_stats is None
    assert m.params == {"gamma": 1.0, "alpha": 0.25, "epsilon": 0.5}
    torch.testing.assert_close(m(x, labels, normalizer=3.0),
                               poly_focal_loss(x, labels, normalizer=3.0, gamma=1.0, epsilon=0.5))
    with pytest.raises(ValueError, match="quality"):
        build_loss("varifocal", num_classes=K)(x, labels, normalizer=1.0)
    with pytest.raises(ValueError, match=r"\(N, 6\)"):
        m(x[:, :4], labels, normalizer=1.0)


def test_compile_failure_falls_back_to_eager_once_with_a_warning(monkeypatch):
    """Simulates a machine without a working compiler (this one has g++): the first failing compile
    warns once, every later call runs eagerly, and the results stay right."""
    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: broken)
    loss = build_loss("focal", num_classes=K, compile=True)
    loss.compiler.min_elements = 1
    x64, labels, _ = make_batch()
    ref_val, ref_grad = reference("focal", x64, labels, None, 7.0)
    x = x64.float().requires_grad_()
    with pytest.warns(RuntimeWarning, match="torch.compile failed"):
        val = loss(x, labels, normalizer=7.0)
    val.backward()
    torch.testing.assert_close(val.double(), ref_val, rtol=2e-5, atol=1e-5)
    torch.testing.assert_close(x.grad.double(), ref_grad, rtol=1e-4, atol=1e-6)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss(x64.float(), labels, normalizer=7.0)
    assert loss.compiler.failed


def test_compile_switch_is_explicit_and_read_once(monkeypatch):
    monkeypatch.setenv("FOCALDET_COMPILE", "0")
    assert not build_loss("focal", num_classes=K).compiler.enabled
    assert build_loss("focal", num_classes=K, compile=True).compiler.enabled
    monkeypatch.setenv("FOCALDET_COMPILE", "1")
    loss = build_loss("focal", num_classes=K)
    monkeypatch.setenv("FOCALDET_COMPILE", "0")  # later changes do not reach a built loss
    assert loss.compiler.enabled and not build_loss("ghm", num_classes=K, compile=False).compiler.enabled


def test_backward_twice_with_retain_graph_and_scaled_grad_output():
    """The gradient handed out for grad_output = 1 is the loss's own buffer: a retained graph must
    still give the reference gradient on a second backward, and a scaled one its multiple."""
    x64, labels, _ = make_batch(extremes=False)
    _, ref_grad = reference("focal", x64, labels, None, 7.0)
    x = x64.float().requires_grad_()
    out = focal_loss(x, labels, normalizer=7.0)
    out.backward(retain_graph=True)
    out.backward(retain_graph=True)
    torch.testing.assert_close(x.grad.double(), 2 * ref_grad, rtol=1e-4, atol=1e-6)
    (3.0 * out).backward()
    torch.testing.assert_close(x.grad.double(), 5 * ref_grad, rtol=1e-4, atol=1e-6)
