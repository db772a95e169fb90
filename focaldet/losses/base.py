"""The ``nn.Module`` side shared by every loss: what a loss module holds and how it is called.

Call convention: ``loss(logits, labels (N,) int64, *, normalizer, quality=None, batch_index=None)
-> 0-d float32``. Labels 0..K-1 are foreground classes, K is background, -1 is ignored. Sigmoid
losses take ``logits (N, K)``, softmax losses ``(N, K+1)`` with background last. The result is the
sum over the non-ignored rows divided by ``normalizer`` (a positive number or 0-d tensor).
"""
from __future__ import annotations

from torch import Tensor, nn

from focaldet.losses.checks import Range, check_inputs, check_num_classes
from focaldet.losses.fused import Compiler
from focaldet.losses.grad_stats import GradStats


class LossModule(nn.Module):
    """Holds ``name``, ``family`` (``"sigmoid"`` / ``"softmax"``), ``needs_quality``, ``params``
    (the resolved keyword parameters), ``grad_stats`` (a :class:`GradStats` for a sigmoid loss
    built with ``track_grad_stats=True``, else None) and ``compiler`` (the :class:`Compiler` of a
    sigmoid loss, from ``compile=``: True, False, or None for ``FOCALDET_COMPILE``, read here once).

    Softmax losses accept ``track_grad_stats`` and ``compile`` and ignore them: G⁺/G⁻ are defined
    per sigmoid logit, and their cross entropy is a single PyTorch op.
    """

    name = ""
    family = ""
    needs_quality = False
    ranges: dict[str, Range] = {}  # parameter -> allowed values; a parameter not listed is unchecked

    def __init__(self, num_classes: int, track_grad_stats: bool = False, compile: bool | None = None,
                 **params):
        super().__init__()
        self.params = self.check_params(params)
        self.num_classes = check_num_classes(self.name, num_classes)
        sigmoid = self.family == "sigmoid"
        self.grad_stats = GradStats(num_classes) if track_grad_stats and sigmoid else None
        self.compiler = Compiler(compile) if sigmoid else None

    @classmethod
    def check_params(cls, params: dict) -> dict:
        """``params`` with each value checked against :attr:`ranges` (and made float or int).
        A class method, so a config can be checked at load time without building the module."""
        return {k: cls.ranges[k].check(cls.name, k, v) if k in cls.ranges else v for k, v in params.items()}

    def extra_repr(self) -> str:
        return ", ".join([f"num_classes={self.num_classes}"] + [f"{k}={v}" for k, v in self.params.items()])


class SigmoidLoss(LossModule):
    """Base of the sigmoid-family modules (``logits (N, K)``); subclasses implement ``_loss``."""

    family = "sigmoid"

    def forward(self, logits: Tensor, labels: Tensor, *, normalizer, quality: Tensor | None = None,
                batch_index: Tensor | None = None) -> Tensor:
        check_inputs(self.name, logits, labels, self.num_classes, quality, self.needs_quality)
        return self._loss(logits, labels, normalizer=normalizer, quality=quality)

    def _loss(self, logits: Tensor, labels: Tensor, *, normalizer, quality: Tensor | None) -> Tensor:
        raise NotImplementedError


class SoftmaxLoss(LossModule):
    """Base of the softmax-family modules (``logits (N, K+1)``); subclasses implement ``_loss``."""

    family = "softmax"

    def forward(self, logits: Tensor, labels: Tensor, *, normalizer, quality: Tensor | None = None,
                batch_index: Tensor | None = None) -> Tensor:
        check_inputs(self.name, logits, labels, self.num_classes + 1, batch_index=batch_index)
        return self._loss(logits, labels, normalizer=normalizer, batch_index=batch_index)

    def _loss(self, logits: Tensor, labels: Tensor, *, normalizer, batch_index: Tensor | None) -> Tensor:
        raise NotImplementedError
