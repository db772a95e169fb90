"""``focaldet compare``: train several losses over several seeds and report means, CIs and paired
differences. Examples::

    focaldet compare configs/lt_stamps_cpu.yaml --losses focal,modified_focal,equalized_focal \\
        --seeds 3 --out runs/cmp modified_focal.max_weight=100
    focaldet compare configs/lt_stamps_cpu.yaml --sweep focal.gamma=0,0.5,1,2,5 --seeds 3 --out runs/gamma
    focaldet compare configs/lt_stamps_cpu.yaml --losses focal,equalized_focal \\
        --sweep data.sampler=uniform,repeat_factor --seeds 3 --out runs/sampler data.repeat_threshold=0.03
    focaldet compare --preset paper-table1 --out runs/paper-table1
    focaldet compare --preset paper-table1 --out runs/paper-table1 --workers 2 runtime.threads=1
"""
from __future__ import annotations

import argparse
from pathlib import Path

from focaldet.analysis.arms import CompareError, build_arms, split_overrides
from focaldet.analysis.presets import PRESETS
from focaldet.config import parse_override


def accept_overrides_anywhere(p: argparse.ArgumentParser) -> None:
    """Let ``key=value`` overrides follow the options too (``compare CFG --out X a.b=1``).

    argparse fills all positionals from the first run of them, so later ``key=value`` words would
    be "unrecognized". This parser's ``parse_known_args`` (which the subcommand machinery calls)
    moves such leftovers into ``overrides``; anything else stays unrecognized and is reported."""
    base = argparse.ArgumentParser.parse_known_args

    def parse_known_args(args=None, namespace=None):
        ns, extras = base(p, args, namespace)
        kv = [a for a in extras if "=" in a and not a.startswith("-")]
        ns.overrides = list(getattr(ns, "overrides", None) or []) + kv
        return ns, [a for a in extras if a not in kv]

    p.parse_known_args = parse_known_args


def add_arguments(p: argparse.ArgumentParser) -> None:
    accept_overrides_anywhere(p)
    p.add_argument("config", nargs="?", default=None,
                   help="YAML config shared by every run (default with --preset: the CPU preset of the embedded benchmark)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides for every run (train.epochs=6), or per-loss parameters (modified_focal.gamma=1)")
    p.add_argument("--losses", default=None,
                   help="comma-separated loss names, one arm each (default: focal,modified_focal,equalized_focal "
                        "unless --sweep or --preset is given)")
    p.add_argument("--sweep", action="append", default=[], metavar="LOSS.PARAM=V1,V2,...",
                   help="one arm per value, e.g. focal.gamma=0,0.5,1,2,5 (repeatable; sweeps are side by "
                        "side unless --cross); a config key (data.sampler=uniform,repeat_factor) gives one arm "
                        "per value for each loss of --losses")
    p.add_argument("--cross", action="store_true",
                   help="cross the --sweep flags of the same loss into a grid, e.g. --sweep "
                        "modified_focal.gamma=0.5,1,2 --sweep modified_focal.max_weight=3,10 --cross → 6 arms")
    p.add_argument("--seeds", default=None,
                   help="number of seeds N (seeds 0..N-1) or a comma-separated list (default 3, or the preset's)")
    p.add_argument("--out", default=None, help="output folder; nothing is written outside it (required unless --preset)")
    p.add_argument("--baseline", default=None, help="arm the paired differences are taken against (default: focal)")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="a predefined comparison: paper-table1 = Lin et al. 2017 Table 1 / §5.1 ablations")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="train in N processes that share the runs (on a CPU, N x runtime.threads = the "
                        "cores: e.g. --workers 2 runtime.threads=1 on two); each run ends as one process would train it")
    p.add_argument("--no-plots", action="store_true", help="write the report without figures")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: write the report from the runs finished so far (e.g. while a long "
                        "comparison is still running elsewhere)")


def parse_seeds(text, default: int) -> list[int]:
    if text is None:
        return list(range(default))
    text = str(text).strip()
    try:
        if "," in text:
            return [int(s) for s in text.split(",") if s.strip()]
        n = int(text)
    except ValueError:
        raise CompareError(f"--seeds '{text}': expected a count (3) or a list (0,1,2)") from None
    if n < 1:
        raise CompareError(f"--seeds {n}: need at least one seed")
    return list(range(n))


def run(args) -> int:
    from focaldet.analysis.compare import compare
    from focaldet.analysis.report import console_table

    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config and not Path(config).exists():
        overrides.insert(0, config)  # `compare --preset X key=value`: no config given
        config = None
    preset = PRESETS[args.preset] if args.preset else None
    if preset:
        if args.losses or args.sweep:
            raise CompareError("--preset defines its own arms; drop --losses / --sweep")
        arms = list(preset.arms)
        _, per_loss = split_overrides(overrides, {a.loss for a in arms})
        if per_loss:
            raise CompareError(f"--preset {preset.name}: per-loss parameters would change the preset's arms")
        global_ov = overrides
        if config is None:
            from focaldet.analysis.demo import default_cpu_config

            config = default_cpu_config()
        out = Path(args.out or f"runs/{preset.name}")
        seeds = parse_seeds(args.seeds, preset.seeds)
        baseline = args.baseline or preset.baseline
    else:
        if config is None:
            raise CompareError("a CONFIG file is required (or --preset)")
        if args.out is None:
            raise CompareError("--out is required, e.g. --out runs/my-comparison")
        losses = args.losses.split(",") if args.losses else ([] if args.sweep else
                                                             ["focal", "modified_focal", "equalized_focal"])
        names = set(losses) | {s.split(".", 1)[0] for s in args.sweep}
        global_ov, per_loss = split_overrides(overrides, names)
        arms = build_arms(losses, args.sweep, per_loss, cross=args.cross)
        swept = {text.split("=", 1)[0] for a in arms for text in a.overrides}
        both = sorted(swept & {parse_override(text)[0] for text in global_ov})
        if both:
            raise CompareError(f"{', '.join(both)} is both swept and set for every run; drop one of the two")
        out = Path(args.out)
        seeds = parse_seeds(args.seeds, 3)
        baseline = args.baseline
    result = compare(config, arms, seeds, out, overrides=global_ov, baseline=baseline, preset=preset,
                     plots=not args.no_plots, train=not args.report_only, workers=args.workers)
    print()
    print(console_table(result.summary))
    for c in result.summary["claims"]:
        print(f"  [{c['verdict']}] {c['claim']} — {c['evidence']}")
    print(f"\nreport: {result.report_md}  (HTML: {result.report_html})")
    return 0
