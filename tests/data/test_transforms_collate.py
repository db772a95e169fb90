"""Resize / flip box arithmetic against hand computation, pixels against Pillow, padding collate."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from focaldet.config import DataConfig
from focaldet.data import Batch, RandomHorizontalFlip, ResizeShortSide, build_transforms, collate


def _target(boxes, crowd=None, size=None):
    t = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
         "labels": torch.zeros(len(boxes), dtype=torch.int64),
         "crowd_boxes": torch.tensor(crowd or [], dtype=torch.float32).reshape(-1, 4),
         "image_id": 1, "scale": 1.0}
    if size:
        t["orig_size"] = t["size"] = size
    return t


RNG = np.random.default_rng(0)


@pytest.mark.parametrize("hw,short,max_size,new_hw,scale", [
    ((60, 80), 30, 1000, (30, 40), 0.5),  # short side rules
    ((50, 200), 100, 300, (75, 300), 1.5),  # long side capped: 200 * 2 = 400 > 300
    ((33, 47), 20, 1000, (20, 28), 20 / 33),  # 47 * 20 / 33 = 28.48 -> 28
    ((47, 33), 20, 1000, (28, 20), 20 / 33),
    ((10, 21), 20, 1000, (20, 42), 2.0),  # upscaling
])
def test_resize_sizes_and_boxes(hw, short, max_size, new_hw, scale):
    h, w = hw
    image = torch.zeros((3, h, w), dtype=torch.uint8)
    boxes = [[1, 2, 5, 9], [0, 0, w, h]]
    out, t = ResizeShortSide([short], max_size)(image, _target(boxes, crowd=[[2, 2, 4, 4]], size=hw), RNG)
    assert out.shape == (3, *new_hw) and t["size"] == new_hw
    assert t["scale"] == pytest.approx(scale, rel=1e-12)
    expected = np.array(boxes, np.float64) * scale
    expected[:, 0::2] = np.minimum(expected[:, 0::2], new_hw[1])  # clamped to the rounded image
    expected[:, 1::2] = np.minimum(expected[:, 1::2], new_hw[0])
    np.testing.assert_allclose(t["boxes"].numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(t["crowd_boxes"].numpy(), [[2 * scale, 2 * scale, 4 * scale, 4 * scale]], rtol=1e-6)
    assert t["orig_size"] == hw  # unchanged


def test_resize_pixels_match_pillow(coco_files):
    arr = coco_files.photo(90, 120)
    out, _ = ResizeShortSide([60], 1000)(torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous(), _target([]), RNG)
    ref = np.asarray(Image.fromarray(arr).resize((80, 60), Image.BILINEAR)).astype(int)  # antialiased bilinear
    got = out.permute(1, 2, 0).numpy().astype(int)
    assert np.abs(got - ref).max() <= 1


def test_scale_composes():
    image = torch.zeros((3, 40, 80), dtype=torch.uint8)
    t = _target([[8, 8, 16, 16]])
    t["scale"] = 0.5  # an earlier resize
    _, t = ResizeShortSide([20], 1000)(image, t, RNG)
    assert t["scale"] == pytest.approx(0.25)


def test_flip_boxes_and_pixels():
    image = torch.arange(2 * 3 * 5, dtype=torch.uint8).reshape(1, 2, 15).expand(3, 2, 15).contiguous()
    t = _target([[5, 1, 15, 2], [0, 0, 3, 1]], crowd=[[1, 0, 2, 2]], size=(2, 15))
    out, ft = RandomHorizontalFlip(1.0)(image, t, RNG)
    # x1' = W - x2, x2' = W - x1 with W = 15
    np.testing.assert_array_equal(ft["boxes"].numpy(), [[0, 1, 10, 2], [12, 0, 15, 1]])
    np.testing.assert_array_equal(ft["crowd_boxes"].numpy(), [[13, 0, 14, 2]])
    np.testing.assert_array_equal(out.numpy(), image.numpy()[:, :, ::-1])
    np.testing.assert_array_equal(t["boxes"].numpy(), [[5, 1, 15, 2], [0, 0, 3, 1]])  # input untouched


def test_flip_probability():
    image = torch.zeros((3, 4, 6), dtype=torch.uint8)
    t = _target([[0, 0, 1, 1]])
    never = [RandomHorizontalFlip(0.0)(image, t, np.random.default_rng(s))[1]["boxes"][0, 0].item() for s in range(50)]
    assert never == [0.0] * 50
    flips = [RandomHorizontalFlip(0.5)(image, t, np.random.default_rng(s))[1]["boxes"][0, 0].item() == 5.0
             for s in range(400)]
    assert 140 < sum(flips) < 260


def test_multiscale_training_sizes():
    cfg = DataConfig(train_sizes=[20, 30, 40], max_size=1000, flip_prob=0.5)
    tf = build_transforms(cfg, train=True)
    image = torch.zeros((3, 50, 60), dtype=torch.uint8)
    shorts = {tf(image, _target([]), np.random.default_rng(s))[0].shape[1] for s in range(60)}
    assert shorts == {20, 30, 40}
    ev = build_transforms(DataConfig(test_size=25, max_size=1000), train=False)
    assert ev(image, _target([]), np.random.default_rng(0))[0].shape == (3, 25, 30)


# --------------------------------------------------------------------------------------------
# collate
# --------------------------------------------------------------------------------------------
def _samples():
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 256, (3, 50, 70), dtype=torch.uint8, generator=g)
    b = torch.randint(0, 256, (3, 130, 20), dtype=torch.uint8, generator=g)
    ta = _target([[1, 1, 5, 5]], size=(100, 140))
    ta.update(image_id=11, scale=0.5, size=(50, 70))
    tb = _target([], size=(130, 20))
    tb.update(image_id=12)
    return [(a, ta), (b, tb)]


@pytest.mark.parametrize("div,hw", [(128, (256, 128)), (32, (160, 96)), (1, (130, 70))])
def test_collate_pads_to_multiple(div, hw):
    samples = _samples()
    batch = collate(samples, size_divisibility=div)
    assert isinstance(batch, Batch) and len(batch) == 2
    assert batch.images.shape == (2, 3, *hw) and batch.images.dtype == torch.float32
    for i, (img, _) in enumerate(samples):
        h, w = img.shape[1:]
        ref = img.numpy().astype(np.float64) / 255.0
        np.testing.assert_allclose(batch.images[i, :, :h, :w].numpy(), ref, rtol=0, atol=1e-7)
        assert batch.images[i, :, h:, :].abs().sum() == 0 and batch.images[i, :, :, w:].abs().sum() == 0
    assert batch.image_sizes == [(50, 70), (130, 20)]
    assert batch.image_ids == [11, 12] and batch.scales == [0.5, 1.0]
    assert batch.orig_sizes == [(100, 140), (130, 20)]
    assert batch.targets[0] is samples[0][1]


def test_collate_default_is_32_and_empty_is_an_error():
    # the largest image is 130 x 70: padded to multiples of 32 (C5's stride), as torchvision does
    assert collate(_samples()).images.shape[-2:] == (160, 96)
    with pytest.raises(ValueError, match="empty batch"):
        collate([])


def test_batch_to_device():
    batch = collate(_samples())
    moved = batch.to("meta")
    assert moved.images.device.type == "meta" and moved.targets[0]["boxes"].device.type == "meta"
    assert moved.image_ids == batch.image_ids and batch.images.device.type == "cpu"
    if torch.cuda.is_available():
        cuda = batch.pin_memory().to("cuda", non_blocking=True)
        torch.testing.assert_close(cuda.images.cpu(), batch.images)
        assert cuda.targets[0]["labels"].device.type == "cuda"
