"""Loaders: the same batches (pixels, boxes, ids) with 0 or 2 worker processes, exact resume,
and evaluation covering every image once across ranks."""
from __future__ import annotations

import itertools

import pytest
import torch

from focaldet.config import DataConfig
from focaldet.data import CocoDetection, build_train_loader, build_transforms, build_val_loader
from focaldet.errors import DataError


@pytest.fixture
def dataset_and_cfg(coco_files):
    coco = coco_files.copy()
    for k in range(3):  # six images in all
        im = dict(coco["images"][k], id=100 + k)
        coco["images"].append(im)
        coco["annotations"].append({"id": 500 + k, "image_id": 100 + k, "category_id": 7, "bbox": [2, 3, 11, 9]})
    cfg = DataConfig(train_sizes=[24, 32, 40], max_size=64, test_size=32, flip_prob=0.5, batch_size=2,
                     num_workers=0, size_divisibility=16)
    ds = CocoDetection(coco_files.write(coco), coco_files.image_root, build_transforms(cfg, train=True))
    return ds, cfg


def _epochs(loader, epochs):
    out = []
    for e in epochs:
        loader.batch_sampler.set_epoch(e)
        out.append([(b.image_ids, b.images, [t["boxes"] for t in b.targets], b.image_sizes) for b in loader])
    return out


def _same(a, b):
    assert len(a) == len(b)
    for (ids_a, im_a, bx_a, sz_a), (ids_b, im_b, bx_b, sz_b) in zip(a, b):
        assert ids_a == ids_b and sz_a == sz_b
        assert torch.equal(im_a, im_b)
        assert all(torch.equal(x, y) for x, y in zip(bx_a, bx_b))


def test_same_batches_with_and_without_workers(dataset_and_cfg):
    ds, cfg = dataset_and_cfg
    single = _epochs(build_train_loader(cfg, ds, seed=3), [0, 1])
    cfg.num_workers = 2
    multi = _epochs(build_train_loader(cfg, ds, seed=3, pin_memory=False), [0, 1])
    for e in range(2):
        _same(single[e], multi[e])
    assert len(single[0]) == 3 and single[0][0][1].shape[-1] % 16 == 0
    # a new epoch reshuffles and redraws the augmentation
    assert [b[0] for b in single[0]] != [b[0] for b in single[1]] or \
        any(not torch.equal(x[1], y[1]) for x, y in zip(single[0], single[1]))


def test_loader_resume_mid_epoch(dataset_and_cfg):
    ds, cfg = dataset_and_cfg
    full = _epochs(build_train_loader(cfg, ds, seed=9), [4])[0]
    loader = build_train_loader(cfg, ds, seed=9)
    loader.batch_sampler.set_epoch(4)
    consumed = list(itertools.islice(iter(loader), 1))
    state = loader.batch_sampler.state_dict(consumed=len(consumed))
    resumed = build_train_loader(cfg, ds, seed=9)
    resumed.batch_sampler.load_state_dict(state)
    rest = _epochs(resumed, [4])[0]
    _same(full[1:], rest)


def test_val_loader_every_image_once_across_ranks(dataset_and_cfg, coco_files):
    _, cfg = dataset_and_cfg
    ds = CocoDetection(coco_files.write(), coco_files.image_root, build_transforms(cfg, train=False))
    seen = []
    for rank in range(2):
        for batch in build_val_loader(cfg, ds, rank=rank, world_size=2):
            seen += batch.image_ids
            assert all(min(h, w) == 32 or max(h, w) == 64 for h, w in batch.image_sizes)
    assert sorted(seen) == sorted(ds.image_ids)


@pytest.mark.parametrize("workers", [0, 2])
def test_bad_image_error_is_one_line_with_workers(coco_files, workers):
    (coco_files.image_root / "coffee.png").write_bytes(b"")
    cfg = DataConfig(test_size=32, max_size=64, batch_size=3, num_workers=workers)
    ds = CocoDetection(coco_files.write(), coco_files.image_root, build_transforms(cfg, train=False))
    with pytest.raises(DataError) as e:
        list(build_val_loader(cfg, ds, pin_memory=False))
    path = coco_files.image_root / "coffee.png"
    assert str(e.value) == f"{path}: empty image file (0 bytes)"  # no worker traceback prepended
