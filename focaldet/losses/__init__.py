"""The classification-loss family: sigmoid losses on ``(N, K)`` logits, softmax baselines on
``(N, K+1)`` logits, per-class gradient statistics, and ``build_loss`` to choose by name.

One file per sigmoid loss holds its formula (value and gradient), its functional form and its
module; all of them run on the one fused pass of :mod:`focaldet.losses.fused`.
"""
from focaldet.losses.base import LossModule, SigmoidLoss, SoftmaxLoss
from focaldet.losses.build import LOSSES, build_loss, check_loss_params, loss_names, loss_parameters
from focaldet.losses.checks import LossConfigError
from focaldet.losses.equalized_focal import EqualizedFocalLoss, efl_gamma, equalized_focal_loss
from focaldet.losses.focal import BalancedBCELoss, BCELoss, FocalLoss, balanced_bce_loss, bce_loss, focal_loss
from focaldet.losses.focal_star import FocalStarLoss, focal_star_loss
from focaldet.losses.fused import Compiler
from focaldet.losses.ghm import GHMLoss, ghm_loss
from focaldet.losses.grad_stats import GradStats
from focaldet.losses.modified_focal import ModifiedFocalLoss, modified_focal_loss
from focaldet.losses.poly_focal import PolyFocalLoss, poly_focal_loss
from focaldet.losses.quality_focal import QualityFocalLoss, quality_focal_loss
from focaldet.losses.softmax import (OHEMLoss, SampledLoss, SoftmaxCELoss, ohem_loss, sampled_loss,
                                     softmax_ce_loss)
from focaldet.losses.varifocal import VarifocalLoss, varifocal_loss

__all__ = [
    "LOSSES", "build_loss", "check_loss_params", "loss_names", "loss_parameters", "LossConfigError",
    "GradStats", "Compiler",
    "LossModule", "SigmoidLoss", "SoftmaxLoss",
    "BCELoss", "BalancedBCELoss", "FocalLoss", "ModifiedFocalLoss", "FocalStarLoss", "PolyFocalLoss", "GHMLoss",
    "QualityFocalLoss", "VarifocalLoss", "EqualizedFocalLoss", "SoftmaxCELoss", "OHEMLoss", "SampledLoss",
    "bce_loss", "balanced_bce_loss", "focal_loss", "modified_focal_loss", "focal_star_loss", "poly_focal_loss",
    "ghm_loss", "quality_focal_loss", "varifocal_loss", "equalized_focal_loss", "efl_gamma",
    "softmax_ce_loss", "ohem_loss", "sampled_loss",
]
