"""``focaldet demo``: the README's main command (see :mod:`focaldet.analysis.demo`)."""
from __future__ import annotations

import argparse
import time


def add_arguments(p: argparse.ArgumentParser) -> None:
    from focaldet.cli.compare import accept_overrides_anywhere

    accept_overrides_anywhere(p)
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides (train.max_iters=300) or per-loss parameters (modified_focal.max_weight=100)")
    p.add_argument("--out", default="runs/demo", help="output folder; nothing is written outside it "
                                                      "(the benchmark is cached under the config's data.root)")
    p.add_argument("--quick", action="store_true",
                   help="shortened form (tiny benchmark, a few iterations): checks the whole path in about a minute")
    p.add_argument("--seeds", type=int, default=1, help="seeds per loss (more give confidence intervals)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="train N runs at a time in separate processes (with --seeds 3 on two cores: "
                        "--workers 2 runtime.threads=1); each run ends as one process would train it")
    p.add_argument("--benchmark", choices=["lt-stamps", "lt-digits"], default=None,
                   help="embedded benchmark (default: lt-stamps when its photos are installed, else lt-digits)")


def run(args) -> int:
    from focaldet.analysis.demo import run_demo
    from focaldet.analysis.report import console_table

    t0 = time.time()
    result = run_demo(args.out, quick=args.quick, overrides=args.overrides, seeds=range(args.seeds),
                      kind=args.benchmark, workers=args.workers)
    print()
    print(console_table(result.summary))
    print(f"\nAP in points; APr/APc/APf = rare/common/frequent classes. Finished in {time.time() - t0:.0f} s.")
    print(f"report: {result.report_md}  (HTML: {result.report_html})")
    print(f"plots:  {result.out / 'plots'}")
    return 0
