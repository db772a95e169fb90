"""Two gloo processes, each with half of every batch, end with identical EFL statistics equal to
one process on the whole batch."""
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from focaldet.losses import build_loss

K = 4
ITERS = 3


def make_batch(it):
    g = torch.Generator().manual_seed(100 + it)
    x = torch.randn(64, K, generator=g) * 2 - 1.5
    labels = torch.full((64,), K)
    labels[torch.randperm(64, generator=g)[:10]] = torch.tensor([0, 0, 0, 0, 1, 1, 1, 2, 0, 1])
    labels[::9] = -1
    return x, labels


def run_iterations(loss, rank=0, world=1):
    for it in range(ITERS):
        x, labels = make_batch(it)
        # the model's normalizer: positives summed over ranks / world size
        normalizer = max(float(((labels >= 0) & (labels < K)).sum()), 1.0) / world
        rows = slice(rank * 64 // world, (rank + 1) * 64 // world)
        loss(x[rows].clone().requires_grad_(), labels[rows], normalizer=normalizer).backward()


def _worker(rank, world, init_file, out_dir):
    os.environ["FOCALDET_COMPILE"] = "0"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        loss = build_loss("equalized_focal", num_classes=K)
        run_iterations(loss, rank, world)
        torch.save({k: v.clone() for k, v in loss.state_dict().items()} | {"gamma": loss.gamma()},
                   os.path.join(out_dir, f"rank{rank}.pt"))
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.dist
@pytest.mark.timeout(120)
def test_two_rank_statistics_identical_and_equal_to_single_process(tmp_path, monkeypatch):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for key in r0:
        assert torch.equal(r0[key], r1[key]), key
    single = build_loss("equalized_focal", num_classes=K)
    run_iterations(single)
    assert r0["grad_stats.num_updates"].item() == ITERS
    torch.testing.assert_close(r0["grad_stats.pos_grad"], single.grad_stats.pos_grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(r0["grad_stats.neg_grad"], single.grad_stats.neg_grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(r0["gamma"], single.gamma(), rtol=1e-5, atol=1e-5)
    assert not torch.equal(single.gamma(), torch.full((K,), 2.0))
