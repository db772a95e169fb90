import math

import numpy as np
import pytest
import torch
from PIL import Image

from focaldet.analysis.loss_shapes import loss_curves, plot_loss_shapes
from focaldet.cli.main import main


def test_curves_follow_the_formulas():
    p = torch.tensor([0.05, 0.3, 0.5, 0.9, 0.99], dtype=torch.float64)
    curves = loss_curves(p)
    ce = -torch.log(p)
    expected = {
        "CE (γ = 0)": (ce, 1 - p),
        "FL γ = 2": ((1 - p) ** 2 * ce, (1 - p) ** 2 * (2 * p * ce + 1 - p)),
        "modified_focal γ = 2": (((1 - p) / p) ** 2 * ce, None),
        "focal_star (FL*) γ = 2, β = 1": (torch.log1p(torch.exp(-(2 * torch.logit(p) + 1))) / 2, None),
    }
    for label, (loss, grad) in expected.items():
        torch.testing.assert_close(curves[label][0], loss, rtol=1e-9, atol=1e-12)
        if grad is not None:
            torch.testing.assert_close(curves[label][1], grad, rtol=1e-9, atol=1e-12)
    assert len(curves) == 7


def test_plot_writes_readable_pngs(tmp_path):
    paths = plot_loss_shapes(tmp_path / "plots")
    assert [p.name for p in paths] == ["loss_vs_pt.png", "grad_vs_pt.png"]
    for p in paths:
        img = np.asarray(Image.open(p).convert("L"))
        assert img.shape[0] > 400 and img.shape[1] > 600
        assert img.std() > 20  # not a blank canvas


def test_cli_plot_losses(tmp_path, capsys):
    assert main(["plot-losses", "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "grad_vs_pt.png").is_file()
    bad = tmp_path / "file"
    bad.write_text("x")
    assert main(["plot-losses", "--out", str(bad)]) == 2
    assert "not a folder" in capsys.readouterr().err
