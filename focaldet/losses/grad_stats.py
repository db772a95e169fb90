"""Per-class gradient statistics G⁺ / G⁻ (docs/spec.md §3), the state behind the equalized focal loss and a
diagnostic for every sigmoid loss.

The statistics come from the loss's own analytic gradient ``∂loss/∂logit`` (normalizer, α_t and
every weighting factor included), which the loss computes in its forward pass together with the
value; they are added to the buffers in the loss's backward, i.e. only for passes that are
back-propagated. They do not depend on the
``grad_output`` that reaches the loss, so AMP loss scaling (and any factor a caller multiplies the
returned loss by) leaves them untouched; they are always accumulated in float32, whatever the
logits' dtype.

Distributed: each backward sums that iteration's contribution over all ranks (one ``all_reduce``
of ``2K`` floats) and divides it by the world size before adding it to the buffers, so every rank
holds identical statistics after every backward. Dividing by the world size matches DDP, which
averages gradients over ranks: the statistics are those of the gradient the optimizer applies, and a
2-rank run equals one process on the whole batch (the ratio G⁺/G⁻, hence EFL's γ_j, does not
depend on this common factor). The collective runs in the loss's backward node, the first node of the backward
pass, i.e. before any of DDP's gradient buckets; every rank must therefore run backward through
the loss equally often, which DDP requires anyway.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from focaldet.utils.dist import all_reduce_sum, get_world_size


class GradStats(nn.Module):
    """Buffers ``pos_grad (K,)``, ``neg_grad (K,)`` (float32, cumulative sums of |∂loss/∂logit|
    over positive / non-ignored negative elements of each class) and ``num_updates`` (0-d int64,
    backward passes seen). Part of ``state_dict()``."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = int(num_classes)
        self.register_buffer("pos_grad", torch.zeros(self.num_classes, dtype=torch.float32))
        self.register_buffer("neg_grad", torch.zeros(self.num_classes, dtype=torch.float32))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.int64))

    def ratio(self) -> Tensor:
        """``G⁺ / (G⁻ + 1e-10)`` per class, shape ``(K,)``, float32."""
        return self.pos_grad / (self.neg_grad + 1e-10)

    @torch.no_grad()
    def accumulate(self, pos_abs: Tensor, neg_abs: Tensor) -> None:
        """Add one iteration's per-class sums (each ``(K,)``), summed over ranks first."""
        both = torch.cat([pos_abs.float(), neg_abs.float()]).to(self.pos_grad.device)
        all_reduce_sum(both)
        world = get_world_size()
        if world > 1:
            both /= world
        self.pos_grad += both[: self.num_classes]
        self.neg_grad += both[self.num_classes:]
        self.num_updates += 1

    @torch.no_grad()
    def reset(self) -> None:
        self.pos_grad.zero_()
        self.neg_grad.zero_()
        self.num_updates.zero_()

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}"
