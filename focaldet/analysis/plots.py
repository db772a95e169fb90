"""Figures of a comparison, drawn from the files the runs left on disk.

Every function reads run directories (``metrics.jsonl``, ``eval/final.json``), draws one PNG with
matplotlib's Agg backend and returns its path, or ``None`` when the runs hold nothing to draw
(e.g. no equalized_focal arm for the γ_j figure). Colours follow the arm order, so one loss has
the same colour in every figure."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from focaldet.analysis.arms import Arm  # noqa: E402
from focaldet.analysis.runs import RunRecord  # noqa: E402

GROUP_COLORS = {"r": "#fbe3e3", "c": "#fdf3d8", "f": "#e3f1e3"}


def read_metrics(run_dir: Path) -> list[dict]:
    """The JSON lines of ``metrics.jsonl``; a torn last line (an interrupted run) is skipped."""
    path = Path(run_dir) / "metrics.jsonl"
    rows = []
    if not path.is_file():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _colors(arms: Sequence[Arm]) -> dict[str, tuple]:
    cmap, n = (plt.get_cmap("tab10"), 10) if len(arms) <= 10 else (plt.get_cmap("tab20"), 20)
    return {a.name: cmap(i % n) for i, a in enumerate(arms)}


def _jitter(i: int, n: int) -> float:
    """Multiplicative x offset of arm ``i`` of ``n`` on a log axis: side by side, within ±12 %."""
    return 1.0 + (min(0.04, 0.25 / n) * (i - (n - 1) / 2) if n > 1 else 0.0)


def _legend(ax, n_entries: int) -> None:
    if n_entries > 6:  # many arms: outside the axes, so no data is hidden
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.legend(fontsize=8)


def _by_arm(records: Sequence[RunRecord], arms: Sequence[Arm], statuses=("finished", "diverged")) -> dict[str, list[RunRecord]]:
    out: dict[str, list[RunRecord]] = {a.name: [] for a in arms}
    for r in records:
        if r.status in statuses and r.arm in out:
            out[r.arm].append(r)
    return out


def _save(fig, path: Path, dpi: int = 110) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


def _smooth(y: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(y) < window:
        return y
    kernel = np.ones(window) / window
    pad = np.concatenate([np.full(window - 1, y[0]), y])
    return np.convolve(pad, kernel, mode="valid")


# ---------------------------------------------------------------------------------------------
def plot_training_loss(records: Sequence[RunRecord], arms: Sequence[Arm], path: Path) -> Optional[Path]:
    """Total, classification and box training loss against iteration, one colour per loss;
    thin lines are single seeds, the thick line their mean. A diverged run ends with an ×."""
    colors = _colors(arms)
    runs = _by_arm(records, arms)
    keys = ("loss", "loss_cls", "loss_box")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    drawn = False
    for arm in arms:
        curves = []
        for r in runs[arm.name]:
            rows = [m for m in read_metrics(r.dir) if m.get("type") == "train"]
            if not rows:
                continue
            it = np.array([m["iter"] for m in rows], dtype=float)
            curves.append((it, {k: np.array([m.get(k, np.nan) for m in rows], dtype=float) for k in keys}, r))
        for ax, k in zip(axes, keys):
            for it, ys, r in curves:
                ax.plot(it, ys[k], color=colors[arm.name], lw=0.7, alpha=0.35)
                if r.status == "diverged":
                    ax.plot(it[-1], np.nan_to_num(ys[k][-1], nan=0, posinf=0), "x", color=colors[arm.name], ms=9)
            if curves:
                n = min(len(c[0]) for c in curves)
                mean = np.nanmean(np.stack([c[1][k][:n] for c in curves]), axis=0)
                ax.plot(curves[0][0][:n], _smooth(mean, 3), color=colors[arm.name], lw=2, label=arm.title)
                drawn = True
    if not drawn:
        plt.close(fig)
        return None
    for ax, k in zip(axes, keys):
        ax.set_xlabel("iteration")
        ax.set_ylabel(k)
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
    _legend(axes[-1], len(arms))
    fig.suptitle("Training loss per loss function (mean over seeds; thin: single seeds)")
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------
def _per_class_mean(runs: Sequence[RunRecord]) -> dict[int, dict]:
    """cat_id → {name, image_count, group, AP (mean over seeds)}."""
    acc: dict[int, dict] = {}
    for r in runs:
        for row in r.per_class:
            e = acc.setdefault(row["cat_id"], {"name": row.get("name", str(row["cat_id"])),
                                               "image_count": row.get("image_count") or 0,
                                               "group": row.get("group"), "ap": []})
            ap = row.get("AP")
            if ap is not None and math.isfinite(ap) and ap >= 0:  # COCO writes -1 for "no gt"
                e["ap"].append(ap)
    for e in acc.values():
        e["AP"] = float(np.mean(e["ap"])) if e["ap"] else math.nan
    return acc


def _shade_groups(ax, classes: dict[int, dict]) -> None:
    """Background bands for the rare / common / frequent ranges of training-image counts."""
    spans = {}
    for e in classes.values():
        g = e.get("group")
        if g in GROUP_COLORS and e["image_count"] > 0:
            lo, hi = spans.get(g, (math.inf, 0))
            spans[g] = (min(lo, e["image_count"]), max(hi, e["image_count"]))
    for g, (lo, hi) in spans.items():
        ax.axvspan(lo / 1.15, hi * 1.15, color=GROUP_COLORS[g], zorder=0)
        ax.text(math.sqrt(lo * hi), 1.0, {"r": "rare", "c": "common", "f": "frequent"}[g],
                transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=8)


def plot_ap_vs_frequency(records: Sequence[RunRecord], arms: Sequence[Arm], path: Path) -> Optional[Path]:
    """Per-class AP against the class's number of training images (log x), one colour per loss:
    the long-tail picture. Dots are classes (mean over seeds); the line a running mean over
    classes sorted by frequency."""
    colors = _colors(arms)
    runs = _by_arm(records, arms, statuses=("finished",))
    fig, ax = plt.subplots(figsize=(9, 5))
    drawn = False
    shaded = False
    for i, arm in enumerate(arms):
        classes = _per_class_mean(runs[arm.name])
        pts = sorted((e["image_count"], e["AP"]) for e in classes.values() if e["image_count"] > 0)
        if not pts:
            if any(r.arm == arm.name and r.status == "diverged" for r in records):
                ax.scatter([], [], color=colors[arm.name], marker="x", label=f"{arm.title} (diverged: no AP)")
            continue
        if not shaded:
            _shade_groups(ax, classes)
            shaded = True
        x = np.array([p[0] for p in pts], dtype=float)
        y = 100 * np.array([p[1] for p in pts], dtype=float)
        ax.scatter(x * _jitter(i, len(arms)), y, s=22, color=colors[arm.name], alpha=0.8, label=arm.title, zorder=3)
        ok = np.isfinite(y)
        if ok.sum() >= 3:
            ax.plot(x[ok], _smooth(y[ok], 5), color=colors[arm.name], lw=1.8, zorder=2)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xscale("log")
    ax.set_ylim(bottom=-2, top=max(10.0, ax.get_ylim()[1]))
    ax.set_xlabel("training images containing the class (log scale)")
    ax.set_ylabel("AP of the class (points)")
    ax.set_title("Per-class AP against class frequency", pad=16)
    ax.grid(alpha=0.3, which="both")
    _legend(ax, len(arms))
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------
def _grad_lines(r: RunRecord) -> list[dict]:
    return [m for m in read_metrics(r.dir) if m.get("type") == "grad_stats"]


def _class_counts(runs_by_arm: dict[str, list[RunRecord]]) -> Optional[np.ndarray]:
    """Training-image count per label, labels in ascending category-id order (the data layer's
    contiguous mapping)."""
    for runs in runs_by_arm.values():
        for r in runs:
            if r.per_class:
                rows = sorted(r.per_class, key=lambda row: row["cat_id"])
                return np.array([row.get("image_count") or 0 for row in rows], dtype=float)
    return None


def _efl_gammas(r: RunRecord) -> Optional[tuple]:
    """(iterations (T,), γ_j (T, K), (γ_b, s)) of an EFL run: the logged ``gamma`` values, or —
    where the log has only the ratio — γ_j = γ_b + s·(1 − clamp(G⁺/G⁻, 0, 1)) (docs/spec.md §3), with the
    run's own γ_b and s. Iteration 0 is prepended: there every g_j = 1, so γ_j = γ_b."""
    import yaml

    from focaldet.losses import loss_parameters

    lines = [m for m in _grad_lines(r) if m.get("gamma") or m.get("ratio")]
    if not lines:
        return None
    params = dict(loss_parameters("equalized_focal"))
    cfg_path = Path(r.dir) / "config.yaml"
    if cfg_path.is_file():
        loss_cfg = (yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}).get("loss") or {}
        params.update({k: v for k, v in loss_cfg.items() if k in params})
    gamma_b, scale = float(params["gamma_b"]), float(params["scale"])
    it = np.array([m["iter"] for m in lines], dtype=float)
    if all(m.get("gamma") for m in lines):
        gamma = np.array([m["gamma"] for m in lines], dtype=float)
    else:
        ratio = np.array([m["ratio"] for m in lines], dtype=float)
        gamma = gamma_b + scale * (1.0 - np.clip(ratio, 0.0, 1.0))
    it = np.concatenate([[0.0], it])
    gamma = np.concatenate([np.full((1, gamma.shape[1]), gamma_b), gamma])
    return it, gamma, (gamma_b, scale)


def plot_efl_gamma(records: Sequence[RunRecord], arms: Sequence[Arm], path: Path) -> Optional[Path]:
    """EFL's focusing factors γ_j over training, one line per class coloured by its training
    frequency; one panel per equalized_focal arm (its first seed)."""
    runs = _by_arm(records, arms)
    efl = [a for a in arms if a.loss == "equalized_focal" and runs[a.name]]
    panels = []
    for arm in efl:
        gammas = _efl_gammas(runs[arm.name][0])
        if gammas is not None:
            panels.append((arm, gammas))
    if not panels:
        return None
    counts = _class_counts(runs)
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.5), squeeze=False)
    cmap = plt.get_cmap("viridis")
    norm = None
    for ax, (arm, (it, g, bs)) in zip(axes[0], panels):
        if bs is not None:  # the whole possible range [γ_b, γ_b + s], so "flat at γ_b" reads as such
            ax.set_ylim(bs[0] - 0.05 * bs[1] - 0.1, bs[0] + 1.05 * bs[1] + 0.1)
            ax.axhline(bs[0] + bs[1], color="gray", ls=":", lw=1)
            ax.text(it[0], bs[0] + bs[1], " γ_b + s (class never positive)", va="bottom", fontsize=8, color="gray")
        k = g.shape[1]
        c = counts if counts is not None and len(counts) == k else np.arange(1, k + 1, dtype=float)
        norm = matplotlib.colors.LogNorm(vmin=max(c.min(), 1), vmax=max(c.max(), 2))
        for j in np.argsort(c):
            ax.plot(it, g[:, j], color=cmap(norm(max(c[j], 1))), lw=1.2)
        ax.set_xlabel("iteration")
        ax.set_ylabel("γ_j")
        ax.set_title(f"{arm.title}: focusing factor per class")
        ax.grid(alpha=0.3)
        fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax,
                     label="training images of the class")
    return _save(fig, path)


def _class_groups(runs_by_arm: dict[str, list[RunRecord]]) -> Optional[np.ndarray]:
    """LVIS-style group ('r' / 'c' / 'f') per label, labels in ascending category-id order."""
    for runs in runs_by_arm.values():
        for r in runs:
            if r.per_class:
                return np.array([row.get("group") or "?" for row in sorted(r.per_class, key=lambda row: row["cat_id"])])
    return None


GROUP_STYLES = {"r": ("rare", "-"), "c": ("common", "--"), "f": ("frequent", ":")}


def group_medians(values: np.ndarray, groups: Optional[np.ndarray]) -> dict[str, np.ndarray]:
    """Median over the classes of each LVIS group of ``values`` (T, K) → {group: (T,)}; all classes
    as one group 'all' when the groups are unknown."""
    if groups is None or len(groups) != values.shape[1]:
        return {"all": np.median(values, axis=1)}
    return {g: np.median(values[:, groups == g], axis=1) for g in GROUP_STYLES if (groups == g).any()}


def plot_grad_ratio(records: Sequence[RunRecord], arms: Sequence[Arm], path: Path) -> Optional[Path]:
    """Per-class accumulated gradient ratio G⁺/G⁻: at the end of training against class
    frequency (left), and its median over the rare / common / frequent classes through training
    (right), one colour per loss, one line style per group."""
    colors = _colors(arms)
    runs = _by_arm(records, arms)
    counts, groups = _class_counts(runs), _class_groups(runs)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 4.8))
    drawn = False
    for i, arm in enumerate(arms):
        if not runs[arm.name]:
            continue
        lines = [m for m in _grad_lines(runs[arm.name][0]) if m.get("ratio")]
        if not lines:
            continue
        ratio = np.array([m["ratio"] for m in lines], dtype=float)  # (T, K)
        it = np.array([m["iter"] for m in lines], dtype=float)
        final = ratio[-1]
        x = counts if counts is not None and len(counts) == len(final) else np.arange(1, len(final) + 1, dtype=float)
        ax1.scatter(x * _jitter(i, len(arms)), np.clip(final, 1e-4, None), s=22, color=colors[arm.name], label=arm.title)
        for g, med in group_medians(ratio, groups).items():
            name, ls = GROUP_STYLES.get(g, ("all classes", "-"))
            ax2.plot(it, np.clip(med, 1e-4, None), ls=ls, color=colors[arm.name], lw=1.6,
                     label=f"{arm.title}: {name}")
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax1.axhline(1.0, color="gray", lw=1, ls=":")
    ax2.axhline(1.0, color="gray", lw=1, ls=":")
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    ax1.set_xlabel("training images containing the class (log scale)")
    ax1.set_ylabel("G⁺ / G⁻ at the end of training (clipped at 1e-4)")
    ax1.set_title("Positive / negative gradient ratio per class")
    ax2.set_yscale("log")
    ax2.set_xlabel("iteration")
    ax2.set_ylabel("median G⁺ / G⁻ over the group's classes")
    ax2.set_title("Gradient ratio during training, rare / common / frequent")
    ax1.grid(alpha=0.3, which="both")
    ax2.grid(alpha=0.3, which="both")
    ax2.legend(fontsize=7, ncol=2 if len(arms) > 2 else 1)
    return _save(fig, path)


def mechanism_rows(records: Sequence[RunRecord], arms: Sequence[Arm]) -> list[list[str]]:
    """Report rows: per arm (first seed), the final median G⁺/G⁻ and (EFL) γ_j per LVIS group."""
    runs = _by_arm(records, arms)
    groups = _class_groups(runs)
    rows = []
    for arm in arms:
        if not runs[arm.name]:
            continue
        lines = [m for m in _grad_lines(runs[arm.name][0]) if m.get("ratio")]
        if not lines:
            continue
        ratio = group_medians(np.array([lines[-1]["ratio"]], dtype=float), groups)
        gam = _efl_gammas(runs[arm.name][0]) if arm.loss == "equalized_focal" else None
        gmed = group_medians(gam[1][-1:], groups) if gam is not None else {}
        cells = [f"{ratio[g][0]:.3g}" if g in ratio else "—" for g in GROUP_STYLES]
        cells += [f"{gmed[g][0]:.2f}" if g in gmed else "—" for g in GROUP_STYLES]
        rows.append([arm.title, *cells])
    return rows


def learning_curve(r: RunRecord) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """(training minutes (T,), val AP (T,)) at each periodic evaluation of a run, the minutes summed
    from the logged per-iteration times (evaluation time excluded); None without evaluations.
    A run with ``train.eval_images`` is followed on its val subset, which every evaluation scored
    (the final one also scored the whole val set: that is the run's result, not a curve point)."""
    lines = [m for m in read_metrics(r.dir) if m.get("type") in ("train", "eval")]
    if any(m.get("subset") for m in lines):
        lines = [m for m in lines if m["type"] == "train" or m.get("subset")]
    train = [(m["iter"], m["time"]) for m in lines if m["type"] == "train" and m.get("time") is not None]
    evals = [(m["iter"], m["AP"]) for m in lines if m["type"] == "eval" and m.get("AP") is not None]
    if not evals or not train:
        return None
    its = np.array([0] + [t[0] for t in train], dtype=float)
    per_iter = np.array([t[1] for t in train], dtype=float)
    elapsed = np.concatenate([[0.0], np.cumsum(np.diff(its) * per_iter)])  # seconds at each logged iter
    ev_it = np.array([e[0] for e in evals], dtype=float)
    return np.interp(ev_it, its, elapsed) / 60.0, np.array([e[1] for e in evals], dtype=float)


def plot_learning_curves(records: Sequence[RunRecord], arms: Sequence[Arm], path: Path) -> Optional[Path]:
    """Validation AP against training time, one line per (loss, seed)."""
    colors = _colors(arms)
    runs = _by_arm(records, arms)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn, subset = 0, set()
    for arm in arms:
        for j, r in enumerate(runs[arm.name]):
            evals = [m for m in read_metrics(r.dir) if m.get("type") == "eval" and m.get("AP") is not None]
            subset |= {m["images"] for m in evals if m.get("subset")}
            curve = learning_curve(r)
            if curve is None:
                continue
            alpha = 1.0 if j == 0 else 0.5
            ax.plot(curve[0], 100 * curve[1], "o-", ms=3, lw=1.4, color=colors[arm.name], alpha=alpha,
                    label=arm.title if j == 0 else None)
            whole = [m for m in evals if m.get("subset") is False]
            if any(m.get("subset") for m in evals) and whole:  # the run's result, on every val image
                ax.plot(curve[0][-1], 100 * whole[-1]["AP"], "*", ms=9, color=colors[arm.name], alpha=alpha,
                        mec="black", mew=0.5)
            drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("training time (minutes, this machine, evaluation excluded)")
    first = f", first {'/'.join(str(n) for n in sorted(subset))} val images" if subset else ""
    ax.set_ylabel(f"val AP (points{first})")
    if subset:
        ax.plot([], [], "*", ms=9, color="grey", mec="black", mew=0.5, label="final, whole val set")
    ax.set_title("Learning curves")
    ax.grid(alpha=0.3)
    _legend(ax, len(arms))
    return _save(fig, path)


def plot_detection_grid(images: Sequence[np.ndarray], detections: dict[str, list[dict]], class_names: Sequence[str],
                        path: Path, *, score_thresh: float = 0.3, max_boxes: int = 10,
                        title: str = "Detections per loss", col_titles: Sequence[str] = (),
                        plain_rows: Sequence[str] = ("ground truth",)) -> Path:
    """A grid: one row per loss (``detections`` keys, in order), one column per image.

    ``images``: (H, W, 3) uint8 arrays; ``detections[row][col]``: dict with ``boxes (k, 4)`` xyxy
    pixels of that image, ``scores (k,)``, ``labels (k,)`` (numpy or tensors). Boxes below
    ``score_thresh`` are not drawn; at most ``max_boxes`` per image, highest scores first. Rows
    named in ``plain_rows`` (the ground truth) are labelled without scores."""
    rows = list(detections)
    ncol = len(images)
    fig, axes = plt.subplots(len(rows), ncol, figsize=(3.2 * ncol, 3.2 * len(rows)), squeeze=False)
    cmap = plt.get_cmap("tab20")
    for ri, row in enumerate(rows):
        for ci, img in enumerate(images):
            ax = axes[ri][ci]
            ax.imshow(img)
            ax.set_xticks([])
            ax.set_yticks([])
            det = detections[row][ci]
            scores = np.asarray(det["scores"], dtype=float)
            boxes = np.asarray(det["boxes"], dtype=float).reshape(-1, 4)
            labels = np.asarray(det["labels"], dtype=int)
            order = [j for j in np.argsort(-scores) if scores[j] >= score_thresh][:max_boxes]
            for j in order:
                x0, y0, x1, y1 = boxes[j]
                color = cmap(labels[j] % 20)
                ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color=color, lw=1.6))
                name = class_names[labels[j]] if 0 <= labels[j] < len(class_names) else str(labels[j])
                text = name if row in plain_rows else f"{name} {scores[j]:.2f}"
                ax.text(x0, y0, text, fontsize=6, color="white", va="bottom",
                        bbox=dict(facecolor=color, alpha=0.8, pad=0.5, lw=0))
            if ci == 0:
                ax.set_ylabel(row, fontsize=10)
            if ri == 0 and ci < len(col_titles):
                ax.set_title(col_titles[ci], fontsize=8)
    fig.suptitle(f"{title} (score ≥ {score_thresh})")
    fig.tight_layout()
    return _save(fig, path, dpi=80)  # photo grids: keep the PNG small
