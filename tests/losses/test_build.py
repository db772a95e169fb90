import pytest
import torch

from focaldet.errors import FocaldetError
from focaldet.losses import LOSSES, LossConfigError, build_loss, check_loss_params, loss_names, loss_parameters

SPEC_NAMES = ["bce", "balanced_bce", "focal", "modified_focal", "focal_star", "poly_focal", "ghm", "quality_focal",
              "varifocal", "equalized_focal", "softmax_ce", "ohem", "sampled"]


def test_every_spec_loss_builds_and_runs():
    assert sorted(loss_names()) == sorted(SPEC_NAMES) and set(LOSSES) == set(SPEC_NAMES)
    for name in SPEC_NAMES:
        m = build_loss(name, num_classes=3, track_grad_stats=True)
        assert m.name == name and m.family in ("sigmoid", "softmax") and isinstance(m.params, dict)
        assert (m.grad_stats is None) == (m.family == "softmax")
        x = torch.randn(8, 3 + (m.family == "softmax"), requires_grad=True)
        labels = torch.tensor([0, 1, 2, 3, 3, -1, 3, 3])
        out = m(x, labels, normalizer=3, quality=torch.rand(8) if m.needs_quality else None)
        assert out.dim() == 0 and out.dtype == torch.float32 and torch.isfinite(out)


def test_unknown_name_lists_valid_names():
    with pytest.raises(LossConfigError, match="valid names: bce, balanced_bce, focal") as e:
        build_loss("focall", num_classes=3)
    assert isinstance(e.value, FocaldetError) and isinstance(e.value, ValueError)


def test_unknown_parameter_lists_valid_parameters():
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) gama.*gamma=2.0, alpha=0.25"):
        build_loss("focal", num_classes=3, gama=2)


RANGE_CASES = [
    ("focal", {"gamma": -1}, "gamma"),
    ("focal", {"alpha": 1.5}, "0 <= alpha <= 1"),
    ("balanced_bce", {"alpha": -0.1}, "alpha"),
    ("modified_focal", {"max_weight": 0}, "max_weight"),
    ("focal_star", {"gamma": 0}, "0 < gamma"),
    ("equalized_focal", {"scale": -1}, "scale"),
    ("ghm", {"bins": 2.5}, "integer"),
    ("ghm", {"momentum": 1.0}, "0 <= momentum < 1"),
    ("sampled", {"positive_fraction": 2}, "positive_fraction"),
    ("focal", {"gamma": "two"}, "number"),
]


@pytest.mark.parametrize("name,params,match", RANGE_CASES)
def test_range_checks(name, params, match):
    with pytest.raises(LossConfigError, match=match):
        build_loss(name, num_classes=3, **params)


@pytest.mark.parametrize("name,params,match", RANGE_CASES)
def test_check_loss_params_applies_the_same_ranges_without_building(name, params, match, monkeypatch):
    from focaldet.losses.base import LossModule

    def no_build(*args, **kwargs):
        raise AssertionError("check_loss_params built the loss")
    monkeypatch.setattr(LossModule, "__init__", no_build)  # every loss's constructor ends up here
    with pytest.raises(LossConfigError, match=match) as e:
        check_loss_params(name, params)
    assert e.value.param == next(iter(params))  # the key a config error names as loss.<param>


def test_check_loss_params_names_the_unknown_parameter_or_loss():
    with pytest.raises(LossConfigError, match=r"unknown parameter\(s\) gama") as e:
        check_loss_params("focal", {"gamma": 1, "gama": 2})
    assert e.value.param == "gama"
    with pytest.raises(LossConfigError, match="valid names: bce") as e:
        check_loss_params("focall", {})
    assert e.value.param == "name"
    check_loss_params("focal", {"gamma": 0, "alpha": None})  # in range: no error


def test_every_loss_parameter_has_a_declared_range():
    """The load-time check reads the ranges; one missing would let any value through to the build."""
    for name, cls in LOSSES.items():
        assert set(cls.ranges) == set(loss_parameters(name)), name
        check_loss_params(name, loss_parameters(name))  # the defaults are in range
