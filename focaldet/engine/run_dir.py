"""A run directory belongs to one run.

- :class:`RunLock`: ``<run_dir>/.lock`` holds the PID and host of the process training there; a
  second ``train`` on the same directory is refused while that process lives. A lock left by a
  process that died (``kill -9``, a power cut) is stale — its PID no longer exists on this host —
  and is taken over.
- :func:`prepare_run_dir`: a fresh run refuses a directory that already holds a run's files
  unless the user asked to resume, or to overwrite (then only this tool's own files are removed).
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import socket
from pathlib import Path
from typing import Optional, Union

from focaldet.errors import FocaldetError

LOCK_NAME = ".lock"
# What a run writes into its directory; --overwrite removes these and nothing else.
RUN_FILES = ("config.yaml", "config_changes.jsonl", "metrics.jsonl", "metrics.csv", "result.json")
RUN_DIRS = ("checkpoints", "eval", "tensorboard")


class RunDirError(FocaldetError):
    """A run directory that is in use, holds another run, or cannot be written."""


class RunInUseError(RunDirError):
    """The run directory is locked by a live process (another ``train``, or another ``compare``
    working through the same comparison)."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _publish(tmp: Path, path: Path, me: dict) -> None:
    """Make ``path`` the lock ``tmp`` holds, atomically; FileExistsError when it exists."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS):
            raise
        # A file system without hard links: exclusive create, then write (the old way; there a
        # reader can catch the file still empty and take it for a stale lock).
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        with os.fdopen(fd, "w") as fh:
            json.dump(me, fh)


class RunLock:
    """Exclusive ownership of a run directory by this process (a context manager)."""

    def __init__(self, run_dir: Union[str, os.PathLike]):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.held = False

    def acquire(self) -> "RunLock":
        make_run_dir(self.run_dir)
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        # Written whole under a private name, then hard-linked to .lock: the link either fails
        # (taken) or publishes a complete file, so no other process can ever read a half-written
        # lock and take it for a dead one (several `compare` processes race for locks all day).
        tmp = self.run_dir / f"{LOCK_NAME}.{me['host']}.{me['pid']}.tmp"
        try:
            tmp.write_text(json.dumps(me))
        except OSError as e:
            raise RunDirError(f"{self.run_dir}: cannot create the run lock: {e.strerror}") from None
        try:
            for _ in range(5):
                try:
                    _publish(tmp, self.path, me)
                except FileExistsError:
                    self._break_if_stale(me["host"])
                    continue
                except OSError as e:
                    raise RunDirError(f"{self.run_dir}: cannot create the run lock: {e.strerror}") from None
                self.held = True
                return self
        finally:
            tmp.unlink(missing_ok=True)
        raise RunDirError(f"{self.run_dir}: could not take the run lock {self.path}")

    def _read_owner(self, path: Optional[Path] = None):
        """``(pid, host)`` from the lock file; None when there is none; "corrupt" when it cannot
        be read (not written by this tool: ours are published whole)."""
        try:
            owner = json.loads((path or self.path).read_text())
            return int(owner["pid"]), str(owner["host"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            return "corrupt"

    def _is_live(self, owner) -> bool:
        if owner is None or owner == "corrupt":
            return False
        pid, host = owner
        return not (host == socket.gethostname() and (pid == os.getpid() or not _pid_alive(pid)))

    def live_owner(self):
        """``(pid, host)`` of the live process that holds this lock, or None (no lock, a stale
        one, or our own). Read-only: ``compare`` uses it to skip runs another process trains."""
        owner = self._read_owner()
        return owner if self._is_live(owner) else None

    def _break_if_stale(self, host: str) -> None:
        owner = self._read_owner()
        if owner is None:
            return  # released meanwhile: try again
        if not self._is_live(owner):
            # Moved aside, not deleted: of several processes that all found the same stale lock
            # only one can rename it, and a fresh lock taken meanwhile is put back untouched.
            aside = self.run_dir / f"{LOCK_NAME}.{socket.gethostname()}.{os.getpid()}.stale"
            try:
                os.rename(self.path, aside)
            except FileNotFoundError:
                return  # another process moved it first
            moved = self._read_owner(aside)
            if self._is_live(moved):  # not the stale lock we looked at: give it back
                try:
                    os.link(aside, self.path)
                except FileExistsError:
                    pass
            aside.unlink(missing_ok=True)
            if not self._is_live(moved):
                return
            owner = moved
        pid, owner_host = owner
        where = "" if owner_host == host else f" on host {owner_host}"
        raise RunInUseError(f"{self.run_dir}: in use by another focaldet train (process {pid}{where})",
                            hint=f"wait for it, choose another runtime.work_dir, or delete {self.path} "
                                 "if that process is really gone")

    def release(self) -> None:
        if self.held:
            # Only a lock that still names this process: never one another process took over.
            if self._read_owner() == (os.getpid(), socket.gethostname()):
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def make_run_dir(run_dir: Path) -> None:
    """Create ``run_dir`` (and parents), with a one-line error when it cannot be."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"runtime.work_dir {run_dir}: exists and is not a folder",
                          hint="choose another runtime.work_dir")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"runtime.work_dir {run_dir}: cannot create it: {e.strerror}",
                          hint="choose a writable runtime.work_dir") from None
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise RunDirError(f"runtime.work_dir {run_dir}: not writable (read-only file system or permissions)",
                          hint="choose a writable runtime.work_dir")


def previous_run_files(run_dir: Path) -> list[str]:
    """Names in ``run_dir`` other than the lock (empty for a new or empty directory)."""
    if not run_dir.is_dir():
        return []
    return sorted(p.name for p in run_dir.iterdir()
                  if p.name != LOCK_NAME and not p.name.startswith(LOCK_NAME + "."))


def prepare_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to start a fresh run in a directory that holds anything, unless resuming; with
    ``overwrite``, first remove the previous run's files (only the names a run writes)."""
    if resume:
        return
    found = previous_run_files(run_dir)
    if not found:
        return
    if not overwrite:
        shown = ", ".join(found[:5]) + (", …" if len(found) > 5 else "")
        raise RunDirError(f"runtime.work_dir {run_dir}: not empty ({shown}); a run directory belongs to one run",
                          hint="continue that run with --resume, start over with --overwrite, or choose "
                               "another runtime.work_dir")
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    for name in RUN_DIRS:
        if (run_dir / name).is_dir() and not (run_dir / name).is_symlink():
            shutil.rmtree(run_dir / name)
