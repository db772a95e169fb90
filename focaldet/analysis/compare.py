"""Train every (arm, seed) of a comparison with identical data and schedule, resumably.

Layout of the output folder (nothing is written outside it):

    OUT/plan.json                 command, versions, arms, seeds, every run's resolved config
    OUT/runs/<arm>/seed<S>/       one engine run directory per (arm, seed)
    OUT/summary.json              the statistics behind the report
    OUT/report.md, report.html    the report;  OUT/plots/*.png  its figures

Every run uses the same config; only the loss (name and parameters), the arm's own overrides
and ``runtime.seed`` differ. The data-generation seed (``data.generator.seed``) is never varied,
so all runs see the same images.

Resuming: a run is finished when its ``result.json`` exists (a diverged run is finished too: it
is reported, not retried). Every other run is started with ``runtime.resume=auto``, so one that
was interrupted continues from its last checkpoint exactly as the engine resumes, and one
without a checkpoint starts from scratch. A rerun with a different config for an existing run
is refused rather than silently mixing two settings in one table.
"""
from __future__ import annotations

import json
import math
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from focaldet.analysis.arms import Arm, CompareError
from focaldet.analysis.runs import RunRecord, machine_lines, read_run
from focaldet.config import Config, apply_override, config_from_dict, load_config, upgrade_keys
from focaldet.utils.io import atomic_write_json


@dataclass
class RunSpec:
    arm: Arm
    seed: int
    dir: Path
    cfg: Config

    @property
    def key(self) -> str:
        return f"{self.arm.name}/seed{self.seed}"


def versions() -> dict:
    import torch
    import torchvision

    import focaldet

    return {"focaldet": getattr(focaldet, "__version__", "unknown"), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "python": platform.python_version()}


def run_config(base: Config, arm: Arm, seed: int, run_dir: Path) -> Config:
    """The config of one run: ``base`` with the arm's loss and overrides, the seed and the run dir.

    The base config's loss parameters are kept only when the arm trains the same loss (they are
    that loss's parameters); another loss starts from its own defaults plus the arm's params."""
    d = base.to_dict()
    base_loss = dict(d["loss"])
    track = base_loss.pop("track_grad_stats", True)
    compile_ = base_loss.pop("compile", None)
    base_name = base_loss.pop("name")
    params = dict(base_loss) if base_name == arm.loss else {}
    params.update(arm.params)
    d["loss"] = {"name": arm.loss, **params, "track_grad_stats": track, "compile": compile_}
    for text in arm.overrides:
        apply_override(d, text, f"arm {arm.name}: override")
    d["runtime"]["seed"] = int(seed)
    d["runtime"]["work_dir"] = str(run_dir)
    d["runtime"]["resume"] = "auto"
    return config_from_dict(d, source=f"{base.source} [{arm.name}, seed {seed}]")


def run_dir_of(out: Path, arm: Arm, seed: int) -> Path:
    """``OUT/runs/<arm>/seed<S>``; arm names are folder-safe (:func:`~focaldet.analysis.arms.arm_name`),
    so a run directory never leaves ``out``."""
    return out / "runs" / arm.name / f"seed{seed}"


def plan_runs(base: Config, arms: Sequence[Arm], seeds: Sequence[int], out: Path) -> list[RunSpec]:
    """Seed-major order, so an interrupted comparison has complete seed pairs early. Every run's
    config is checked here (its loss parameters included), before anything is trained."""
    specs = []
    for seed in seeds:
        for arm in arms:
            run_dir = run_dir_of(out, arm, seed)
            specs.append(RunSpec(arm, int(seed), run_dir, run_config(base, arm, seed, run_dir)))
    return specs


def _first_difference(a, b, prefix: str = "") -> Optional[str]:
    """The first dotted key whose value differs. Keys present on one side only are skipped: a
    newer focaldet may add config keys (with defaults) that an earlier plan did not record."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) & set(b), key=str):
            d = _first_difference(a[k], b[k], f"{prefix}{k}.")
            if d:
                return d
        return None
    if a != b:
        return f"{prefix.rstrip('.')}: {a!r} before, {b!r} now"
    return None


def write_plan(out: Path, specs: Sequence[RunSpec], meta: dict) -> None:
    """Write ``plan.json``, refusing when a run listed in an earlier plan had another config."""
    plan_path = out / "plan.json"
    new_runs = {s.key: s.cfg.to_dict() for s in specs}
    if plan_path.is_file():
        try:
            old = json.loads(plan_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise CompareError(f"{plan_path}: not valid JSON ({e}); delete it or use another --out") from None
        for i, (key, old_cfg) in enumerate((old.get("runs") or {}).items()):
            # a plan of an earlier focaldet: its runs' keys under their new names (one note)
            old_cfg = upgrade_keys(old_cfg, str(plan_path), note=i == 0)
            if key in new_runs:
                diff = _first_difference(old_cfg, new_runs[key])
                if diff:
                    raise CompareError(
                        f"{plan_path}: run {key} was started with another config ({diff})",
                        hint="resume with the same arguments, or choose a new --out")
    atomic_write_json(plan_path, {**meta, "runs": new_runs})


def run_one(spec: RunSpec, train_fn: Callable) -> None:
    """Train one run. With ``raise_on_diverge=False`` the engine records a divergence in
    ``result.json`` (``status: diverged``) instead of raising, so the comparison goes on."""
    train_fn(spec.cfg, raise_on_diverge=False)


def execute(specs: Sequence[RunSpec], *, train_fn: Optional[Callable] = None,
            log: Callable[[str], None] = print, stop: Optional[Callable[[], bool]] = None) -> list[RunRecord]:
    """Train the runs that have no ``result.json`` yet, in order; return every run's record.

    Runs are claimed through their run-directory lock, so the same ``compare`` command started
    in several processes (one per core, or per machine on a shared file system) shares the work:
    a run another process is training is skipped here, and a run finished meanwhile is not
    retrained. Rerun the command (or ``--report-only``) once all are done for the full report.
    ``stop``: asked before each run; True ends the loop (a worker whose ``compare`` has gone)."""
    from focaldet.engine.run_dir import RunInUseError, RunLock

    if train_fn is None:
        from focaldet.engine import train as train_fn
    todo = [s for s in specs if not (s.dir / "result.json").is_file()]
    done = len(specs) - len(todo)
    if done:
        log(f"compare: {done} of {len(specs)} runs already finished, {len(todo)} to go")
    for i, spec in enumerate(todo, 1):
        if stop is not None and stop():
            log("compare: stopping before the next run (asked to)")
            break
        if (spec.dir / "result.json").is_file():
            continue  # finished meanwhile by another process
        busy = f"compare: [{done + i}/{len(specs)}] skipped {spec.arm.title} seed {spec.seed}: another process is training it"
        if RunLock(spec.dir).live_owner() is not None:
            log(busy)
            continue
        if (spec.dir / "result.json").is_file():
            continue  # its process wrote result.json and released the lock between the two checks
        state = "resuming" if (spec.dir / "checkpoints" / "last.pt").is_file() else "training"
        log(f"compare: [{done + i}/{len(specs)}] {state} {spec.arm.title} seed {spec.seed} -> {spec.dir}")
        t0 = time.time()
        try:
            run_one(spec, train_fn)
        except RunInUseError:  # taken between the check above and the engine's lock
            log(busy)
            continue
        rec = read_run(spec.dir, spec.arm.name, spec.seed)
        if rec.status == "diverged":
            log(f"compare:   DIVERGED at iteration {rec.diverged_at} ({time.time() - t0:.0f} s)")
        else:
            ap = rec.metrics.get("AP", math.nan)
            log(f"compare:   AP {100 * ap:.1f} ({time.time() - t0:.0f} s)")
    return [read_run(s.dir, s.arm.name, s.seed) for s in specs]


def command_line() -> str:
    import shlex

    return " ".join(shlex.quote(a) for a in ["focaldet", *sys.argv[1:]])


@dataclass
class CompareResult:
    out: Path
    summary: dict
    records: list
    report_md: Path
    report_html: Path
    plots: list


def resolve_baseline(arms: Sequence[Arm], baseline: Optional[str]) -> str:
    """``baseline`` names an arm (or a loss with a single arm); None → ``focal`` if present,
    else the first arm."""
    names = [a.name for a in arms]
    if baseline is None:
        return "focal" if "focal" in names else names[0]
    if baseline in names:
        return baseline
    by_loss = [a.name for a in arms if a.loss == baseline]
    if len(by_loss) == 1:
        return by_loss[0]
    raise CompareError(f"--baseline '{baseline}' is not one of the arms: {', '.join(names)}")


def compare(config, arms: Sequence[Arm], seeds: Sequence[int], out, *, overrides: Sequence[str] = (),
            baseline: Optional[str] = None, preset=None, plots: bool = True, detections: bool = True,
            train_fn: Optional[Callable] = None, log: Callable[[str], None] = print,
            command: Optional[str] = None, title: Optional[str] = None,
            extra_plots: Optional[Callable] = None, train: bool = True, workers: int = 1) -> CompareResult:
    """Train every (arm, seed) not yet finished under ``out``, then write the summary, the plots
    and the report. ``config``: YAML path (or None for the defaults); ``overrides``: global
    ``key=value`` config overrides; ``preset``: a :class:`~focaldet.analysis.presets.Preset`
    whose claims are checked in the report; ``extra_plots(specs, records, plot_dir) -> list[Path]``
    adds figures of the caller's own (the demo's photos). ``train=False`` trains nothing and
    reports the runs finished so far (the others appear as "not run"). ``workers > 1`` trains in
    that many processes sharing the runs (:mod:`focaldet.analysis.workers`), with the same result."""
    from focaldet.analysis.report import build_blocks, write_report
    from focaldet.analysis.summary import summarize_runs

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CompareError(f"--out {out}: exists and is not a folder")
    if workers < 1:
        raise CompareError(f"--workers {workers}: need at least 1 process")
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise CompareError(f"seeds must be distinct and at least one, got {seeds}")
    base = load_config(config, list(overrides))
    baseline = resolve_baseline(arms, baseline)
    specs = plan_runs(base, arms, seeds, out)  # checks every run's config, its loss included
    command = command or command_line()
    vers = versions()
    write_plan(out, specs, {"command": command, "versions": vers, "config": None if config is None else str(config),
                            "overrides": list(overrides), "arms": [a.to_dict() for a in arms],
                            "seeds": seeds, "baseline": baseline, "preset": preset.name if preset else None})
    if train and workers > 1:
        if train_fn is not None:
            raise CompareError("workers > 1 train with the engine; a custom train_fn runs in this process only")
        from focaldet.analysis.workers import execute_with_workers

        records = execute_with_workers(specs, out / "plan.json", workers, log=log)
    elif train:
        records = execute(specs, train_fn=train_fn, log=log)
    else:
        records = [read_run(s.dir, s.arm.name, s.seed) for s in specs]

    summary = summarize_runs(records, arms, baseline)
    claims = preset.claims(summary) if preset else []
    summary["claims"] = claims
    atomic_write_json(out / "summary.json", {**summary, "command": command, "versions": vers})

    plot_paths: list[Path] = []
    if plots:
        plot_paths = make_plots(records, arms, out / "plots", specs=specs if detections else None, log=log)
        if extra_plots is not None:
            plot_paths += [Path(p) for p in extra_plots(specs, records, out / "plots") if p is not None]
    title = title or f"focaldet compare: {out.name}"
    notes = [f"Preset **{preset.name}**: {preset.description}."] if preset else []
    from focaldet.analysis.plots import mechanism_rows

    blocks = build_blocks(summary, title=title, command=command, versions=vers, config=specs[0].cfg.to_dict(),
                          plots=plot_paths, claims=claims, notes=notes, root=out,
                          mechanism=mechanism_rows(records, arms), machines=machine_lines(records))
    md, html_path = write_report(out, blocks, title)
    return CompareResult(out, summary, records, md, html_path, plot_paths)


def make_plots(records, arms, plot_dir: Path, *, specs=None, log: Callable[[str], None] = print) -> list[Path]:
    """Every figure of the report that the runs have data for (see :mod:`focaldet.analysis.plots`)."""
    from focaldet.analysis import plots

    paths = [
        plots.plot_training_loss(records, arms, plot_dir / "training_loss.png"),
        plots.plot_ap_vs_frequency(records, arms, plot_dir / "ap_vs_frequency.png"),
        plots.plot_efl_gamma(records, arms, plot_dir / "efl_gamma.png"),
        plots.plot_grad_ratio(records, arms, plot_dir / "grad_ratio.png"),
        plots.plot_learning_curves(records, arms, plot_dir / "learning_curves.png"),
    ]
    from focaldet.analysis.loss_shapes import plot_loss_shapes

    paths.extend(plot_loss_shapes(plot_dir))
    if specs is not None:
        from focaldet.analysis.detections import val_detection_grid

        paths.append(val_detection_grid(specs, records, plot_dir / "detections_val.png"))
    return [Path(p) for p in paths if p is not None]
