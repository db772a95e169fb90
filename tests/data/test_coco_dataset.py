"""CocoDetection on valid COCO and LVIS v1 files: labels, boxes, crowd boxes, pixels, report."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from focaldet.config import DataConfig
from focaldet.data import CocoDetection, SampleKey, build_dataset, build_transforms
from focaldet.errors import DataError


def test_targets_labels_and_pixels(coco_files, caplog):
    with caplog.at_level(logging.INFO, logger="focaldet.data"):
        ds = CocoDetection(coco_files.write(), coco_files.image_root)
    # categories sorted by id: 3 'rocket' -> 0, 7 'cat' -> 1
    assert ds.cat_ids == [3, 7] and ds.class_names == ["rocket", "cat"]
    assert ds.cat_id_to_label == {3: 0, 7: 1} and ds.num_classes == 2
    assert ds.class_image_counts == [2, 1]  # rocket in images 10 and 20; cat (non-crowd) in 10
    assert ds.image_ids == [10, 20, 30] and len(ds) == 3

    image, t = ds[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 48, 64)
    np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), coco_files.arrays[10])
    # xywh -> xyxy by hand: [4, 6, 20, 10] -> [4, 6, 24, 16]; [30.5, 1.25, 12, 30] -> [30.5, 1.25, 42.5, 31.25]
    np.testing.assert_array_equal(t["boxes"].numpy(), np.array([[4, 6, 24, 16], [30.5, 1.25, 42.5, 31.25]], np.float32))
    np.testing.assert_array_equal(t["labels"].numpy(), [1, 0])
    np.testing.assert_array_equal(t["crowd_boxes"].numpy(), [[0, 0, 10, 10]])
    assert t["image_id"] == 10 and t["orig_size"] == (48, 64) and t["size"] == (48, 64) and t["scale"] == 1.0
    assert t["boxes"].dtype == torch.float32 and t["labels"].dtype == torch.int64

    r = ds.report
    assert (r.num_images, r.num_annotations, r.num_boxes, r.num_crowd, r.num_negative_images) == (3, 4, 3, 1, 1)
    assert r.num_clipped == r.num_dropped == 0
    assert r.to_dict()["num_boxes"] == 3
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "focaldet.data"]
    assert len(lines) == 1 and "ann.json: 3 images, 2 categories, 3 boxes + 1 crowd" in lines[0]
    assert all(rec.levelno == logging.INFO for rec in caplog.records)


def test_negative_index_and_out_of_range(coco_files):
    ds = CocoDetection(coco_files.write(), coco_files.image_root)
    assert ds[-1][1]["image_id"] == 30
    with pytest.raises(IndexError):
        ds[3]


def test_transformed_boxes_map_back_with_scale(coco_files):
    cfg = DataConfig(train_sizes=[100], max_size=1000, test_size=72)
    ds = CocoDetection(coco_files.write(), coco_files.image_root, build_transforms(cfg, train=False))
    image, t = ds[0]  # 48 x 64 -> short side 72: scale 1.5 -> 72 x 96
    assert image.shape == (3, 72, 96) and t["size"] == (72, 96) and t["scale"] == pytest.approx(1.5)
    np.testing.assert_allclose((t["boxes"] / t["scale"]).numpy(), [[4, 6, 24, 16], [30.5, 1.25, 42.5, 31.25]],
                               rtol=1e-6)


def test_sample_key_seeds_transforms(coco_files):
    cfg = DataConfig(train_sizes=[40, 50, 60, 70], max_size=1000, flip_prob=0.5)
    ds = CocoDetection(coco_files.write(), coco_files.image_root, build_transforms(cfg, train=True))
    a = [ds[SampleKey(0, 5, e)][1] for e in range(12)]
    b = [ds[SampleKey(0, 5, e)][1] for e in range(12)]
    assert [x["size"] for x in a] == [x["size"] for x in b]
    assert all(torch.equal(x["boxes"], y["boxes"]) for x, y in zip(a, b))
    assert len({x["size"] for x in a}) > 1  # epochs draw different sizes


def test_lvis_v1_file(coco_files):
    coco = coco_files.copy()
    (coco_files.image_root / "val2017").mkdir()
    (coco_files.image_root / "coffee.png").rename(coco_files.image_root / "val2017" / "coffee.png")
    for im in coco["images"]:
        name = im.pop("file_name")
        im["coco_url"] = f"http://images.cocodataset.org/val2017/{name}"
        im["not_exhaustive_category_ids"] = []
        im["neg_category_ids"] = [3] if im["id"] == 30 else []
    coco["images"][0]["not_exhaustive_category_ids"] = [7]
    coco["categories"][0].update(frequency="r", image_count=1, instance_count=1, synset="cat.n.01")
    coco["categories"][1].update(frequency="f", image_count=2, instance_count=2, synset="rocket.n.01")
    ds = CocoDetection(coco_files.write(coco), coco_files.image_root)
    assert ds.is_lvis and ds.report.is_lvis
    assert ds.frequencies == ["f", "r"]  # labels: 0 = id 3 rocket, 1 = id 7 cat
    # coco_url -> <split>/<name> when that exists under the root, else <name>
    assert ds.images[1]["file_name"] == "val2017/coffee.png" and ds.images[0]["file_name"] == "astronaut.png"
    assert ds.images[0]["not_exhaustive_category_ids"] == [7] and ds.images[2]["neg_category_ids"] == [3]
    assert ds.categories[1]["synset"] == "cat.n.01"
    np.testing.assert_array_equal(ds[1][0].permute(1, 2, 0).numpy(), coco_files.arrays[20])

    coco["images"][2]["neg_category_ids"] = [3, 99]
    with pytest.raises(DataError, match=r"images\[2\] \(id 30\): field 'neg_category_ids' has unknown category id 99"):
        CocoDetection(coco_files.write(coco), coco_files.image_root)


def test_build_dataset_from_config(coco_files):
    coco_files.write()
    cfg = DataConfig(root=str(coco_files.root), train_ann="ann.json", train_images="images", train_sizes=[32],
                     max_size=64, flip_prob=0.0)
    ds = build_dataset(cfg, train=True)
    assert ds[0][0].shape == (3, 32, 43)  # 48 x 64 at scale 2/3 -> 32 x 42.67 -> 43
    with pytest.raises(DataError, match="data.val_ann"):
        build_dataset(cfg, train=False)
    coco = coco_files.copy()
    coco["annotations"][0]["bbox"] = [1, 1, 0, 5]
    coco_files.write(coco)
    assert build_dataset(cfg, train=True).report.num_dropped == 1
    cfg.strict = True
    with pytest.raises(DataError, match=r"annotations\[0\] \(id 101\).*strict"):
        build_dataset(cfg, train=True)


def test_generated_benchmark_loads_cleanly(tiny_benchmark, caplog):
    """The embedded benchmark is a valid COCO dataset: strict validation passes, nothing is
    clipped or dropped, no warning is logged, and every image reads at its declared size."""
    with caplog.at_level(logging.INFO, logger="focaldet.data"):
        for ann, images in ((tiny_benchmark.train_ann, tiny_benchmark.train_images),
                            (tiny_benchmark.val_ann, tiny_benchmark.val_images)):
            ds = CocoDetection(ann, images, strict=True)
            assert ds.report.num_clipped == 0 and ds.report.num_dropped == 0 and ds.report.num_boxes > 0
            for i in range(len(ds)):
                image, target = ds[i]
                assert image.shape[1:] == target["orig_size"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
