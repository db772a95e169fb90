"""The run-directory lock under contention: several processes (`compare --workers N`) race for the
same locks, stale ones included, and at most one of them may hold a run at any moment."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from focaldet.engine.run_dir import RunInUseError, RunLock

# Each contender takes the lock many times; inside it checks the file names itself, appends
# "in"/"out" lines to a shared journal (O_APPEND: whole lines), and between turns sometimes
# leaves a stale lock behind for the others to break.
_CONTENDER = textwrap.dedent("""
    import json, os, socket, subprocess, sys, time
    from focaldet.engine.run_dir import RunInUseError, RunLock
    run, journal, dead = sys.argv[1], sys.argv[2], int(sys.argv[3])
    me = os.getpid()
    got = 0
    deadline = time.time() + 120
    while got < 40 and time.time() < deadline:
        lock = RunLock(run)
        try:
            lock.acquire()
        except RunInUseError:
            continue
        with open(journal, "a") as fh:
            fh.write(f"in {me}\\n")
        owner = json.loads(lock.path.read_text())
        assert owner["pid"] == me, owner
        with open(journal, "a") as fh:
            fh.write(f"out {me}\\n")
        if got % 5 == 4:  # die with the lock held, as a killed worker would
            lock.path.write_text(json.dumps({"pid": dead, "host": socket.gethostname()}))
            lock.held = False
        else:
            lock.release()
        got += 1
    print(got)
""")


def test_racing_processes_never_hold_one_run_lock_together(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its PID names no process now: a lock naming it is stale
    run, journal = tmp_path / "run", tmp_path / "journal"
    run.mkdir()
    (run / ".lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", _CONTENDER, str(run), str(journal), str(dead.pid)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(4)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-2000:] for _, e in outs]
    assert all(int(o.split()[-1]) == 40 for o, _ in outs), outs
    holder = None
    for line in journal.read_text().splitlines():
        what, pid = line.split()
        if what == "in":
            assert holder is None, f"process {pid} took the lock while {holder} held it"
            holder = pid
        else:
            assert holder == pid
            holder = None
    assert len(journal.read_text().splitlines()) == 4 * 40 * 2
    assert sorted(p.name for p in run.iterdir()) == [".lock"]  # no private file left behind


def test_a_live_lock_found_by_a_late_breaker_is_put_back(tmp_path):
    """Two processes found the same stale lock; one broke it and took the run; the other, acting
    on what it saw a moment ago, must not remove the new owner's lock."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run = tmp_path / "run"
        run.mkdir()
        live = json.dumps({"pid": sleeper.pid, "host": socket.gethostname()})
        (run / ".lock").write_text(live)
        late = RunLock(run)
        late._read_owner = lambda path=None, real=late._read_owner: (
            (2 ** 22 + 1, socket.gethostname()) if path is None else real(path))  # its stale view
        with pytest.raises(RunInUseError, match=str(sleeper.pid)):
            late._break_if_stale(socket.gethostname())
        assert (run / ".lock").read_text() == live
        assert sorted(p.name for p in run.iterdir()) == [".lock"]
    finally:
        sleeper.kill()
        sleeper.wait()


def test_release_leaves_a_lock_another_process_took_over(tmp_path):
    lock = RunLock(tmp_path / "run").acquire()
    other = json.dumps({"pid": os.getpid() + 1, "host": "elsewhere"})
    lock.path.write_text(other)  # e.g. this process was presumed dead and its run taken over
    lock.release()
    assert lock.path.read_text() == other
    mine = RunLock(tmp_path / "mine").acquire()
    mine.release()
    assert not mine.path.exists()
