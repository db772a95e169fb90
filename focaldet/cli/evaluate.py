"""``focaldet eval CONFIG --weights CKPT`` — COCO stats, APr/APc/APf and per-class AP of a checkpoint."""
from __future__ import annotations

import argparse
from pathlib import Path

EPILOG = """examples:
  focaldet eval configs/lt_stamps_cpu.yaml --weights runs/lt_stamps_cpu/checkpoints/best.pt
  focaldet eval runs/x/config.yaml --weights runs/x/checkpoints/last.pt --results my_results.json
  focaldet eval lt_stamps_cpu --weights runs/focal/checkpoints/last.pt --class-agnostic"""

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("config", help="YAML config (or packaged preset name) whose data.val_ann / data.val_images "
                                       "(or benchmark) are evaluated and whose model section matches the checkpoint")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, as for train")
    parser.add_argument("--weights", required=True, metavar="CKPT", help="checkpoint (.pt) written by focaldet train")
    parser.add_argument("--results", default=None, metavar="JSON",
                        help="where to write the COCO results JSON (default: eval/<ckpt>_results.json in the "
                             "checkpoint's run directory); the metrics go beside it as <name>_metrics.json")
    parser.add_argument("--class-agnostic", action="store_true",
                        help="also score the detections with every class merged into one (does the detector "
                             "find the objects, whatever it calls them?); printed and stored in the metrics JSON "
                             "under 'class_agnostic'")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (runtime.device)")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bar (it is shown only when stderr is a terminal anyway)")


def default_results_path(weights: Path) -> Path:
    run_dir = weights.parent.parent if weights.parent.name == "checkpoints" else weights.parent
    return run_dir / "eval" / f"{weights.stem}_results.json"


def run(args: argparse.Namespace) -> int:
    from focaldet.config import load_config
    from focaldet.engine.evaluator import evaluate
    from focaldet.utils import dist
    from focaldet.utils.io import atomic_write_json, jsonable

    overrides = list(args.overrides) + ([f"runtime.device={args.device}"] if args.device else [])
    cfg = load_config(args.config, overrides)
    weights = Path(args.weights)
    results_path = Path(args.results) if args.results else default_results_path(weights)
    ev = evaluate(cfg, weights, results_path=results_path, progress=False if args.quiet else None)
    if ev is not None:
        metrics_path = results_path.with_name(results_path.stem.removesuffix("_results") + "_metrics.json")
        metrics = ev.to_dict()
        if args.class_agnostic:
            from focaldet.evaluation import class_agnostic_stats

            merged = class_agnostic_stats(cfg.data.val_ann, results_path)
            metrics["class_agnostic"] = merged  # jsonable below writes NaN as null
        atomic_write_json(metrics_path, jsonable(metrics))
        print(f"focaldet eval: {weights} on {cfg.data.val_ann} (images {cfg.data.val_images})")
        print(ev.format_table())
        if args.class_agnostic:
            from focaldet.evaluation.eval_result import _pts

            print("class-agnostic (every class merged into one), points: "
                  + "  ".join(f"{k} {_pts(merged[k], 0)}" for k in ("AP", "AP50", "AP75", "AR100")))
        print(f"results: {results_path}\nmetrics: {metrics_path}", flush=True)
    dist.teardown(exit_code=0)
    return 0
