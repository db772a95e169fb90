"""``focaldet train CONFIG [key=value …]`` — also the entry point under torchrun."""
from __future__ import annotations

import argparse

EPILOG = """examples:
  focaldet train lt_stamps_cpu                     # a packaged preset, by name, from any folder
  focaldet train configs/lt_stamps_cpu.yaml
  focaldet train configs/lt_stamps_cpu.yaml loss.name=equalized_focal loss.scale=8 train.epochs=6
  focaldet train configs/lt_stamps_cpu.yaml runtime.work_dir=runs/efl --resume
  focaldet train configs/lt_stamps_cpu.yaml runtime.work_dir=runs/efl --resume train.epochs=8
  torchrun --nproc_per_node=2 -m focaldet train configs/lt_stamps_cpu.yaml data.batch_size=4 runtime.work_dir=runs/ddp
  torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --rdzv_backend=c10d \\
      --rdzv_endpoint=HOST:29500 -m focaldet train configs/retinanet_r50_fpn_1x_coco.yaml"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("config", help="YAML config file, or the name of a packaged preset (lt_stamps_cpu, "
                                       "lt_digits_cpu, ...); its sections are model, loss, data, train, runtime")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="override config entries by dotted name, e.g. train.epochs=6 loss.gamma=1 "
                             "model.anchors.sizes=[16,32,64,128,256]; values are read as YAML scalars")
    parser.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CKPT",
                        help="continue an interrupted run: with no value, from the newest good checkpoint in "
                             "the run directory (same as runtime.resume=auto); or from the checkpoint file CKPT")
    parser.add_argument("--overwrite", action="store_true",
                        help="start over in a run directory that holds a previous run (its checkpoints, "
                             "metrics and results are deleted; other files are kept)")
    parser.add_argument("--work-dir", default=None,
                        help="run directory for config.yaml, metrics, checkpoints and results (runtime.work_dir)")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (runtime.device)")
    parser.add_argument("--no-progress", action="store_true",
                        help="print plain log lines even when attached to a terminal (no tqdm bar)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from focaldet.cli.main import CLIError
    from focaldet.config import load_config
    from focaldet.engine.trainer import train
    from focaldet.utils import dist

    overrides = list(args.overrides)
    if args.resume not in (None, "auto") and "=" in args.resume and not Path(args.resume).exists():
        # `train cfg --resume train.max_iters=40`: argparse took the override for the CKPT value.
        overrides.append(args.resume)
        args.resume = "auto"
    if args.resume is not None and args.overwrite:
        raise CLIError("--resume and --overwrite contradict each other", hint="pass one of them")
    if args.work_dir is not None:
        overrides.append(f"runtime.work_dir={args.work_dir}")
    if args.device is not None:
        overrides.append(f"runtime.device={args.device}")
    if args.resume is not None:
        overrides.append(f"runtime.resume={args.resume}")
    cfg = load_config(args.config, overrides)
    # A failure raises to focaldet.cli.main, which prints one line and, under torchrun, leaves at
    # once (utils/dist.abort) instead of waiting for the other ranks.
    result = train(cfg, use_tqdm=False if args.no_progress else None, overwrite=args.overwrite)
    stats = result.get("metrics") or {}
    if stats and dist.is_main_process():
        shown = "  ".join(f"{k} {stats[k]:.4f}" if isinstance(stats[k], float) else f"{k} n/a"
                          for k in ("AP", "AP50", "APr", "APc", "APf") if k in stats)
        print(f"focaldet train: finished {result['iterations']} iterations in {result['wall_time_s']:.1f}s; "
              f"{shown}; run directory {result['run_dir']}", flush=True)
    dist.teardown(exit_code=0)
    return 0
