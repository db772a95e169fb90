"""Repeat-factor sampling: the LVIS paper's factors, stochastic rounding per epoch, a fixed epoch
size, sharding and exact mid-epoch resume, and the factors the training loader computes from a
real COCO file (checked against a count made from the JSON itself)."""
from __future__ import annotations

import io
import itertools
import json
import math
from collections import Counter

import numpy as np
import pytest
from torch.utils.data import DistributedSampler

from focaldet.config import DataConfig, load_config
from focaldet.data import CocoDetection, TrainSampler, build_train_loader
from focaldet.data.repeat_factor import repeat_factors
from focaldet.errors import CheckpointError
from tests.tiny_config import tiny_config_writer


def test_factors_follow_the_lvis_definition():
    # 10 images; class 0 in 9 of them, classes 1 and 2 in one each, class 3 in five, image 9 empty
    images = [[0, 3], [0, 3], [0, 3, 3], [0, 1, 3], [0, 3], [0, 2, 2], [0], [0], [0], []]
    t = 0.2
    # max(1, sqrt(t / f)) with f = 0.9, 0.1, 0.1, 0.5
    r0, r1, r2, r3 = 1.0, math.sqrt(0.2 / 0.1), math.sqrt(0.2 / 0.1), 1.0
    expected = [r3, r3, r3, max(r0, r1, r3), r3, max(r0, r2), r0, r0, r0, 1.0]
    got = repeat_factors([np.array(c) for c in images], num_classes=4, threshold=t)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-15)
    # LVIS's own threshold: nothing here is rarer than a fraction 0.001 of the images
    assert (repeat_factors([np.array(c) for c in images], 4, 0.001) == 1.0).all()
    with pytest.raises(ValueError, match="threshold"):
        repeat_factors([np.array([0])], 1, 0.0)
    with pytest.raises(ValueError, match="labels must be in 0..3"):
        repeat_factors([np.array([4])], 4, 0.1)


def test_each_epoch_rounds_the_factors_stochastically_at_a_fixed_size():
    factors = np.array([1.0, 1.5, 2.0, 3.25, 1.25])  # Σ = 9
    s = TrainSampler(5, 2, seed=4, repeat_factors=factors)
    assert s.epoch_size == 9 and len(s) == 5
    counts = np.zeros(5)
    epochs = 4000
    for epoch in range(epochs):
        idx = s.epoch_indices(epoch)
        assert len(idx) == 9
        counts += np.bincount(idx, minlength=5)
    # E[count] = r_i (up to the few draws cut or repeated to reach the fixed size); the standard
    # error of each mean is below 0.01 here
    np.testing.assert_allclose(counts / epochs, factors, atol=0.05)
    assert not np.array_equal(s.epoch_indices(0), s.epoch_indices(1))
    assert np.array_equal(s.epoch_indices(3), TrainSampler(5, 2, seed=4, repeat_factors=factors).epoch_indices(3))
    with pytest.raises(ValueError, match="repeat_factors"):
        TrainSampler(5, 2, seed=0, repeat_factors=np.array([1.0, 0.5, 1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="repeat_factors"):
        TrainSampler(5, 2, seed=0, repeat_factors=np.ones(4))


@pytest.mark.parametrize("world", [2, 3, 4])
def test_ranks_share_one_epoch_and_resume_mid_epoch_exactly(world):
    factors = np.array([1.0, 2.6, 1.0, 4.4, 1.0, 1.0, 1.3, 1.7])  # Σ = 14
    one = TrainSampler(8, 14, seed=2, repeat_factors=factors).epoch_indices(5)  # one rank: no padding
    assert len(one) == 14
    for rank in range(world):
        s = TrainSampler(8, 2, seed=2, rank=rank, world_size=world, repeat_factors=factors)
        s.set_epoch(5)
        flat = list(itertools.chain.from_iterable(s))
        # reference: DistributedSampler's positions (padding by repetition, strided) over the epoch
        positions = list(DistributedSampler(range(14), num_replicas=world, rank=rank, shuffle=False))
        assert flat == [int(one[p]) for p in positions]
    # resume after two batches of epoch 5 on the last rank
    run = TrainSampler(8, 2, seed=2, rank=world - 1, world_size=world, repeat_factors=factors)
    run.set_epoch(5)
    full = list(run)
    state = run.state_dict(consumed=2)
    resumed = TrainSampler(8, 2, seed=2, rank=world - 1, world_size=world, repeat_factors=factors)
    resumed.load_state_dict(state)
    resumed.set_epoch(5)
    assert list(resumed) == full[2:]
    # another sampling (another epoch size) cannot continue the interrupted epoch
    with pytest.raises(CheckpointError, match="'epoch_size' is 14 in the checkpoint but 8"):
        TrainSampler(8, 2, seed=2, rank=world - 1, world_size=world).load_state_dict(state)
    # a state saved before repeat factors existed (no epoch_size) was a uniform epoch of n images
    old = {k: v for k, v in TrainSampler(8, 2, seed=2, rank=world - 1, world_size=world).state_dict(1).items()
           if k != "epoch_size"}
    with pytest.raises(CheckpointError, match="'epoch_size' is 8 in the checkpoint but 14"):
        TrainSampler(8, 2, seed=2, rank=world - 1, world_size=world, repeat_factors=factors).load_state_dict(old)
    TrainSampler(8, 2, seed=2, rank=world - 1, world_size=world).load_state_dict(old)  # uniform continues


def test_the_loader_over_samples_the_rare_classes_of_a_real_coco_file(tiny_benchmark):
    ann = json.loads(tiny_benchmark.train_ann.read_text())
    # reference from the JSON itself: images per category, the LVIS factor, max over each image
    cats_of_image = {im["id"]: set() for im in ann["images"]}
    for a in ann["annotations"]:
        if not a.get("iscrowd", 0):
            cats_of_image[a["image_id"]].add(a["category_id"])
    per_cat = Counter(c for cats in cats_of_image.values() for c in cats)
    n = len(ann["images"])
    t = 0.5
    cat_factor = {c: max(1.0, math.sqrt(t / (k / n))) for c, k in per_cat.items()}
    dataset = CocoDetection(tiny_benchmark.train_ann, tiny_benchmark.train_images)
    expected = [max((cat_factor[c] for c in cats_of_image[i]), default=1.0) for i in dataset.image_ids]
    assert max(expected) > 1.5  # the tiny benchmark has a tail for this threshold

    cfg = DataConfig(batch_size=3, num_workers=0, sampler="repeat_factor", repeat_threshold=t)
    sampler = build_train_loader(cfg, dataset, seed=0).batch_sampler.sampler
    np.testing.assert_allclose(sampler.repeat_factors, expected, rtol=1e-12)
    assert sampler.epoch_size == round(sum(expected))
    uniform = build_train_loader(DataConfig(batch_size=3, num_workers=0), dataset, seed=0).batch_sampler.sampler
    assert uniform.repeat_factors is None and uniform.epoch_size == n


def test_training_logs_the_sampling_and_counts_epochs_in_its_samples(tiny_benchmark, tmp_path, monkeypatch):
    from focaldet.engine import train

    monkeypatch.setenv("FOCALDET_COMPILE", "0")
    write = tiny_config_writer(tiny_benchmark, tmp_path)
    cfg = load_config(write(train={"max_iters": 1}, data={"sampler": "repeat_factor", "repeat_threshold": 0.5}))
    out = io.StringIO()
    train(cfg, stream=out, use_tqdm=False)
    text = out.getvalue()
    line = next(ln for ln in text.splitlines() if ln.startswith("repeat-factor sampling"))
    epoch_size = int(line.split(": ")[1].split()[0])
    n = len(json.loads(tiny_benchmark.train_ann.read_text())["images"])
    assert epoch_size > n and f"from {n} images" in line
    assert f"{-(-epoch_size // 4)}/epoch" in text  # batch 4
