"""The ``focaldet`` command. Each subcommand lives in its own module under ``focaldet.cli`` and
exposes ``add_arguments(parser)`` and ``run(args) -> int``; modules are imported lazily so
``focaldet --help`` stays fast."""
from __future__ import annotations

import argparse
import importlib
import sys

from focaldet.errors import FocaldetError

# name -> (module, one-line help); one line per subcommand.
COMMANDS = {
    "train": ("focaldet.cli.train", "train a detector from a YAML config"),
    "eval": ("focaldet.cli.evaluate", "evaluate a checkpoint: COCO stats, APr/APc/APf, per-class AP"),
    "predict": ("focaldet.cli.predict", "draw detections on your own images and write COCO results"),
    "compare": ("focaldet.cli.compare", "compare losses over several seeds with confidence intervals"),
    "demo": ("focaldet.cli.demo", "the main job: compare focal, modified_focal and EFL on the embedded benchmark"),
    "data": ("focaldet.cli.data", "make the embedded long-tailed benchmarks (lt-stamps, lt-digits)"),
    "plot-losses": ("focaldet.cli.plot_losses", "plot loss and gradient against p_t for the loss family"),
    "export": ("focaldet.cli.export", "export a checkpoint to ONNX or TorchScript (with or without post-processing)"),
}


class CLIError(FocaldetError):
    """A user-facing error of the command line itself (bad arguments, refused paths)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="focaldet", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (mod_name, help_text) in COMMANDS.items():
        mod = importlib.import_module(mod_name)
        p = sub.add_parser(name, help=help_text, description=help_text,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse stops filling a `key=value ...` positional at the first option; accept overrides
    # after the options too (`focaldet train cfg.yaml --resume train.epochs=6`).
    if extra:
        if hasattr(args, "overrides") and all("=" in w and not w.startswith("-") for w in extra):
            args.overrides = list(args.overrides or []) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    from focaldet.utils import dist

    try:
        return int(args._run(args) or 0)
    except FocaldetError as e:
        # One line whatever the message holds (a YAML parser error spans several lines).
        message = " ".join(ln.strip() for ln in str(e).splitlines() if ln.strip())
        if len(message) > 1000:
            message = message[:997] + "..."
        print(f"focaldet {args.command}: error: {message}", file=sys.stderr)
        hint = getattr(e, "hint", "")
        if hint:
            print(f"  hint: {hint}", file=sys.stderr)
        dist.abort(2)  # under torchrun: leave now, the other ranks may wait in a collective
        return 2
    except KeyboardInterrupt:
        print(f"focaldet {args.command}: interrupted", file=sys.stderr)
        dist.abort(130)
        return 130


if __name__ == "__main__":
    sys.exit(main())
