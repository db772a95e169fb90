import pytest
import torch

from focaldet.losses import build_loss


def make(n=90, K=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, K + 1, generator=g) * 3
    labels = torch.full((n,), K)
    labels[torch.randperm(n, generator=g)[:12]] = torch.randint(0, K, (12,), generator=g)
    labels[5:n:11] = -1
    batch_index = torch.arange(n) * 3 // n  # three images
    return x, labels, batch_index


def ref_ce(x, labels, eps=0.0):
    """(1-ε)·(-log p_y) + ε·mean_k(-log p_k) per row, float64."""
    logp = torch.log_softmax(x.double(), 1)
    nll = -logp.gather(1, labels.clamp(min=0)[:, None])[:, 0]
    return (1 - eps) * nll + eps * (-logp.mean(1))


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_softmax_ce_with_label_smoothing(eps):
    x, labels, _ = make()
    loss = build_loss("softmax_ce", num_classes=4, label_smoothing=eps)
    assert loss.family == "softmax" and loss.grad_stats is None
    out = loss(x.half(), labels, normalizer=4.0)
    assert out.dtype == torch.float32
    ref = ref_ce(x.half().float(), labels, eps)[labels >= 0].sum() / 4
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)


def test_ohem_takes_hardest_negatives_per_image():
    x, labels, image = make()
    K = 4
    out = build_loss("ohem", num_classes=K, neg_pos_ratio=2)(x, labels, normalizer=3.0, batch_index=image)
    ce = ref_ce(x, labels)
    expected = 0.0
    for b in range(3):  # per-image reference with an explicit loop
        rows = image == b
        pos = rows & (labels >= 0) & (labels < K)
        neg_ce = ce[rows & (labels == K)]
        k = min(2 * int(pos.sum()), neg_ce.numel())
        expected += ce[pos].sum() + neg_ce.sort(descending=True).values[:k].sum()
    torch.testing.assert_close(out.double(), expected / 3.0, rtol=1e-5, atol=1e-5)


def test_sampled_respects_quotas_and_global_rng():
    x, labels, image = make(n=300)
    K = 4
    loss = build_loss("sampled", num_classes=K, batch_size_per_image=20, positive_fraction=0.25)
    torch.manual_seed(0)
    xr = x.clone().requires_grad_()
    out = loss(xr, labels, normalizer=1.0, batch_index=image)
    out.backward()
    chosen = xr.grad.abs().sum(1) > 0
    for b in range(3):
        rows = image == b
        npos = int((rows & (labels >= 0) & (labels < K)).sum())
        assert int((chosen & rows & (labels >= 0) & (labels < K)).sum()) == min(npos, 5)
        assert int((chosen & rows & (labels == K)).sum()) == 20 - min(npos, 5)
    assert not chosen[labels == -1].any()
    torch.testing.assert_close(out.double(), ref_ce(x, labels)[chosen].sum())
    torch.manual_seed(0)
    assert loss(x, labels, normalizer=1.0, batch_index=image) == out
    # a batch larger than the image takes every non-ignored row
    everything = build_loss("sampled", num_classes=K, batch_size_per_image=1000, positive_fraction=1.0)
    torch.testing.assert_close(everything(x, labels, normalizer=1.0, batch_index=image).double(),
                               ref_ce(x, labels)[labels >= 0].sum())
