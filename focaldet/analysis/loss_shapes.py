"""Loss-shape figures: loss and |∂loss/∂x| against p_t for the focal-loss family, in the style of
Figure 1 of the focal-loss paper. The curves are evaluated with focaldet's own loss kernels (the
positive-element branch, α weighting off), so the figures show exactly what the losses compute."""
from __future__ import annotations

import io
from pathlib import Path

import torch

from focaldet.losses.focal import focal
from focaldet.losses.focal_star import focal_star
from focaldet.losses.modified_focal import modified_focal
from focaldet.utils.io import atomic_write_bytes

# (label, formula, parameters) — α_t = 1 throughout, as in the paper's Figure 1
CURVES = [
    ("CE (γ = 0)", focal, dict(gamma=0.0)),
    ("FL γ = 0.5", focal, dict(gamma=0.5)),
    ("FL γ = 1", focal, dict(gamma=1.0)),
    ("FL γ = 2", focal, dict(gamma=2.0)),
    ("FL γ = 5", focal, dict(gamma=5.0)),
    ("modified_focal γ = 2", modified_focal, dict(gamma=2.0, log_max_weight=float("inf"))),
    ("focal_star (FL*) γ = 2, β = 1", focal_star, dict(gamma=2.0, beta=1.0)),
]


def loss_curves(p_t: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{label: (loss, |∂loss/∂x|)}`` at probabilities ``p_t (M,)`` of the ground-truth class (float64)."""
    x = torch.logit(p_t.double())
    yes = torch.ones((), dtype=torch.bool)
    out = {}
    for label, formula, params in CURVES:
        loss, grad = formula(x, yes, 0.0, alpha_pos=1.0, alpha_neg=1.0, **params)
        out[label] = (loss, grad.abs())
    return out


def _save(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())


def plot_loss_shapes(out_dir) -> list[Path]:
    """Write ``loss_vs_pt.png`` and ``grad_vs_pt.png`` into ``out_dir``; return their paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    p_t = torch.linspace(1e-3, 1 - 1e-3, 999, dtype=torch.float64)
    curves = loss_curves(p_t)
    styles = {"CE": dict(color="tab:blue", lw=2.2)}
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "black", "tab:brown"]
    dashes = ["-", "-", "-", "-", "-", "--", ":"]
    paths = []
    for what, fname, ylabel in [(0, "loss_vs_pt.png", "loss"), (1, "grad_vs_pt.png", "|∂loss/∂x|")]:
        fig, ax = plt.subplots(figsize=(7, 5))
        for (label, values), color, ls in zip(curves.items(), colors, dashes):
            ax.plot(p_t.numpy(), values[what].numpy(), ls, color=color, lw=styles.get(label[:2], {}).get("lw", 1.8),
                    label=label)
        ax.set_xlabel("probability of ground truth class  $p_t$")
        ax.set_ylabel(ylabel)
        ax.set_xlim(0, 1)
        if what == 0:
            ax.set_ylim(0, 5)
            ax.set_title("Loss against $p_t$ (α = 1): FL down-weights well-classified examples;\n"
                         "modified_focal also up-weights hard ones ($p_t$ < 0.5)")
            ax.axvspan(0.6, 1.0, color="0.92", zorder=0)
            ax.text(0.8, 2.2, "well-classified\nexamples", ha="center", va="top", fontsize=10, color="0.35")
        else:
            ax.set_yscale("log")
            ax.set_ylim(1e-6, 1e2)
            ax.set_title("Gradient magnitude against $p_t$ (α = 1, log scale)")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper right" if what == 0 else "lower left", fontsize=9, framealpha=0.9)
        paths.append(_save(fig, out_dir / fname))
        plt.close(fig)
    return paths
