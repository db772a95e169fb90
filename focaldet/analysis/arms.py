"""Arms of a comparison: which loss (and parameters) each group of runs trains with.

An *arm* is one setting that is trained once per seed. Arms come from three places:

- ``--losses focal,modified_focal`` — one arm per loss, with that loss's default parameters;
- per-loss ``key=value`` arguments — ``modified_focal.gamma=1`` sets ``gamma`` for every arm of
  that loss (``loss.*`` and the other config sections stay global: they apply to every arm);
- ``--sweep focal.gamma=0,0.5,1`` — one arm per value (several ``--sweep`` flags add their arms
  side by side; with ``cross=True`` (``--cross``) the sweeps of one loss are crossed into a grid:
  ``--sweep modified_focal.gamma=0.5,1,2 --sweep modified_focal.max_weight=3,10`` gives 6 arms);
- ``--sweep data.sampler=uniform,repeat_factor`` — a config key instead of a loss parameter: one
  arm per value for every loss of ``--losses``, each arm differing from the others only in that
  key (and the loss). Config sweeps are side by side, or one grid with ``--cross``; a comparison
  sweeps either loss parameters or config keys, not both.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from focaldet.config import SECTIONS, parse_override
from focaldet.errors import FocaldetError


class CompareError(FocaldetError, ValueError):
    """A problem with a comparison's arguments or its output folder."""


@dataclass(frozen=True)
class Arm:
    """One trained setting.

    ``name`` is unique within a comparison and safe as a folder name; ``params`` are the loss's
    keyword parameters; ``overrides`` are further ``key=value`` config overrides of this arm only
    (e.g. ``model.prior_prob=0.5`` for "no prior-probability init")."""

    name: str
    loss: str
    params: dict = field(default_factory=dict)
    overrides: tuple = ()
    label: str = ""

    @property
    def title(self) -> str:
        return self.label or self.name

    def to_dict(self) -> dict:
        return {"name": self.name, "loss": self.loss, "params": dict(self.params),
                "overrides": list(self.overrides), "label": self.title}


def _fmt_value(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def arm_name(loss: str, varied: dict) -> str:
    """Folder-safe name: ``focal`` or ``focal-gamma0.5`` (only the swept keys appear)."""
    parts = [loss] + [f"{k}{_fmt_value(v)}" for k, v in varied.items()]
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", "-".join(parts))


def split_overrides(overrides: Iterable[str], loss_names: Iterable[str]) -> tuple[list[str], dict[str, dict]]:
    """Separate global config overrides (``train.epochs=6``) from per-loss parameters
    (``modified_focal.gamma=1``). Returns ``(global_overrides, {loss: {param: value}})``."""
    loss_names = set(loss_names)
    global_ov: list[str] = []
    per_loss: dict[str, dict] = {}
    for text in overrides:
        key, value = parse_override(text)
        head, _, rest = key.partition(".")
        if head in SECTIONS:
            global_ov.append(text)
        elif head in loss_names and rest and "." not in rest:
            per_loss.setdefault(head, {})[rest] = value
        else:
            raise CompareError(
                f"override '{text}': '{head}' is neither a config section ({', '.join(SECTIONS)}) "
                f"nor a loss being compared ({', '.join(sorted(loss_names)) or 'none'})",
                hint="per-loss parameters look like modified_focal.gamma=1")
    return global_ov, per_loss


# set by every run of a comparison (run_config): sweeping them would silently do nothing
_NOT_SWEEPABLE = ("runtime.seed", "runtime.work_dir", "runtime.resume")


def parse_sweep(text: str) -> tuple[str, str, list]:
    """``focal.gamma=0,0.5,1`` → ``("focal", "gamma", [0, 0.5, 1])``; a config key
    ``data.sampler=uniform,repeat_factor`` → ``("data", "sampler", ["uniform", "repeat_factor"])``
    (nested keys keep their dots: ``data.generator.seed``)."""
    usage = "expected LOSS.PARAM=V1,V2,... or SECTION.KEY=V1,V2,..., e.g. focal.gamma=0,0.5,1,2,5"
    if "=" not in text:
        raise CompareError(f"--sweep '{text}': {usage}")
    key, values = text.split("=", 1)
    head, _, param = key.strip().partition(".")
    if not head or not param or ("." in param and head not in SECTIONS):
        raise CompareError(f"--sweep '{text}': {usage}")
    if head == "loss":
        raise CompareError(f"--sweep '{text}': name the loss whose parameter is swept, e.g. "
                           f"focal.{param}=...; 'loss.*' would change every arm's loss")
    if f"{head}.{param}" in _NOT_SWEEPABLE:
        raise CompareError(f"--sweep '{text}': every run of a comparison sets {head}.{param} itself "
                           "(use --seeds for seeds, --out for the folder)")
    parsed = [parse_override(f"x={v}")[1] for v in values.split(",") if v.strip()]
    if not parsed:
        raise CompareError(f"--sweep '{text}': no values after '='")
    return head, param, parsed


def _override_text(value: Any) -> str:
    """A parsed value back as the text of a ``key=value`` override."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ",".join(_override_text(v) for v in value) + "]"
    return str(value)


def build_arms(losses: Iterable[str], sweeps: Iterable[str] = (), per_loss: Optional[dict[str, dict]] = None,
               cross: bool = False) -> list[Arm]:
    """Arms for ``--losses`` and ``--sweep``, each with the per-loss parameters of its loss.
    ``cross``: the sweeps of the same loss form a grid (one arm per combination)."""
    per_loss = per_loss or {}
    losses = [loss.strip() for loss in losses if loss.strip()]
    parsed = [parse_sweep(t) for t in sweeps]
    config_sweeps = [s for s in parsed if s[0] in SECTIONS]
    arms: list[Arm] = []
    if config_sweeps:
        if len(config_sweeps) != len(parsed):
            raise CompareError("--sweep: a comparison sweeps either loss parameters (focal.gamma=...) or "
                               "config keys (data.sampler=...), not both")
        if not losses:
            raise CompareError("--sweep of a config key: name the losses it is applied to with --losses")
        for settings in _config_settings(config_sweeps, cross):
            short = {k.rsplit(".", 1)[-1]: v for k, v in settings.items()}
            label = " ".join(f"{k}={_fmt_value(v)}" for k, v in settings.items())
            overrides = tuple(f"{k}={_override_text(v)}" for k, v in settings.items())
            for loss in losses:
                arms.append(Arm(name=arm_name(loss, short), loss=loss, params=dict(per_loss.get(loss, {})),
                                overrides=overrides, label=f"{loss} {label}"))
    else:
        for loss in losses:
            arms.append(Arm(name=arm_name(loss, {}), loss=loss, params=dict(per_loss.get(loss, {}))))
        for loss, settings in _sweep_settings(parsed, cross):
            params = {**per_loss.get(loss, {}), **settings}
            label = " ".join(f"{k}={_fmt_value(v)}" for k, v in settings.items())
            arms.append(Arm(name=arm_name(loss, settings), loss=loss, params=params, label=f"{loss} {label}"))
    seen: dict[str, Arm] = {}
    for a in arms:
        if a.name in seen:
            raise CompareError(f"arm '{a.name}' is listed twice (from --losses / --sweep)")
        seen[a.name] = a
    if not arms:
        raise CompareError("nothing to compare: give --losses, --sweep or --preset")
    return arms


def _config_settings(sweeps: list[tuple[str, str, list]], cross: bool) -> list[dict]:
    """``{"data.sampler": value, ...}`` per setting: one key at a time, or the grid of all keys."""
    keys = [f"{section}.{key}" for section, key, _ in sweeps]
    if len(set(keys)) != len(keys):
        raise CompareError(f"--sweep: a config key is given twice ({', '.join(keys)})")
    if not cross:
        return [{k: v} for k, (_, _, values) in zip(keys, sweeps) for v in values]
    return [dict(zip(keys, combo)) for combo in itertools.product(*(values for _, _, values in sweeps))]


def _sweep_settings(sweeps: list[tuple[str, str, list]], cross: bool) -> list[tuple[str, dict]]:
    """``(loss, {param: value, ...})`` per swept arm, in the order the sweeps were given."""
    if not cross:
        return [(loss, {param: v}) for loss, param, values in sweeps for v in values]
    by_loss: dict[str, list[tuple[str, list]]] = {}
    for loss, param, values in sweeps:
        if any(p == param for p, _ in by_loss.get(loss, [])):
            raise CompareError(f"--sweep {loss}.{param} is given twice; with --cross each parameter once")
        by_loss.setdefault(loss, []).append((param, values))
    out = []
    for loss, axes in by_loss.items():
        names = [p for p, _ in axes]
        for combo in itertools.product(*(values for _, values in axes)):
            out.append((loss, dict(zip(names, combo))))
    return out
