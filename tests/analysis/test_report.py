"""Summary tables and report rendering, on run records with known numbers (hand-computed
expectations written out below)."""
import math
import re
from pathlib import Path

import pytest

from focaldet.analysis.arms import Arm, build_arms
from focaldet.analysis.presets import paper_table1_claims
from focaldet.analysis.report import build_blocks, console_table, to_html, to_markdown
from focaldet.analysis.runs import METRICS, RunRecord
from focaldet.analysis.summary import summarize_runs


def _rec(arm, seed, ap, status="finished", diverged_at=None):
    metrics = {m: ap for m in METRICS}
    metrics["APr"] = float("nan")  # an empty rare group
    return RunRecord(arm, seed, Path(f"/x/{arm}/seed{seed}"), status, metrics if status == "finished" else {},
                     iterations=100 if status == "finished" else diverged_at, diverged_at=diverged_at,
                     message="training diverged at iteration 17: non-finite loss" if status == "diverged" else "")


@pytest.fixture
def summary():
    arms = build_arms(["focal", "equalized_focal"])
    records = [_rec("focal", 0, 0.30), _rec("focal", 1, 0.32), _rec("focal", 2, 0.34),
               _rec("equalized_focal", 0, 0.35), _rec("equalized_focal", 1, 0.0, "diverged", 17),
               _rec("equalized_focal", 2, 0.41)]
    return summarize_runs(records, arms, "focal")


def _row(md: str, section: str, first_cell: str) -> list[str]:
    part = md.split(f"## {section}")[1].split("\n## ")[0]
    for line in part.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in section {section!r}")


def test_summary_and_markdown_tables(summary):
    md = to_markdown(build_blocks(summary, title="t", command="focaldet compare x", versions={"torch": "2"},
                                  config={"train": {"epochs": 1}}))
    focal = _row(md, "Results", "focal")
    # mean 32.0, sample std 2.0 (points); APr has no value at all
    assert focal[1] == "3/3" and focal[2] == "32.0 ± 2.0" and focal[2 + METRICS.index("APr")] == "—"
    efl = _row(md, "Results", "equalized_focal")
    assert efl[1] == "2/3 (1 diverged)"
    assert efl[2] == "38.0 ± 4.2"  # seeds 0 and 2: mean 0.38, std sqrt(0.0018) = 0.0424
    ci = _row(md, "95 % confidence intervals", "focal")[1]
    half = 4.302652729911275 * 0.02 / math.sqrt(3)
    assert ci == f"[{100 * (0.32 - half):.1f}, {100 * (0.32 + half):.1f}]" == "[27.0, 37.0]"
    # paired by seed: seeds 0 and 2 only (seed 1 diverged): diffs 0.05 and 0.07 -> mean 0.06, std 0.01414
    diff = _row(md, "Paired differences", "equalized_focal")
    half = 12.706204736174707 * math.sqrt(0.0002) / math.sqrt(2)
    assert diff[1] == "2"
    assert diff[2] == f"+6.0 [{100 * (0.06 - half):+.1f}, {100 * (0.06 + half):+.1f}]"
    assert not diff[2].startswith("**")  # CI [-12.0, +24.0] contains 0: not bold
    dv = _row(md, "Diverged runs", "equalized_focal")
    assert dv[1:3] == ["1", "17"] and "non-finite" in dv[3]
    run = _row(md, "Individual runs", "focal")
    assert run[1:4] == ["0", "finished", "100"] and run[4] == "30.00"
    assert "focaldet compare x" in md and "torch 2" in md and "epochs: 1" in md


def test_html_says_the_same(summary):
    blocks = build_blocks(summary, title="t <b>", command="c", versions={}, config={})
    html = to_html(blocks, "t <b>")
    assert "<td>32.0 ± 2.0</td>" in html and "<td>2/3 (1 diverged)</td>" in html
    assert "t &lt;b&gt;" in html  # escaped


def test_console_table(summary):
    text = console_table(summary)
    assert re.search(r"focal\s+3/3\s+32\.0 ± 2\.0", text)


def _claims_summary(values: dict[str, list], diverged=()):
    names = list(values)
    arms = [Arm(name=n, loss="focal") for n in names]
    recs = []
    for n, vals in values.items():
        for s, v in enumerate(vals):
            st = "diverged" if (n, s) in diverged else "finished"
            recs.append(RunRecord(n, s, Path("/x"), st, {"AP": v} if st == "finished" else {}, diverged_at=5))
    return summarize_runs(recs, arms, names[0])


def test_paper_claim_verdicts():
    s = _claims_summary({
        "focal_g2": [0.40, 0.42, 0.41], "bce_a0.75": [0.30, 0.33, 0.31], "bce_a0.5": [0.30, 0.33, 0.31],
        "bce_a0.99": [0.35, 0.38, 0.36], "focal_g0.5": [0.45, 0.46, 0.47], "focal_g5": [0.39, 0.43, 0.40],
        "ohem_3to1": [0.1, 0.1, 0.1], "bce_prior": [0.2, 0.2, 0.2], "bce_noprior": [0, 0, 0]},
        diverged={("bce_noprior", s) for s in range(3)})
    verdicts = [c["verdict"] for c in paper_table1_claims(s)]
    # 0.75 vs 0.5: identical -> differences all 0 -> CI degenerate at 0 -> inconclusive
    assert verdicts[0] == "inconclusive"
    assert verdicts[1] == "not held"  # α=0.75 is worse than α=0.99 here, every seed by 5 points
    assert verdicts[2] == "held"  # focal γ=2 beats bce α=.75 by ~10 points on every seed
    assert verdicts[3] == "not held"  # γ=0.5 better here
    assert verdicts[4] == "inconclusive"  # γ=5 diffs 0.01, -0.01, 0.01
    assert verdicts[5] == "held"
    assert verdicts[6] == "held" and "3/3 runs diverged" in paper_table1_claims(s)[6]["evidence"]


def test_a_claim_names_the_diverged_runs_it_leaves_out_and_prior_divergence_is_not_held():
    """A diverged run has no AP: its seed drops out of the paired difference, and the evidence
    says which. If the prior-init runs diverge as often as the others, §5.1 does not hold."""
    s = _claims_summary({
        "focal_g2": [0.40, 0.42, 0.41], "bce_a0.75": [0.30, 0.33, 0.31], "bce_a0.5": [0.30, 0.33, 0.31],
        "bce_a0.99": [0.35, 0.38, 0.36], "focal_g0.5": [0.45, 0.46, 0.47], "focal_g5": [0.20, 0.43, 0.40],
        "ohem_3to1": [0.1, 0.1, 0.1], "bce_prior": [0.2, 0.2, 0.2], "bce_noprior": [0, 0, 0]},
        diverged={("focal_g5", 0), ("bce_noprior", 0), ("bce_noprior", 1), ("bce_prior", 1), ("bce_prior", 2)})
    claims = paper_table1_claims(s)
    g5 = claims[4]
    assert "1 seed, no CI" not in g5["evidence"] and "2 seeds" in g5["evidence"]  # seeds 1, 2 only
    assert g5["evidence"].endswith("left out, diverged: focal_g5 seed 0")
    assert "left out" not in claims[3]["evidence"]
    assert claims[6]["verdict"] == "not held (with the prior init as many runs diverged)"
    assert "no prior: 2/3 runs diverged; prior: 2/3 diverged" in claims[6]["evidence"]


def test_the_divergence_claim_counts_only_runs_that_ended():
    """A comparison in progress: the no-prior runs of seeds 1 and 2 have not run. One run that
    did not diverge is no verdict on "diverges", and the evidence counts ended runs only."""
    names = ["focal_g2", "bce_prior", "bce_noprior"]
    recs = [RunRecord(n, 0, Path("/x"), "finished", {"AP": v}) for n, v in zip(names, (0.40, 0.2, 0.01))]
    recs += [RunRecord(n, seed, Path("/x"), "missing", {}) for n in names[1:] for seed in (1, 2)]
    s = summarize_runs(recs, [Arm(name=n, loss="focal") for n in names], names[0])
    claim = paper_table1_claims(s)[6]
    assert claim["verdict"] == "inconclusive"
    assert "no prior: 0/1 runs diverged; prior: 0/1 diverged" in claim["evidence"]
    assert "(4 runs not ended)" in claim["evidence"]


def test_report_names_precision_and_machine_of_each_run(tmp_path):
    """Runs read back from their result.json files are grouped by the precision and machine they
    recorded; a result.json from before the fields existed is said to be unrecorded."""
    import json

    from focaldet.analysis.runs import machine_lines, read_run

    def write(name, **extra):
        d = tmp_path / name
        d.mkdir()
        (d / "result.json").write_text(json.dumps({"status": "finished", "iterations": 10,
                                                   "metrics": {"AP": 0.1}, **extra}))
        return read_run(d, name, 0)

    amd = {"precision": "float32", "device": "cpu: AMD EPYC, 2 threads"}
    records = [write("a", **amd), write("b", **amd),
               write("c", precision="bfloat16", device="cpu: Intel Xeon, 2 threads", world_size=2),
               write("d"), read_run(tmp_path / "never_ran", "e", 0)]
    lines = machine_lines(records)
    assert lines == ["2 runs: float32 on cpu: AMD EPYC, 2 threads",
                     "1 run: bfloat16 on cpu: Intel Xeon, 2 threads × 2 processes",
                     "1 run: not recorded (written by an older focaldet)"]

    arms = build_arms(["focal"])
    summary = summarize_runs([_rec("focal", 0, 0.3)], arms, "focal")
    md = to_markdown(build_blocks(summary, title="t", command="focaldet compare x", versions={"torch": "2"},
                                  config={}, machines=lines))
    reproduce = md.split("## Reproduce")[1]
    assert "- 2 runs: float32 on cpu: AMD EPYC, 2 threads" in reproduce
    assert "- 1 run: not recorded (written by an older focaldet)" in reproduce
