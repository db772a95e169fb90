"""A tiny real comparison (2 losses × 2 seeds, a few iterations on the tiny benchmark): the report
matches the runs' own result files, and an interrupted comparison resumes without redoing
finished runs."""
import json
import math
import shutil
import statistics
import sys
import time
from pathlib import Path

import pytest

from focaldet.analysis.arms import CompareError, build_arms
from focaldet.analysis.compare import compare
from focaldet.analysis.runs import METRICS
from focaldet.config import ConfigError

pytestmark = pytest.mark.timeout(900)  # a hang guard: the shared CPU can be 5x oversubscribed

TINY_CONFIG = """
model: {{backbone: resnet18, fpn_channels: 32, head_depth: 1, head_width: 32, frozen_stages: 0, norm: bn}}
loss: {{name: focal}}
data:
  train_ann: {train_ann}
  train_images: {train_images}
  val_ann: {val_ann}
  val_images: {val_images}
  train_sizes: [128]
  max_size: 160
  test_size: 128
  batch_size: 4
  num_workers: 0
train: {{max_iters: 3, warmup_iters: 1, milestones: [2], eval_interval: 0, ckpt_interval: 3, base_lr: 0.01, base_batch: 4}}
runtime: {{device: cpu, threads: 1, log_interval: 1}}
"""


@pytest.fixture(scope="module")
def tiny(tiny_benchmark, tmp_path_factory):
    # The losses' torch.compile warm-up costs more than these 3-iteration runs; eager is the same math.
    mp = pytest.MonkeyPatch()
    mp.setenv("FOCALDET_COMPILE", "0")
    root = tmp_path_factory.mktemp("cmp")
    cfg = root / "tiny.yaml"
    cfg.write_text(TINY_CONFIG.format(**{k: str(v) for k, v in tiny_benchmark._asdict().items()}))
    arms = build_arms(["focal", "equalized_focal"])
    out = root / "out"
    result = compare(cfg, arms, [0, 1], out, detections=False, command="focaldet compare tiny.yaml")
    yield cfg, arms, out, result
    mp.undo()


def _table_rows(md: str, section: str) -> list[list[str]]:
    part = md.split(f"## {section}")[1].split("\n## ")[0]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in part.splitlines() if line.startswith("|")]
    return rows[2:]  # header and rule


def _pts(v, digits):
    return "—" if v is None or not math.isfinite(v) else f"{100 * v:.{digits}f}"


def test_report_matches_the_runs_result_files(tiny):
    _, arms, out, result = tiny
    md = (out / "report.md").read_text()
    results = {}
    for arm in ("focal", "equalized_focal"):
        for seed in (0, 1):
            r = json.loads((out / "runs" / arm / f"seed{seed}" / "result.json").read_text())
            assert r["status"] == "finished" and r["iterations"] == 3
            cfg_text = (out / "runs" / arm / f"seed{seed}" / "config.yaml").read_text()
            assert f"name: {arm}" in cfg_text and f"seed: {seed}" in cfg_text
            results[(arm, seed)] = {m: (math.nan if r["metrics"].get(m) is None else r["metrics"][m]) for m in METRICS}
    # one row per run, every metric equal to the run's own result.json (to the printed 2 decimals)
    rows = {(r[0], int(r[1])): r for r in _table_rows(md, "Individual runs")}
    assert set(rows) == set(results)
    for key, metrics in results.items():
        assert rows[key][4:] == [_pts(metrics[m], 2) for m in METRICS]
    # per-loss mean ± std over the two seeds, computed here with the standard library
    summary_rows = {r[0]: r for r in _table_rows(md, "Results: mean ± std over seeds")}
    for arm in ("focal", "equalized_focal"):
        assert summary_rows[arm][1] == "2/2"
        for i, m in enumerate(METRICS):
            vals = [results[(arm, s)][m] for s in (0, 1) if math.isfinite(results[(arm, s)][m])]
            if len(vals) == 2:
                want = f"{100 * statistics.mean(vals):.1f} ± {100 * statistics.stdev(vals):.1f}"
            elif len(vals) == 1:
                want = f"{100 * vals[0]:.1f}"
            else:
                want = "—"
            assert summary_rows[arm][2 + i] == want, (arm, m)
    # paired AP difference by seed, with the t interval for 1 degree of freedom
    s = json.loads((out / "summary.json").read_text())
    d = next(a for a in s["arms"] if a["name"] == "equalized_focal")["diff"]["AP"]
    diffs = [results[("equalized_focal", k)]["AP"] - results[("focal", k)]["AP"] for k in (0, 1)]
    half = 12.706204736174707 * statistics.stdev(diffs) / math.sqrt(2)
    assert d["mean"] == pytest.approx(statistics.mean(diffs), abs=1e-12)
    assert d["ci_low"] == pytest.approx(statistics.mean(diffs) - half, abs=1e-9)
    # reproducibility block and the figures the runs have data for
    assert "focaldet compare tiny.yaml" in md and "torchvision" in md
    for name in ("training_loss.png", "ap_vs_frequency.png", "grad_ratio.png", "efl_gamma.png"):
        assert (out / "plots" / name).stat().st_size > 10_000, name
        assert f"plots/{name}" in md
    assert (out / "report.html").read_text().count("<table>") >= 4


def test_interrupted_compare_resumes_without_redoing_finished_runs(tiny):
    cfg, arms, out, _ = tiny
    victim = out / "runs" / "equalized_focal" / "seed1"
    shutil.rmtree(victim)  # as if the comparison had been killed before this run started
    half = out / "runs" / "focal" / "seed1"
    (half / "result.json").unlink()  # killed after the last checkpoint, before result.json
    kept = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/seed0/**/*") if p.is_file()}
    assert kept
    result = compare(cfg, arms, [0, 1], out, detections=False, plots=False, command="focaldet compare tiny.yaml")
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # finished runs untouched
    assert json.loads((victim / "result.json").read_text())["status"] == "finished"
    resumed = json.loads((half / "result.json").read_text())
    assert resumed["resumed_from"] is not None  # continued from its checkpoint, not retrained
    assert all(r.status == "finished" for r in result.records)
    rows = _table_rows((out / "report.md").read_text(), "Individual runs")
    assert len(rows) == 4 and all(r[2] == "finished" for r in rows)


def test_two_processes_share_a_comparison_through_the_run_locks(tiny):
    """A run locked by a live process (here a `sleep`, standing in for a second `compare` on the
    same folder) is skipped, not trained twice; once that process is gone the lock is stale and
    the same command trains the run."""
    import socket
    import subprocess

    cfg, arms, out, _ = tiny
    busy = out / "runs" / "focal" / "seed1"
    (busy / "result.json").unlink()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        (busy / ".lock").write_text(json.dumps({"pid": other.pid, "host": socket.gethostname()}))
        lines = []
        result = compare(cfg, arms, [0, 1], out, detections=False, plots=False, log=lines.append, command="c")
        assert any("skipped focal seed 1: another process is training it" in line for line in lines)
        assert not any("training focal seed 1" in line for line in lines)
        assert not (busy / "result.json").exists() and (busy / ".lock").exists()
        assert [r.status for r in result.records].count("missing") == 1
    finally:
        other.kill()
        other.wait()
    result = compare(cfg, arms, [0, 1], out, detections=False, plots=False, command="c")
    assert json.loads((busy / "result.json").read_text())["status"] == "finished"
    assert all(r.status == "finished" for r in result.records)
    assert not (busy / ".lock").exists()  # released after training


def _losses(out) -> dict:
    """Every run's training losses, iteration by iteration (the AP of 3-iteration runs is 0)."""
    losses = {}
    for path in sorted(out.glob("runs/*/seed*/metrics.jsonl")):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        losses[path.parent.relative_to(out).as_posix()] = [
            (r["iter"], r["loss"], r["loss_cls"], r["loss_box"]) for r in rows if r["type"] == "train"]
    return losses


def _wait_for_a_worker_run(monkeypatch, out):
    """Hold this process's first pass over the runs until worker 1 has taken a run: 3-iteration
    runs are over before a worker has imported torch, and the test is about sharing them."""
    from focaldet.analysis import compare as compare_mod

    real = compare_mod.execute
    calls = []

    def execute(specs, **kw):
        if not calls:
            log = out / "workers" / "worker1.log"
            deadline = time.time() + 300
            while time.time() < deadline and not (log.is_file() and "training " in log.read_text()):
                time.sleep(0.05)
        calls.append(1)
        return real(specs, **kw)

    monkeypatch.setattr(compare_mod, "execute", execute)


def test_workers_share_the_runs_and_give_the_sequential_results(tiny, tmp_path, monkeypatch):
    """`--workers 2`: this process and one worker process train the comparison; every run is
    trained once, by one of them, and ends exactly as in the one-process comparison."""
    cfg, arms, _, sequential = tiny
    out = tmp_path / "two"
    _wait_for_a_worker_run(monkeypatch, out)
    lines = []
    result = compare(cfg, arms, [0, 1], out, detections=False, plots=False, log=lines.append, command="c", workers=2)
    assert all(r.status == "finished" for r in result.records)
    assert _losses(out) == _losses(sequential.out) and len(_losses(out)) == 4
    worker_log = (out / "workers" / "worker1.log").read_text()
    assert "compare worker pid" in worker_log and "exited with code" not in "\n".join(lines)
    for arm in arms:
        for seed in (0, 1):
            needle = f"training {arm.title} seed {seed} ->"
            assert sum(needle in line for line in lines) + worker_log.count(needle) == 1, needle
    assert 1 <= worker_log.count("training ") <= 3  # both processes trained
    assert (out / "report.md").is_file()


def test_a_worker_trains_the_plan_it_is_given(tiny, tmp_path):
    """`python -m focaldet.analysis.workers OUT/plan.json` on its own: it trains every run of the
    plan with the plan's configs (the one-process results, to the bit); the report then finds
    nothing left to train."""
    import subprocess

    cfg, arms, _, sequential = tiny
    out = tmp_path / "plan_only"
    compare(cfg, arms, [0, 1], out, plots=False, train=False, command="c")  # the plan, no run
    assert not list(out.glob("runs/*/seed*/result.json"))
    subprocess.run([sys.executable, "-m", "focaldet.analysis.workers", str(out / "plan.json")],
                   check=True, timeout=600, capture_output=True)
    result = compare(cfg, arms, [0, 1], out, plots=False, train=False, command="c")
    assert all(r.status == "finished" for r in result.records)
    assert _losses(out) == _losses(sequential.out) and len(_losses(out)) == 4


# A worker killed at the worst moment: it has taken the last run, trained it and written its final
# checkpoint, and dies (exit 3) holding the run's lock, before result.json.
_DYING_WORKER = """
import os, sys
from focaldet.analysis.compare import execute
from focaldet.analysis.workers import specs_from_plan
from focaldet.engine import trainer

def die(*args, **kwargs):
    print("killed after the final checkpoint", flush=True)
    os._exit(3)

trainer.finish = die
execute(specs_from_plan(sys.argv[1])[::-1])
"""


def test_a_worker_killed_holding_a_run_loses_nothing(tiny, tmp_path, monkeypatch):
    """The calling process skips the run while the worker lives, then breaks its stale lock and
    resumes the run from the worker's checkpoint: every run ends as in the one-process comparison."""
    from focaldet.analysis import workers

    cfg, arms, _, sequential = tiny
    out = tmp_path / "killed"
    monkeypatch.setattr(workers, "worker_command", lambda plan: [sys.executable, "-u", "-c", _DYING_WORKER, str(plan)])
    _wait_for_a_worker_run(monkeypatch, out)
    lines = []
    result = compare(cfg, arms, [0, 1], out, detections=False, plots=False, log=lines.append, command="c", workers=2)
    assert all(r.status == "finished" for r in result.records)
    assert _losses(out) == _losses(sequential.out) and len(_losses(out)) == 4
    assert any("exited with code 3" in line and "killed after the final checkpoint" in line for line in lines)
    victim = out / "runs" / "equalized_focal" / "seed1"
    assert any("resuming equalized_focal seed 1" in line for line in lines), lines
    assert json.loads((victim / "result.json").read_text())["resumed_from"] is not None
    assert not list(out.glob("runs/*/seed*/.lock*"))


def test_a_failed_worker_loses_no_run(tiny, tmp_path, monkeypatch):
    """A worker that dies (here one that exits 1 at once, as a crash on start-up would): the
    calling process trains every run itself, says which worker failed, and the results are the
    one-process ones."""
    from focaldet.analysis import workers

    cfg, arms, _, sequential = tiny
    monkeypatch.setattr(workers, "worker_command",
                        lambda plan: [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"])
    out = tmp_path / "failed"
    lines = []
    result = compare(cfg, arms, [0, 1], out, detections=False, plots=False, log=lines.append, command="c", workers=2)
    assert all(r.status == "finished" for r in result.records)
    assert _losses(out) == _losses(sequential.out) and len(_losses(out)) == 4
    assert any("exited with code 3" in line and "boom" in line for line in lines)


def test_a_worker_refuses_a_file_that_is_not_a_plan(tmp_path):
    from focaldet.analysis.workers import specs_from_plan

    bad = tmp_path / "plan.json"
    bad.write_text(json.dumps({"arms": [], "runs": {"focal/seed0": {}}}))
    with pytest.raises(CompareError, match=r"plan.json: run 'focal/seed0' names no arm of the plan"):
        specs_from_plan(bad)
    with pytest.raises(CompareError, match=r"no such plan"):
        specs_from_plan(tmp_path / "missing.json")
    bad.write_text(json.dumps({"arms": [{"name": "focal", "loss": "focal", "params": {}, "overrides": []}],
                               "runs": {"focal/0": {}}}))
    with pytest.raises(CompareError, match=r"run 'focal/0' is not '<arm>/seed<N>'"):
        specs_from_plan(bad)


def test_a_worker_started_in_another_folder_is_refused(tiny, tmp_path, monkeypatch):
    """A plan's run folders are relative to where `compare` ran: a worker started elsewhere would
    train a second copy of every run there, so it stops with the key and the folder."""
    from focaldet.analysis.workers import specs_from_plan

    cfg, arms, _, _ = tiny
    monkeypatch.chdir(tmp_path)
    compare(cfg, arms, [0], Path("rel"), plots=False, train=False, command="c")  # the plan only
    assert len(specs_from_plan(Path("rel") / "plan.json")) == 2
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    with pytest.raises(CompareError, match=r"runs.focal/seed0.runtime.work_dir rel/runs/focal/seed0 is not inside"):
        specs_from_plan(tmp_path / "rel" / "plan.json")


def test_rerun_with_another_config_is_refused(tiny):
    cfg, arms, out, _ = tiny
    with pytest.raises(CompareError, match=r"run focal/seed0 was started with another config \(train.max_iters"):
        compare(cfg, arms, [0, 1], out, overrides=["train.max_iters=4"], plots=False)


def test_report_only_reports_missing_runs_without_training(tiny):
    cfg, arms, out, _ = tiny
    gone = out / "runs" / "focal" / "seed1"
    shutil.rmtree(gone)
    result = compare(cfg, arms, [0, 1], out, plots=False, train=False, command="c")
    assert not gone.exists()  # nothing trained
    assert [r.status for r in result.records].count("missing") == 1
    row = next(r for r in _table_rows((out / "report.md").read_text(), "Results: mean ± std over seeds")
               if r[0] == "focal")
    assert row[1] == "1/2 (1 not run)"


@pytest.mark.parametrize("losses,sweeps,per_loss,needle", [
    (["focal"], ["focal.gamma=1,-1"], None,
     "[focal-gamma-1, seed 0]: loss.gamma: loss 'focal': parameter 'gamma' must satisfy 0 <= gamma"),
    (["focal", "modified_focal"], [], {"modified_focal": {"gama": 1}},
     "[modified_focal, seed 0]: loss.gama: loss 'modified_focal': unknown parameter(s) gama"),
])
def test_an_arm_with_a_bad_loss_parameter_is_refused_at_plan_time(tmp_path, losses, sweeps, per_loss, needle):
    """Checked by the config's own loss check when the runs are planned: nothing trained, no plan written."""
    arms = build_arms(losses, sweeps, per_loss)
    trained = []
    with pytest.raises(ConfigError) as e:
        compare(None, arms, [0, 1], tmp_path / "out", train_fn=lambda cfg, **kw: trained.append(cfg), plots=False)
    assert needle in str(e.value)
    assert not trained and not (tmp_path / "out" / "plan.json").exists()


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_the_workers_stop_when_compare_is_stopped(tiny, tmp_path, how):
    """`kill` (SIGTERM: compare stops its workers on the way out) or `kill -9` (nothing runs in
    compare: the kernel tells the worker its parent died): no worker trains on alone."""
    import os
    import signal
    import subprocess

    cfg, _, _, _ = tiny
    out = tmp_path / "stopped"
    env = dict(os.environ, FOCALDET_COMPILE="0")
    main = subprocess.Popen([sys.executable, "-m", "focaldet", "compare", str(cfg), "--losses", "focal",
                             "--seeds", "2", "--out", str(out), "--workers", "2", "--no-plots",
                             "train.max_iters=5000", "train.milestones=[4000]"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    log = out / "workers" / "worker1.log"
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not (log.is_file() and "training " in log.read_text()):
            assert main.poll() is None
            time.sleep(0.1)
        worker = int(log.read_text().split("compare worker pid ")[1].split(":")[0])
        main.send_signal(getattr(signal, how))
        main.wait(timeout=120)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                os.kill(worker, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.kill(worker, signal.SIGKILL)
            pytest.fail(f"worker {worker} still trains {60} s after compare got {how}")
    finally:
        if main.poll() is None:
            main.kill()
            main.wait()
