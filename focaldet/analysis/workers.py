"""Train one comparison in several processes at once: ``focaldet compare --workers N``.

A small detector does not keep many CPU cores busy from one process, so several processes with
few threads each finish more runs per hour (about 1.25x on this project's 2-core AVX2 machine with
two one-thread processes; docs/experiments.md). The processes share the work through the run-directory locks that
:func:`focaldet.analysis.compare.execute` already honours, so a worker needs nothing but the
comparison's ``plan.json``: it trains every run listed there that is neither finished nor taken
by a live process. Which process trains a run does not change it: its config (seed, threads and
all) comes from the plan.

``python -m focaldet.analysis.workers OUT/plan.json`` is the worker; :func:`execute_with_workers`
starts N − 1 of them next to the calling process, waits for them, and then trains itself whatever
a failed worker left unfinished (resuming from its checkpoint), so a crashed worker costs time, not
runs.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

from focaldet.analysis.arms import Arm, CompareError
from focaldet.config import config_from_dict

# Set by `compare` for the workers it starts: the PID they stop with.
PARENT_ENV = "FOCALDET_COMPARE_PARENT"


def specs_from_plan(plan_path) -> list:
    """The comparison's runs, in the plan's (seed-major) order, each with the exact config the
    plan recorded. ``plan_path``: a ``plan.json`` written by :func:`~focaldet.analysis.compare.compare`."""
    from focaldet.analysis.compare import RunSpec

    plan_path = Path(plan_path)
    try:
        plan = json.loads(plan_path.read_text(encoding="utf-8"))
        arms = {a["name"]: Arm(a["name"], a["loss"], dict(a["params"]), tuple(a["overrides"]), a.get("label", ""))
                for a in plan["arms"]}
        runs = plan["runs"]
    except FileNotFoundError:
        raise CompareError(f"{plan_path}: no such plan (it is written by `focaldet compare`)") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CompareError(f"{plan_path}: not a comparison plan ({type(e).__name__}: {e})") from None
    specs = []
    for key, cfg in runs.items():
        arm_name, _, seed = key.rpartition("/seed")
        if not seed.isdigit():
            raise CompareError(f"{plan_path}: run '{key}' is not '<arm>/seed<N>'")
        if arm_name not in arms:
            raise CompareError(f"{plan_path}: run '{key}' names no arm of the plan")
        cfg = config_from_dict(cfg, source=f"{plan_path} [{key}]")
        work_dir = Path(cfg.runtime.work_dir)
        # The plan's paths are relative to the folder `compare` ran in; from anywhere else a
        # worker would train a silent second copy of every run there.
        if plan_path.resolve().parent not in work_dir.resolve().parents:
            raise CompareError(f"{plan_path}: runs.{key}.runtime.work_dir {work_dir} is not inside "
                               f"{plan_path.parent} from this folder ({Path.cwd()})",
                               hint="start the worker in the folder the `focaldet compare` command ran in")
        specs.append(RunSpec(arms[arm_name], int(seed), work_dir, cfg))
    return specs


def prepare_data(specs: Sequence) -> None:
    """Generate each benchmark the runs use once, here, before the workers start: they would
    otherwise all generate it at the same time (safe, the first rename wins, but N times the work)."""
    from focaldet.data.loader import resolve_data

    seen = set()
    for spec in specs:
        d = spec.cfg.data
        key = json.dumps([d.benchmark, d.root, vars(d.generator)], sort_keys=True, default=str)
        if d.benchmark is None or key in seen:
            continue
        seen.add(key)
        resolve_data(config_from_dict(spec.cfg.to_dict(), source=spec.cfg.source))


def worker_command(plan_path) -> list[str]:
    """The command line of one worker process (this Python, unbuffered output)."""
    return [sys.executable, "-u", "-m", "focaldet.analysis.workers", str(plan_path)]


def execute_with_workers(specs: Sequence, plan_path: Path, workers: int, *,
                         log: Callable[[str], None] = print) -> list:
    """Train the runs of ``plan_path`` (= ``specs``) with this process and ``workers − 1`` worker
    processes; return every run's record, as :func:`~focaldet.analysis.compare.execute` does.

    Each worker's output goes to ``OUT/workers/worker<K>.log`` (each run also keeps its own
    ``metrics.jsonl``). An interrupt here stops the workers too; their runs resume on the next call."""
    from focaldet.analysis.compare import execute

    if workers < 1:
        raise CompareError(f"--workers {workers}: need at least 1")
    todo = sum(not (s.dir / "result.json").is_file() for s in specs)
    workers = max(1, min(workers, todo))  # a worker with no run to take would only load data
    cpus = usable_cpus()
    if workers > 1 and any(not s.cfg.runtime.threads for s in specs):
        log(f"compare: note: runtime.threads is not set, so each of the {workers} processes uses all "
            f"{cpus} CPUs and they compete; runtime.threads={max(1, cpus // workers)} fits")
    else:
        threads = max((s.cfg.runtime.threads or 0) for s in specs)
        if threads * workers > cpus:
            log(f"compare: note: {workers} workers x {threads} threads on {cpus} CPUs: the processes will "
                f"compete for cores; runtime.threads={max(1, cpus // workers)} fits")
    if workers == 1:
        return execute(specs, log=log)
    prepare_data(specs)
    log_dir = Path(plan_path).parent / "workers"
    log_dir.mkdir(parents=True, exist_ok=True)
    procs: list[tuple[subprocess.Popen, Path]] = []
    restore = _exit_on_termination()
    try:
        for k in range(1, workers):
            path = log_dir / f"worker{k}.log"
            with open(path, "w", encoding="utf-8") as fh:
                p = subprocess.Popen(worker_command(plan_path), stdout=fh, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=dict(os.environ, **{PARENT_ENV: str(os.getpid())}))
            procs.append((p, path))
            log(f"compare: worker {k} started (pid {p.pid}, log {path})")
        execute(specs, log=log)
        for p, path in procs:
            if p.poll() is None:
                log(f"compare: waiting for worker pid {p.pid} to finish (log {path})")
            if p.wait() != 0:
                tail = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
                log(f"compare: worker pid {p.pid} exited with code {p.returncode} ({path}): "
                    + " | ".join(tail))
    finally:
        restore()
        for p, _ in procs:
            if p.poll() is None:
                p.terminate()
        for p, _ in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    # Whatever a failed worker left behind: trained (resumed) here, so no run is lost.
    return execute(specs, log=log)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which containers and `taskset` narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _exit_on_termination() -> Callable[[], None]:
    """Turn SIGTERM / SIGHUP (`kill`, a closed terminal, a scheduler's time limit) into SystemExit
    while the workers run, so the ``finally`` that stops them runs too; returns the undo."""
    import signal

    def stop(signum, _frame):
        raise SystemExit(128 + signum)

    wanted = [getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n)]
    try:
        previous = {sig: signal.signal(sig, stop) for sig in wanted}
    except ValueError:  # not the main thread: signals stay as they are
        return lambda: None
    return lambda: [signal.signal(sig, h) for sig, h in previous.items()]


def _die_with_parent(parent: int) -> None:
    """A worker whose `compare` process has gone stops: on Linux the kernel sends it SIGTERM the
    moment the parent dies; elsewhere :func:`main` checks between runs."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # it died before the line above took effect
        raise SystemExit(143)


def main(argv: Optional[list] = None) -> int:
    from focaldet.analysis.compare import execute
    from focaldet.errors import FocaldetError

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m focaldet.analysis.workers OUT/plan.json", file=sys.stderr)
        return 2
    parent = os.environ.get(PARENT_ENV)
    if parent:
        _die_with_parent(int(parent))
    try:
        specs = specs_from_plan(argv[0])
        print(f"compare worker pid {os.getpid()}: {len(specs)} runs in {argv[0]}", flush=True)
        execute(specs, stop=(lambda: os.getppid() != int(parent)) if parent else None)
    except FocaldetError as e:
        print(f"compare worker: error: {e}" + (f"\n  hint: {e.hint}" if getattr(e, "hint", None) else ""),
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
