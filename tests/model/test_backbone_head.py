"""Backbone weights/freezing against torchvision's ResNet, FPN wiring, head initialisation."""
import math

import pytest
import torch
import torchvision
from torchvision.models._utils import IntermediateLayerGetter

from focaldet.errors import CheckpointError, FocaldetError
from focaldet.model.backbone import ResNetBackbone
from focaldet.model.fpn import FPN
from focaldet.model.head import RetinaNetHead
from model_testutils import normalized_photo as _photo, randomize_bn_statistics


def test_local_state_dict_loads_and_features_equal_torchvision(tmp_path):
    ref = torchvision.models.resnet18(weights=None).eval()
    randomize_bn_statistics(ref)  # so that a wrong mapping would show
    path = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), path)
    ours = ResNetBackbone("resnet18", norm="frozen_bn", frozen_stages=2, weights=str(path)).eval()
    body = IntermediateLayerGetter(ref, {"layer2": "c3", "layer3": "c4", "layer4": "c5"})
    x = _photo()
    with torch.no_grad():
        expected = list(body(x).values())
        got = ours(x)
    assert ours.out_channels == [128, 256, 512]
    for e, g in zip(expected, got):
        assert e.shape == g.shape
        assert torch.allclose(e, g, atol=1e-4, rtol=1e-4)


def test_bad_weight_files_raise_errors_naming_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="missing.pth"):
        ResNetBackbone("resnet18", weights=str(tmp_path / "missing.pth"))
    wrong = tmp_path / "r34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), wrong)
    with pytest.raises(CheckpointError, match="r34.pth"):
        ResNetBackbone("resnet18", weights=str(wrong))
    with pytest.raises(FocaldetError, match="gn"):
        ResNetBackbone("resnet18", norm="gn", weights=str(wrong))


@pytest.mark.parametrize("frozen,trainable_first", [(0, "conv1"), (1, "layer1"), (2, "layer2"), (5, None)])
def test_frozen_stages(frozen, trainable_first):
    bb = ResNetBackbone("resnet18", norm="bn", frozen_stages=frozen)
    names = [n for n, p in bb.named_parameters() if p.requires_grad]
    if trainable_first is None:
        assert names == []
    else:
        assert names[0].startswith(trainable_first)
        assert names[-1].startswith("layer4")


@pytest.mark.parametrize("p6_from,p6_in", [("c5", 512), ("p5", 64)])
def test_fpn_levels_and_p6_source(p6_from, p6_in):
    fpn = FPN([128, 256, 512], 64, p6_from=p6_from)
    assert fpn.p6.in_channels == p6_in
    feats = [torch.randn(1, c, s, s) for c, s in ((128, 16), (256, 8), (512, 4))]
    outs = fpn(feats)
    assert [tuple(o.shape) for o in outs] == [(1, 64, s, s) for s in (16, 8, 4, 2, 1)]


@pytest.mark.parametrize("softmax", [False, True])
def test_prior_init_gives_initial_probability_pi(softmax):
    K, prior = 20, 0.01
    bb = ResNetBackbone("resnet18", frozen_stages=5)
    fpn = FPN(bb.out_channels, 64)
    head = RetinaNetHead(64, 9, K, depth=2, width=64, prior_prob=prior, softmax=softmax)
    with torch.no_grad():
        cls, box = head(fpn(bb(_photo())))
    assert cls.shape == (1, 9 * (16 * 16 + 8 * 8 + 4 * 4 + 2 * 2 + 1), K + int(softmax)) and box.shape[-1] == 4
    if softmax:
        p = torch.softmax(cls.double(), -1)
        assert p[..., K].mean().item() == pytest.approx(1 - prior, abs=2e-3)
        assert p[..., :K].sum(-1).mean().item() == pytest.approx(prior, abs=2e-3)
    else:
        assert torch.sigmoid(cls.double()).mean().item() == pytest.approx(prior, rel=0.1)
        assert head.cls_logits.bias[0].item() == pytest.approx(-math.log((1 - prior) / prior), rel=1e-6)
    w = head.cls_tower[0].weight
    assert w.std().item() == pytest.approx(0.01, rel=0.05) and head.cls_tower[0].bias.abs().max() == 0


def test_head_group_norm_runs_in_float32_under_cpu_autocast():
    """Under CPU bfloat16 autocast the head's GroupNorm normalises in float32 (as CUDA autocast
    does), equal to a float64 group norm of its bfloat16 input; outside autocast it is
    ``nn.GroupNorm`` itself, and its ``state_dict`` keys are the same."""
    torch.manual_seed(0)
    head = RetinaNetHead(32, num_anchors=1, num_classes=3, depth=1, width=64, norm="gn")
    gn = head.cls_tower[1]
    with torch.no_grad():
        gn.weight.uniform_(0.5, 1.5)
        gn.bias.uniform_(-0.5, 0.5)
    x = (torch.randn(2, 64, 8, 8) * 3 + 1).contiguous(memory_format=torch.channels_last)
    plain = torch.nn.GroupNorm(32, 64)
    plain.load_state_dict(gn.state_dict())
    assert list(gn.state_dict()) == list(plain.state_dict())
    torch.testing.assert_close(gn(x), plain(x), rtol=0, atol=0)
    xb = x.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = gn(xb)
    x64 = xb.double().reshape(2, 32, -1)
    ref = ((x64 - x64.mean(-1, keepdim=True)) / (x64.var(-1, unbiased=False, keepdim=True) + gn.eps).sqrt())
    ref = ref.view(2, 64, 8, 8) * gn.weight.double().view(1, -1, 1, 1) + gn.bias.double().view(1, -1, 1, 1)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-5)
