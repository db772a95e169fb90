import pytest
import torch

from focaldet.engine.lr_schedule import WarmupMultiStepLR


def reference_lr(it, base, warmup, factor, milestones, gamma):
    """docs/spec.md §4: linear warm-up from factor·base over `warmup` iterations, ×gamma at each milestone."""
    lr = base
    for m in milestones:
        if it >= m:
            lr *= gamma
    if it < warmup:
        lr *= factor + (1.0 - factor) * it / warmup
    return lr


@pytest.mark.parametrize("warmup,milestones", [(500, [800, 1100]), (0, [3, 7]), (10, [5, 20])])
def test_schedule_matches_formula_and_survives_state_dict(warmup, milestones):
    base = 0.02
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=base, momentum=0.9)
    sched = WarmupMultiStepLR(opt, milestones, 0.1, warmup, 0.001)
    seen = []
    for it in range(1200):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
        if it == 600:  # a resumed scheduler continues the same curve
            state = sched.state_dict()
            opt2 = torch.optim.SGD([p], lr=base, momentum=0.9)
            sched = WarmupMultiStepLR(opt2, milestones, 0.1, warmup, 0.001)
            sched.load_state_dict(state)
            opt2.param_groups[0]["lr"] = sched.get_last_lr()[0]
            opt = opt2
    for it in range(1200):
        assert seen[it] == pytest.approx(reference_lr(it, base, warmup, 0.001, milestones, 0.1), rel=1e-12)
    if warmup:
        assert seen[0] == pytest.approx(base * 0.001)
