"""Anchors against hand-computed values (docs/spec.md §4) and torchvision's AnchorGenerator."""
import math

import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList

from focaldet.model.anchors import AnchorGenerator, default_anchor_sizes, torchvision_anchor_sizes

STRIDES = [8, 16, 32, 64, 128]


def test_counts_sizes_ratios_and_centres_per_level():
    gen = AnchorGenerator(default_anchor_sizes())
    grids = [(16, 24), (8, 12), (4, 6), (2, 3), (1, 2)]  # a 128 x 192 input
    anchors = gen(grids, device=torch.device("cpu"))
    assert gen.num_anchors == 9
    for lvl, (a, (h, w), stride) in enumerate(zip(anchors, grids, STRIDES)):
        assert a.shape == (h * w * 9, 4) and a.dtype == torch.float32
        a = a.double().view(h, w, 9, 4)
        # hand-computed: base 32·2^(l−3), scales 2^0, 2^(1/3), 2^(2/3), ratio-major order
        base = 32 * 2 ** lvl
        expected_wh = []
        for ratio in (0.5, 1.0, 2.0):
            for scale in (1.0, 2 ** (1 / 3), 2 ** (2 / 3)):
                size = base * scale
                expected_wh.append((size / math.sqrt(ratio), size * math.sqrt(ratio)))
        wh = torch.stack([a[..., 2] - a[..., 0], a[..., 3] - a[..., 1]], -1)
        assert torch.allclose(wh, torch.tensor(expected_wh, dtype=torch.float64).expand_as(wh), atol=1e-4)
        cx, cy = (a[..., 0] + a[..., 2]) / 2, (a[..., 1] + a[..., 3]) / 2
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        assert torch.allclose(cx, (xs * stride).double()[..., None].expand_as(cx), atol=1e-4)
        assert torch.allclose(cy, (ys * stride).double()[..., None].expand_as(cy), atol=1e-4)
    # not truncated: the 2^(1/3) anchor of P3 has area (32·2^(1/3))², not 40²
    a = anchors[0][1].double()
    assert abs((a[2] - a[0]) * (a[3] - a[1]) - (32 * 2 ** (1 / 3)) ** 2) < 1e-2


def test_cached_per_grid_device_and_dtype():
    gen = AnchorGenerator(default_anchor_sizes())
    a1 = gen.grid_anchors(0, 4, 4, torch.device("cpu"), torch.float32)
    assert gen.grid_anchors(0, 4, 4, torch.device("cpu"), torch.float32) is a1
    assert gen.grid_anchors(0, 4, 5, torch.device("cpu"), torch.float32) is not a1
    assert gen.grid_anchors(0, 4, 4, torch.device("cpu"), torch.float64).dtype == torch.float64


def test_torchvision_v1_anchors_equal_torchvision():
    sizes = tuple((x, int(x * 2 ** (1.0 / 3)), int(x * 2 ** (2.0 / 3))) for x in [32, 64, 128, 256, 512])
    ref_gen = TVAnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * 5)
    grids = [(32, 16), (16, 8), (8, 4), (4, 2), (2, 1)]
    feats = [torch.zeros(1, 1, h, w) for h, w in grids]
    ref = ref_gen(ImageList(torch.zeros(1, 3, 256, 128), [(256, 128)]), feats)[0]
    ours = torch.cat(AnchorGenerator(torchvision_anchor_sizes(), round_corners=True)(grids, torch.device("cpu")))
    assert torch.equal(ours, ref)
