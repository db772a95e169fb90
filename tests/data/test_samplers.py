"""TrainSampler: determinism per epoch, sharding like DistributedSampler, exact mid-epoch resume;
InferenceSampler: every image exactly once across ranks."""
from __future__ import annotations

import itertools

import pytest
from torch.utils.data import DistributedSampler

from focaldet.data import InferenceSampler, SeededBatchSampler, TrainSampler
from focaldet.data.coco import SampleKey
from focaldet.errors import CheckpointError


def batches(sampler, epoch):
    sampler.set_epoch(epoch)
    return list(sampler)


def test_deterministic_per_epoch_and_a_permutation():
    a, b = TrainSampler(23, 4, seed=7), TrainSampler(23, 4, seed=7)
    for epoch in range(3):
        ea, eb = batches(a, epoch), batches(b, epoch)
        assert ea == eb
        assert sorted(itertools.chain.from_iterable(ea)) == list(range(23))
        assert [len(x) for x in ea] == [4] * 5 + [3] and len(a) == 6
    assert batches(a, 0) != batches(a, 1)
    assert batches(a, 0) != batches(TrainSampler(23, 4, seed=8), 0)


@pytest.mark.parametrize("n,world", [(10, 3), (7, 4), (3, 5), (16, 2)])
def test_sharding_matches_distributed_sampler(n, world):
    epoch = 2
    perm = TrainSampler(n, n, seed=1).epoch_indices(epoch)  # the epoch's permutation (one rank, no padding)
    assert sorted(perm.tolist()) == list(range(n))
    per_rank = []
    for rank in range(world):
        s = TrainSampler(n, 3, seed=1, rank=rank, world_size=world)
        flat = list(itertools.chain.from_iterable(batches(s, epoch)))
        # reference: DistributedSampler's positions (padding by repetition, strided), applied to the permutation
        ref_positions = list(DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=False))
        assert flat == [int(perm[p]) for p in ref_positions]
        per_rank.append(len(s))
    assert len(set(per_rank)) == 1  # every rank has the same number of batches
    covered = set()
    for rank in range(world):
        s = TrainSampler(n, 3, seed=1, rank=rank, world_size=world)
        covered |= set(itertools.chain.from_iterable(batches(s, epoch)))
    assert covered == set(range(n))


def test_drop_last():
    s = TrainSampler(10, 4, seed=0, drop_last=True)
    out = batches(s, 0)
    assert len(s) == 2 and [len(b) for b in out] == [4, 4]
    assert batches(TrainSampler(10, 4, seed=0), 0)[:2] == out


def test_resume_mid_epoch_continues_exactly():
    ref = TrainSampler(29, 3, seed=5, rank=1, world_size=2)
    epoch3, epoch4 = batches(ref, 3), batches(ref, 4)

    run = TrainSampler(29, 3, seed=5, rank=1, world_size=2)
    run.set_epoch(3)
    it = iter(run)
    seen = [next(it) for _ in range(4)]
    state = run.state_dict()  # no prefetching here, so "handed out" == "consumed"
    assert state["epoch"] == 3 and state["consumed"] == 4 and seen == epoch3[:4]

    resumed = TrainSampler(29, 3, seed=5, rank=1, world_size=2)
    resumed.load_state_dict(state)
    resumed.set_epoch(3)  # a training loop calls this at the top of the epoch; it must not restart it
    assert list(resumed) == epoch3[4:]
    assert batches(resumed, 4) == epoch4
    assert batches(resumed, 3) == epoch3  # a later pass over epoch 3 is whole again


def test_state_dict_with_explicit_consumed_count():
    s = TrainSampler(20, 2, seed=0)
    s.set_epoch(1)
    list(itertools.islice(iter(s), 6))  # a prefetching loader ran ahead ...
    state = s.state_dict(consumed=2)  # ... but the loop trained on 2 batches
    r = TrainSampler(20, 2, seed=0)
    r.load_state_dict(state)
    assert list(r) == batches(TrainSampler(20, 2, seed=0), 1)[2:]
    with pytest.raises(ValueError, match="consumed"):
        s.state_dict(consumed=11)


def test_resume_with_a_different_setup_is_refused_mid_epoch():
    state = TrainSampler(20, 2, seed=0, world_size=2).state_dict(consumed=3)
    with pytest.raises(CheckpointError, match="'world_size' is 2 in the checkpoint but 1"):
        TrainSampler(20, 2, seed=0).load_state_dict(state)
    state["consumed"] = 0  # at an epoch boundary any setup can continue
    s = TrainSampler(20, 2, seed=0)
    s.load_state_dict(state)
    assert s.epoch == 0 and len(list(s)) == 10


def test_invalid_arguments():
    for kw in (dict(n=0, batch_size=1), dict(n=5, batch_size=0), dict(n=5, batch_size=1, rank=2, world_size=2)):
        with pytest.raises(ValueError):
            TrainSampler(seed=0, **kw)


def test_seeded_batch_sampler_tags_seed_and_epoch():
    s = TrainSampler(5, 2, seed=3)
    wrapped = SeededBatchSampler(s)
    wrapped.set_epoch(6)
    out = list(wrapped)
    assert out == [[SampleKey(i, 3, 6) for i in b] for b in batches(TrainSampler(5, 2, seed=3), 6)]
    assert len(wrapped) == 3 and wrapped.state_dict()["epoch"] == 6


@pytest.mark.parametrize("n,world,bs", [(10, 3, 2), (5, 8, 4), (9, 1, 4)])
def test_inference_sampler_every_image_once(n, world, bs):
    got = []
    for rank in range(world):
        s = InferenceSampler(n, bs, rank, world)
        flat = list(itertools.chain.from_iterable(s))
        assert flat == sorted(flat) and all(len(b) <= bs for b in s) and len(list(s)) == len(s)
        got += flat
    assert sorted(got) == list(range(n))
