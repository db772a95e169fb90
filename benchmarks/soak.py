"""Soak test: a long training run of the CPU preset, watching resident memory and finiteness.

Trains ``configs/lt_stamps_cpu.yaml`` for ``--iters`` iterations (default 2,000) with an
evaluation every ``--eval-every`` (default 500) and a checkpoint at each evaluation. The resident
set size of this process (``/proc/self/statm``, MiB) is sampled at every log line
(``--sample-every``, default 50 iterations). Passes when

* memory growth after warm-up is under ``--max-growth`` (default 5 %): the mean of the last
  four samples against the mean of the first four samples taken after the first evaluation
  (warm-up = everything up to and including the first evaluation, which allocates the
  evaluator's buffers once);
* no non-finite value appears: every logged loss, every evaluation statistic that is not an
  empty group (``null``), and every weight of the final checkpoint is finite (a non-finite loss
  would also stop training with ``TrainingDiverged``).

Not part of CI; run it once, niced, and quote its last line:

    nice -n 10 .venv/bin/python benchmarks/soak.py [--iters 2000] [--eval-every 500] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_PAGE_MIB = os.sysconf("SC_PAGE_SIZE") / 2**20
_ITER_RE = re.compile(r"\(iter (\d+)/\d+\)")


def rss_mib() -> float:
    """Current resident set size of this process in MiB (not the peak)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * _PAGE_MIB


class SamplingStream:
    """The trainer's log stream: echoes each line and samples RSS at every training log line."""

    def __init__(self, echo):
        self.echo = echo
        self.samples: list[tuple[int, float]] = []  # (iteration, RSS MiB)

    def write(self, text: str) -> int:
        m = _ITER_RE.search(text)
        if m and text.startswith("Epoch(train)"):
            self.samples.append((int(m.group(1)), rss_mib()))
            # one line per sample, so an interrupted soak still leaves a quotable trace
            self.echo.write(f"soak: sample iter {self.samples[-1][0]} rss {self.samples[-1][1]:.1f} MiB\n")
        return self.echo.write(text)

    def flush(self) -> None:
        self.echo.flush()

    def isatty(self) -> bool:
        return False


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(REPO / "configs" / "lt_stamps_cpu.yaml"))
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--sample-every", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-growth", type=float, default=0.05)
    ap.add_argument("--data-root", default=str(REPO / "data"), help="where the benchmark is generated/cached")
    ap.add_argument("--work-dir", default=None, help="run directory (default: a temporary folder)")
    args = ap.parse_args(argv)
    os.environ.setdefault("FOCALDET_COMPILE", "0")  # measure the training loop, not the compiler's caches

    import torch

    from focaldet.config import load_config
    from focaldet.engine.trainer import train

    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="focaldet_soak_"))
    milestone = int(args.iters * 0.85)
    cfg = load_config(args.config, [
        f"train.max_iters={args.iters}", f"train.eval_interval={args.eval_every}",
        f"train.ckpt_interval={args.eval_every}", f"train.milestones=[{milestone}]",
        f"runtime.log_interval={args.sample_every}", f"runtime.threads={args.threads}",
        f"runtime.work_dir={work}", f"data.root={args.data_root}", "data.num_workers=0",
    ])
    stream = SamplingStream(sys.stdout)
    t0 = time.time()
    result = train(cfg, stream=stream, use_tqdm=False, raise_on_diverge=False)
    wall = time.time() - t0

    # ---- finiteness ------------------------------------------------------------------------
    nonfinite = [result["message"]] if result["status"] == "diverged" else []
    for line in (work / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        for k, v in rec.items():
            vals = v if isinstance(v, list) else [v]
            for x in vals:
                # eval stats: None / NaN mean "empty group" (design.md), not a numerical failure
                if isinstance(x, float) and not math.isfinite(x) and not (rec["type"] == "eval" and math.isnan(x)):
                    nonfinite.append(f"metrics.jsonl iter {rec.get('iter')} {k}={x}")
    ckpt = torch.load(work / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    for name, t in ckpt["model"].items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            nonfinite.append(f"weight {name}")

    # ---- memory ----------------------------------------------------------------------------
    after = [(i, m) for i, m in stream.samples if i > args.eval_every]
    if len(after) >= 8:
        base = sum(m for _, m in after[:4]) / 4
        end = sum(m for _, m in after[-4:]) / 4
        growth = end / base - 1.0
        peak = max(m for _, m in after)
    else:
        base = end = peak = float("nan")
        growth = float("nan")
    trace = ", ".join(f"{i}:{m:.0f}" for i, m in stream.samples)
    print(f"soak: RSS MiB by iteration: {trace}")
    ok = (result["status"] == "finished" and result["iterations"] == args.iters and not nonfinite
          and math.isfinite(growth) and growth < args.max_growth)
    evals = [json.loads(ln) for ln in (work / "metrics.jsonl").read_text().splitlines()
             if json.loads(ln)["type"] == "eval"]
    # with train.eval_images an evaluation scores the first N val images; the last one also all
    aps = ", ".join(f"{e['iter']}{' (first ' + str(e['images']) + ')' if e.get('subset') else ''}:{e['AP']:.4f}"
                    for e in evals if isinstance(e.get("AP"), float))
    print(f"soak: {'PASS' if ok else 'FAIL'}: {result['iterations']} iterations in {wall / 60:.1f} min "
          f"({wall / max(result['iterations'], 1):.3f} s/iter, {args.threads} threads), {len(evals)} evaluations "
          f"(AP {aps}); RSS after warm-up {base:.0f} -> {end:.0f} MiB (growth {growth * 100:+.2f} %, "
          f"peak {peak:.0f}, limit {args.max_growth * 100:.0f} %); non-finite values: {len(nonfinite)}"
          + (f" ({'; '.join(nonfinite[:5])})" if nonfinite else "") + f"; run dir {work}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
