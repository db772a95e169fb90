"""Learning-rate schedule: linear warm-up followed by step decay at milestones (docs/spec.md §4)."""
from __future__ import annotations

import bisect

import torch
from torch.optim.lr_scheduler import LRScheduler


def warmup_multistep_factor(it: int, warmup_iters: int, warmup_factor: float,
                            milestones: list[int], gamma: float) -> float:
    """Multiplier of the base lr at iteration ``it`` (0-based, the iteration about to run).

    Warm-up rises linearly from ``warmup_factor`` at it=0 to 1 at it=warmup_iters (the
    detectron2/mmdetection convention); the step factor ``gamma ** k`` counts the milestones
    already reached (``it >= m``). Both multiply, so a milestone inside the warm-up still applies.
    """
    factor = gamma ** bisect.bisect_right(sorted(milestones), it)
    if it < warmup_iters:
        alpha = it / warmup_iters
        factor *= warmup_factor * (1.0 - alpha) + alpha
    return factor


class WarmupMultiStepLR(LRScheduler):
    """Per-iteration scheduler: call ``step()`` after every optimizer step.

    ``milestones`` are iteration numbers. Its ``state_dict()`` holds only plain numbers, so a
    checkpoint containing it loads with ``torch.load(weights_only=True)``.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, milestones: list[int], gamma: float = 0.1,
                 warmup_iters: int = 500, warmup_factor: float = 0.001, last_epoch: int = -1):
        self.milestones = [int(m) for m in milestones]
        self.gamma = float(gamma)
        self.warmup_iters = int(warmup_iters)
        self.warmup_factor = float(warmup_factor)
        super().__init__(optimizer, last_epoch)

    def factor(self, it: int) -> float:
        return warmup_multistep_factor(it, self.warmup_iters, self.warmup_factor, self.milestones,
                                       self.gamma)

    def get_lr(self) -> list[float]:
        # Closed form of the iteration count, so resuming never accumulates rounding drift.
        f = self.factor(self.last_epoch)
        return [base * f for base in self.base_lrs]
