"""Batch samplers: deterministic, sharded across ranks, resumable mid-epoch."""
from __future__ import annotations

from typing import Iterator, Optional

import numpy as np

from focaldet.data.coco import SampleKey
from focaldet.errors import CheckpointError


class TrainSampler:
    """Yields lists of dataset indices, one list per batch of this rank.

    Each epoch is a permutation of ``range(n)`` drawn from ``(seed, epoch)``; as in
    ``DistributedSampler`` it is padded by repeating its first indices to a multiple of
    ``world_size`` and rank ``r`` takes positions ``r, r + world_size, ...``, so every rank has
    the same number of batches. ``drop_last`` drops this rank's last, incomplete batch.

    ``repeat_factors`` (``(n,)``, each ≥ 1; :mod:`focaldet.data.repeat_factor`): each epoch
    instead takes image ``i`` ``floor(r_i)`` times plus once more with probability ``frac(r_i)``,
    shuffled; the epoch has the fixed size ``epoch_size = round(Σ r_i)`` (the draw is cut or
    repeated from its start to that size), so iteration counts, schedules in epochs and resuming
    work as without it.

    Resuming: ``state_dict(consumed)`` records the epoch and how many batches of it were trained
    on; after ``load_state_dict`` the next iteration of that epoch starts at the following batch
    and yields exactly what the uninterrupted run would have. ``len()`` is always the full epoch.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 drop_last: bool = False, repeat_factors: Optional[np.ndarray] = None):
        if n < 1:
            raise ValueError(f"TrainSampler: n must be >= 1, got {n}")
        if batch_size < 1:
            raise ValueError(f"TrainSampler: batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"TrainSampler: need 0 <= rank < world_size, got rank {rank}, world_size {world_size}")
        self.n, self.batch_size, self.seed = int(n), int(batch_size), int(seed)
        self.rank, self.world_size, self.drop_last = int(rank), int(world_size), bool(drop_last)
        self.repeat_factors = None
        self.epoch_size = self.n
        if repeat_factors is not None:
            rf = np.asarray(repeat_factors, dtype=np.float64)
            if rf.shape != (self.n,) or not (np.isfinite(rf).all() and (rf >= 1.0).all()):
                raise ValueError(f"TrainSampler: repeat_factors must be {self.n} finite numbers >= 1")
            self.repeat_factors = rf
            self.epoch_size = max(1, int(round(rf.sum())))
        self.num_samples = -(-self.epoch_size // self.world_size)  # per rank, after padding
        self.epoch = 0
        self._start = 0  # batches of `epoch` to skip on the next __iter__ (set by load_state_dict)
        self._yielded = 0  # batches of `epoch` handed out so far, skipped ones included

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return -(-self.num_samples // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        if int(epoch) != self.epoch:
            self._start = 0
        self.epoch = int(epoch)

    def epoch_indices(self, epoch: Optional[int] = None) -> np.ndarray:
        """This rank's indices for ``epoch`` (default: the current one), ``(num_samples,)`` int64."""
        epoch = self.epoch if epoch is None else int(epoch)
        rng = np.random.default_rng([self.seed % 2**64, epoch % 2**64])
        if self.repeat_factors is None:
            perm = rng.permutation(self.n)
        else:
            whole = np.floor(self.repeat_factors)
            repeats = whole.astype(np.int64) + (rng.random(self.n) < self.repeat_factors - whole)
            perm = rng.permutation(np.repeat(np.arange(self.n), repeats))
            # the draw's size varies around Σ r from epoch to epoch; the epoch's does not
            perm = np.resize(perm, self.epoch_size)
        total = self.num_samples * self.world_size
        if total > len(perm):
            perm = np.resize(perm, total)  # repeats from the start
        return perm[self.rank:total:self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        idx = self.epoch_indices()
        start, self._start = self._start, 0
        for b in range(start, len(self)):
            self._yielded = b + 1
            yield idx[b * self.batch_size:(b + 1) * self.batch_size].tolist()

    def state_dict(self, consumed: Optional[int] = None) -> dict:
        """``consumed``: batches of the current epoch already trained on. When None, the number this
        sampler has handed out, which is right only without DataLoader prefetching
        (``num_workers=0``); a training loop should pass its own count."""
        consumed = self._yielded if consumed is None else int(consumed)
        if not 0 <= consumed <= len(self):
            raise ValueError(f"TrainSampler.state_dict: consumed={consumed} outside [0, {len(self)}]")
        return {"epoch": self.epoch, "consumed": consumed, "seed": self.seed, "n": self.n,
                "batch_size": self.batch_size, "world_size": self.world_size, "drop_last": self.drop_last,
                "epoch_size": self.epoch_size}

    def load_state_dict(self, state: dict) -> None:
        consumed = int(state.get("consumed", 0))
        if "epoch_size" not in state and "n" in state:
            state = {**state, "epoch_size": state["n"]}  # saved before repeat factors: uniform epochs
        if consumed:
            for key in ("seed", "n", "batch_size", "world_size", "drop_last", "epoch_size"):
                if key in state and state[key] != getattr(self, key):
                    raise CheckpointError(
                        f"sampler state: '{key}' is {state[key]!r} in the checkpoint but {getattr(self, key)!r} "
                        f"in this run; cannot continue the interrupted epoch exactly")
        self.epoch = int(state.get("epoch", 0))
        self._start = consumed
        self._yielded = consumed


class InferenceSampler:
    """Batches for evaluation: rank ``r`` takes images ``r, r + world_size, ...`` in order, so every
    image is seen exactly once over all ranks (no padding duplicates). Ranks may differ by one
    image and hence by one batch: gather results after the loop, not inside it."""

    def __init__(self, n: int, batch_size: int, rank: int = 0, world_size: int = 1):
        if batch_size < 1:
            raise ValueError(f"InferenceSampler: batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"InferenceSampler: need 0 <= rank < world_size, got {rank}, {world_size}")
        self.indices = list(range(rank, int(n), world_size))
        self.batch_size = int(batch_size)

    def __len__(self) -> int:
        return -(-len(self.indices) // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        for b in range(0, len(self.indices), self.batch_size):
            yield self.indices[b:b + self.batch_size]


class SeededBatchSampler:
    """Wraps a :class:`TrainSampler` for a ``DataLoader``: each index ``i`` becomes
    ``SampleKey(i, seed, epoch)`` so the dataset seeds the sample's random transforms from
    (seed, epoch, index) whatever worker loads it. ``set_epoch``, ``state_dict``,
    ``load_state_dict`` and ``len`` go to the wrapped sampler (``.sampler``)."""

    def __init__(self, sampler: TrainSampler):
        self.sampler = sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[list[SampleKey]]:
        s = self.sampler
        for batch in s:
            yield [SampleKey(i, s.seed, s.epoch) for i in batch]

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def state_dict(self, consumed: Optional[int] = None) -> dict:
        return self.sampler.state_dict(consumed)

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)
