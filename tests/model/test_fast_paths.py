"""The speed paths of the model against independent references: FrozenBN folded into its
convolution (float64 two-step reference), ResNet blocks (torchvision's own forward), one batched
NMS call (torchvision's per-image ``batched_nms``), no host synchronisation in the training path
(operators seen by torch.profiler), the compile switch's eager fallback, bf16 autocast."""
from unittest import mock

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops import FrozenBatchNorm2d, batched_nms, nms

from focaldet.model.backbone import ResNetBackbone, conv_norm
from focaldet.model.postprocess import ONE_CALL_MAX_CANDIDATES, batch_class_nms
from model_testutils import pasted_scene, tiny_model


def _random_frozen_bn(channels, g):
    bn = FrozenBatchNorm2d(channels)
    bn.weight.copy_(torch.rand(channels, generator=g) + 0.5)
    bn.bias.copy_(torch.randn(channels, generator=g))
    bn.running_mean.copy_(torch.randn(channels, generator=g))
    bn.running_var.copy_(torch.rand(channels, generator=g) + 0.1)
    return bn


@pytest.mark.parametrize("bias", [False, True])
def test_folded_conv_equals_conv_then_frozen_bn_in_float64(bias):
    g = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=bias)
    bn = _random_frozen_bn(16, g)
    x = torch.randn(2, 8, 20, 20, generator=g)
    conv64, bn64 = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=bias).double(), FrozenBatchNorm2d(16).double()
    conv64.load_state_dict(conv.state_dict())
    bn64.load_state_dict(bn.state_dict())
    x64 = x.double().requires_grad_()
    ref = bn64(conv64(x64))
    ref.square().sum().backward()
    xx = x.clone().requires_grad_()
    got = conv_norm(conv, bn, xx)
    got.square().sum().backward()
    assert torch.allclose(got.double(), ref, rtol=1e-5, atol=1e-5)
    assert torch.allclose(xx.grad.double(), x64.grad, rtol=1e-4, atol=1e-4)
    assert torch.allclose(conv.weight.grad.double(), conv64.weight.grad, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_folded_backbone_features_and_gradients_equal_torchvision(name):
    """BasicBlock and Bottleneck: our block forward with folded FrozenBN vs torchvision's modules."""
    g = torch.Generator().manual_seed(1)
    ours = ResNetBackbone(name, norm="frozen_bn", frozen_stages=2)
    with torch.no_grad():
        for m in ours.modules():
            if isinstance(m, FrozenBatchNorm2d):
                m.load_state_dict(_random_frozen_bn(m.weight.numel(), g).state_dict())
    ref = getattr(torchvision.models, name)(weights=None, norm_layer=FrozenBatchNorm2d)
    ref.load_state_dict(ours.state_dict(), strict=False)
    body = IntermediateLayerGetter(ref, {"layer2": "c3", "layer3": "c4", "layer4": "c5"})
    x = torch.randn(2, 3, 64, 64, generator=g)
    expected = list(body(x).values())
    got = ours(x.contiguous(memory_format=torch.channels_last))
    sum(e.square().mean() for e in expected).backward()
    sum(o.square().mean() for o in got).backward()
    for e, o in zip(expected, got):
        assert torch.allclose(o, e, rtol=1e-4, atol=1e-4 * e.abs().max().item())
    w_ref, w_ours = ref.layer4[0].conv1.weight.grad, ours.layer4[0].conv1.weight.grad
    assert torch.allclose(w_ours, w_ref, rtol=1e-3, atol=1e-3 * w_ref.abs().max().item())


@pytest.mark.parametrize("per_image", [200, 1500, 2600, "mixed"])  # torchvision loops per class above 1000
def test_one_nms_call_equals_torchvision_batched_nms_per_image(per_image):
    g = torch.Generator().manual_seed(2)
    B, K, size = 4, 7, 300
    M = 2600 if per_image == "mixed" else per_image
    xy = torch.rand(B, M, 2, generator=g) * (size - 60)
    boxes = torch.cat([xy, xy + 5 + torch.rand(B, M, 2, generator=g) * 55], -1)
    scores = torch.rand(B, M, generator=g)
    labels = torch.randint(0, K, (B, M), generator=g)
    valid = scores > 0.1
    if per_image == "mixed":  # image 1 above the one-call limit on its own, 0 / 2 / 3 in one call, 2 empty
        valid[[0, 3], 300:] = False
        valid[2] = False
    # 200 per image: one call for the batch; 1,500: one call per image (the batch is over the limit);
    # 2,600: one call per (image, class) group; mixed: both
    calls = []
    with mock.patch("focaldet.model.postprocess.nms", side_effect=lambda *a: calls.append(len(a[0])) or nms(*a)):
        kept = batch_class_nms(boxes, scores, labels, valid, 0.5, size, K)
    per = valid.sum(1).tolist()
    expected_calls = {200: [sum(per)], 1500: per}.get(per_image)
    if per_image == 2600:
        assert len(calls) == B * K and max(calls) < ONE_CALL_MAX_CANDIDATES
    elif per_image == "mixed":
        # image 1 splits the others: 0 alone, 1 per class, then 2 (empty) and 3 together
        assert per[1] > ONE_CALL_MAX_CANDIDATES and len(calls) == K + 2
        assert calls[0] == per[0] and calls[-1] == per[3] and sum(calls[1:-1]) == per[1]
    else:
        assert calls == expected_calls
    for i in range(B):
        m = valid[i].nonzero().squeeze(1)
        ref = m[batched_nms(boxes[i, m], scores[i, m], labels[i, m], 0.5)]
        assert torch.equal(kept[i], ref)


class _MaskedBCE(nn.Module):
    """A sync-free stand-in for the classification loss: the model's own path is what is checked."""
    family = "sigmoid"

    def forward(self, logits, labels, normalizer, quality=None, batch_index=None):
        valid = labels >= 0
        target = (labels[:, None] == torch.arange(logits.shape[1])).to(logits.dtype)  # one_hot would sync
        per = nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
        return torch.where(valid[:, None], per, 0.0).sum() / normalizer


def test_training_path_has_no_host_sync():
    """No operator that copies a device value to the host (item / nonzero / bool of a tensor)."""
    from torch.profiler import ProfilerActivity, profile

    model = tiny_model()
    model.cls_loss = _MaskedBCE()
    model.train()
    image, target = pasted_scene()
    target = dict(target, crowd_boxes=torch.tensor([[90.0, 5.0, 125.0, 40.0]]))
    images = torch.stack([image, image.flip(-1)])
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        losses = model(images, [(128, 128), (120, 100)], [target, target])
        (losses["loss_cls"] + losses["loss_box"]).backward()
    ops = {e.key for e in prof.key_averages()}
    syncing = {"aten::item", "aten::_local_scalar_dense", "aten::nonzero", "aten::is_nonzero"}
    assert not (ops & syncing), ops & syncing


def test_compile_failure_falls_back_to_eager_and_train_drops_it():
    model = tiny_model().eval()
    image, _ = pasted_scene()
    with torch.no_grad():
        expected = model(image[None], [(128, 128)])

    def broken(x):
        raise RuntimeError("no C++ compiler")

    model._compiled_network = broken
    with torch.no_grad(), pytest.warns(RuntimeWarning, match="running eagerly"):
        got = model(image[None], [(128, 128)])
    assert model._compiled_network is None
    assert torch.equal(got[0]["boxes"], expected[0]["boxes"])
    model.compile_for_inference()
    model.train()
    assert model._compiled_network is None


def test_weights_and_activations_are_channels_last():
    model = tiny_model()
    assert model.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert model.head.cls_logits.weight.is_contiguous(memory_format=torch.channels_last)
    image, _ = pasted_scene()
    x = model.normalize(image[None], [(128, 128)])
    assert x.is_contiguous(memory_format=torch.channels_last)
    feats = model.fpn(model.backbone(x))
    assert all(f.is_contiguous(memory_format=torch.channels_last) for f in feats)


def test_channels_last_off_runs_nchw_with_the_same_losses_and_gradients():
    """``runtime.channels_last=false`` (faster training of large ResNets on CPU) changes the
    layout only: in float64 both layouts give the same losses and gradients to rounding."""
    torch.manual_seed(0)
    nhwc = tiny_model("focal", "model.frozen_stages=2").double()
    torch.manual_seed(0)
    nchw = tiny_model("focal", "model.frozen_stages=2", "runtime.channels_last=false").double()
    assert nchw.head.cls_logits.weight.is_contiguous() and not nchw.channels_last
    image, target = pasted_scene()
    grads = []
    for model in (nhwc, nchw):
        model.train()
        losses = model(image[None].double(), [(128, 128)], [target])
        (losses["loss_cls"] + losses["loss_box"]).backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
        grads[-1]["losses"] = torch.stack([losses["loss_cls"], losses["loss_box"]]).detach()
    x = nchw.normalize(image[None].double(), [(128, 128)])
    assert x.is_contiguous() and all(f.is_contiguous() for f in nchw.fpn(nchw.backbone(x)))
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-9, atol=1e-12, msg=name)


def test_bf16_autocast_training_and_inference_stay_close_to_float32():
    model = tiny_model()
    image, target = pasted_scene()
    model.train()
    ref = model(image[None], [(128, 128)], [target])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = model(image[None], [(128, 128)], [target])
    for k in ("loss_cls", "loss_box"):
        assert got[k].dtype == torch.float32 and torch.isfinite(got[k])
        assert abs(got[k].item() - ref[k].item()) <= 0.03 * abs(ref[k].item()) + 1e-3, k
    model.eval()
    model.score_thresh = 0.001  # an untrained model scores ~π = 0.01 everywhere
    with torch.no_grad():
        ref = model(image[None], [(128, 128)])[0]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = model(image[None], [(128, 128)])[0]
    assert got["boxes"].dtype == torch.float32 and len(got["scores"]) > 0
    # bf16 keeps ~3 significant digits: scores agree to a few 1e-3 (the order of near-ties may change)
    n = min(20, len(ref["scores"]), len(got["scores"]))
    assert (got["scores"][:n] - ref["scores"][:n]).abs().max() < 1e-2
