"""The classification-loss family (SPEC §2–§3): sigmoid losses on ``(N, K)`` logits, softmax
baselines on ``(N, K+1)`` logits, per-class gradient statistics, and ``build_loss`` to choose by name.
"""
from focaldet.losses.build import LOSSES, build_loss, loss_names, loss_parameters
from focaldet.losses.checks import LossConfigError
from focaldet.losses.equalized_focal import EqualizedFocalLoss, efl_gamma, equalized_focal_loss
from focaldet.losses.ghm import GHMLoss, ghm_loss
from focaldet.losses.grad_stats import GradStats
from focaldet.losses.sigmoid import (BalancedBCELoss, BCELoss, FocalLoss, FocalStarLoss, ModifiedFocalLoss,
                                     PolyFocalLoss, QualityFocalLoss, SigmoidLoss, VarifocalLoss, balanced_bce_loss,
                                     bce_loss, focal_loss, focal_star_loss, modified_focal_loss, poly_focal_loss,
                                     quality_focal_loss, varifocal_loss)
from focaldet.losses.softmax import (OHEMLoss, SampledLoss, SoftmaxCELoss, SoftmaxLoss, ohem_loss, sampled_loss,
                                     softmax_ce_loss)

__all__ = [
    "LOSSES", "build_loss", "loss_names", "loss_parameters", "LossConfigError", "GradStats",
    "SigmoidLoss", "SoftmaxLoss",
    "BCELoss", "BalancedBCELoss", "FocalLoss", "ModifiedFocalLoss", "FocalStarLoss", "PolyFocalLoss", "GHMLoss",
    "QualityFocalLoss", "VarifocalLoss", "EqualizedFocalLoss", "SoftmaxCELoss", "OHEMLoss", "SampledLoss",
    "bce_loss", "balanced_bce_loss", "focal_loss", "modified_focal_loss", "focal_star_loss", "poly_focal_loss",
    "ghm_loss", "quality_focal_loss", "varifocal_loss", "equalized_focal_loss", "efl_gamma",
    "softmax_ce_loss", "ohem_loss", "sampled_loss",
]
