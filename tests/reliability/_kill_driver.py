"""Driver for the kill -9 fault test (run as a subprocess by test_faults.py).

    python _kill_driver.py CONFIG PLAN_JSON REPORT_JSON

Imports torch and focaldet once, runs no tensor code itself, and forks one training process per
attempt, so each attempt costs a fork instead of a fresh interpreter (OpenMP is fork-safe only
in a parent that never ran a parallel region, hence no tensor code here). Every attempt runs
``focaldet.engine.train`` with ``runtime.resume=auto`` in the run directory, exactly as
``focaldet train CONFIG --resume`` would, and is ended with SIGKILL at its planned point:

* ``{"kind": "after", "delay": s}``: ``s`` seconds after the attempt's first new checkpoint is
  complete (its ``.sha256`` sidecar appears), i.e. somewhere in the next iteration or inside
  the next checkpoint write;
* ``{"kind": "write", "file": PATTERN}``: inside the first atomic write of a file whose name
  matches PATTERN (``iter_*.pt``, ``iter_*.pt.sha256``, ``last.pt.sha256``): half of the bytes
  are in the temporary file when the process is killed.

The last attempt runs to the end unkilled. The report lists, per attempt, whether it was killed
and the iteration of the newest complete checkpoint at that moment.
"""
from __future__ import annotations

import fnmatch
import json
import os
import signal
import sys
import time
from pathlib import Path

os.environ.setdefault("FOCALDET_COMPILE", "0")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import focaldet.utils.io as fio  # noqa: E402
from focaldet.config import load_config  # noqa: E402
from focaldet.engine.trainer import train  # noqa: E402


def _pause_inside_write(name: str, marker: Path) -> None:
    """Patch ``atomic_write`` (this process only) to stop half-way through writing ``name``."""
    original = fio.atomic_write

    def atomic_write(path, write, mode="wb"):
        if not fnmatch.fnmatchcase(Path(path).name, name):
            return original(path, write, mode)

        def half_then_wait(fh):
            class Half:
                def write(self, data):
                    fh.write(data[: max(1, len(data) // 2)])
                    fh.flush()
                    os.fsync(fh.fileno())
                    marker.write_text(str(path))
                    time.sleep(600)  # killed here
            write(Half())
        return original(path, half_then_wait, mode)

    fio.atomic_write = atomic_write


def _child(cfg_path: str, attempt: dict, marker: Path) -> None:
    devnull = open(os.devnull, "w")
    sys.stdout = sys.stderr = devnull
    if attempt.get("kind") == "write":
        _pause_inside_write(attempt["file"], marker)
    train(load_config(cfg_path, ["runtime.resume=auto"]), stream=devnull, use_tqdm=False)


def _newest_complete(ckpt_dir: Path) -> int:
    done = [int(p.name[5:12]) for p in ckpt_dir.glob("iter_*.pt.sha256")]
    return max(done, default=0)


def main(cfg_path: str, plan_path: str, report_path: str) -> None:
    plan = json.loads(Path(plan_path).read_text())
    work = Path(load_config(cfg_path).runtime.work_dir)
    ckpt_dir = work / "checkpoints"
    marker = work.parent / (work.name + ".in_write")
    report = []
    for attempt in plan + [{"kind": "none"}]:
        marker.unlink(missing_ok=True)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _child(cfg_path, attempt, marker)
            except BaseException as e:  # noqa: BLE001 — reported through the exit code
                Path(str(marker) + ".error").write_text(f"{type(e).__name__}: {e}")
                code = 3
            os._exit(code)
        killed, t0, start = False, time.time(), _newest_complete(ckpt_dir)
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if attempt["kind"] == "after" and _newest_complete(ckpt_dir) > start:
                time.sleep(attempt["delay"])
                killed = True
            elif attempt["kind"] == "write" and marker.exists():
                killed = True
            if killed:
                at = _newest_complete(ckpt_dir)
                os.kill(pid, signal.SIGKILL)
                _, status = os.waitpid(pid, 0)
                break
            if time.time() - t0 > 900:
                os.kill(pid, signal.SIGKILL)
                raise SystemExit(f"attempt {attempt} did not reach its kill point in 900 s")
            time.sleep(0.02)
        err = Path(str(marker) + ".error")
        report.append({"attempt": attempt, "killed": killed, "newest_checkpoint_at_start": start, "newest_checkpoint_at_kill": at if killed else None,
                       "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                       "exit_code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                       "error": err.read_text() if err.exists() else None})
        err.unlink(missing_ok=True)
    Path(report_path).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:4])
