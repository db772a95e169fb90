"""The demo's code path in its shortened form (--quick), through the real command line, on the
tiny benchmark: three losses trained, the table printed, report and figures written, and nothing
written outside --out."""
import json
import os

import pytest

from focaldet.cli.main import main

pytestmark = pytest.mark.timeout(900)  # a hang guard: the shared CPU can be 5x oversubscribed


def test_demo_quick_end_to_end(tiny_benchmark, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FOCALDET_COMPILE", "0")  # compile warm-up would dominate a 6-iteration run
    paths = tiny_benchmark._asdict()
    overrides = ["data.benchmark=null", *(f"data.{k}={v}" for k, v in paths.items()),
                 "data.num_workers=0", "runtime.threads=1", "runtime.device=cpu"]
    assert main(["demo", "--quick", "--out", "demo", *overrides]) == 0
    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if line.startswith("loss "))
    assert header.split() == ["loss", "runs", "AP", "AP50", "APr", "APc", "APf"]
    for loss in ("focal", "modified_focal", "equalized_focal"):
        assert any(line.split()[:1] == [loss] for line in printed.splitlines()), loss
    assert "report: demo/report.md" in printed
    assert sorted(os.listdir(tmp_path)) == ["demo"]  # nothing outside --out

    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert [a["name"] for a in summary["arms"]] == ["focal", "modified_focal", "equalized_focal"]
    assert all(r["status"] in ("finished", "diverged") for r in summary["runs"])
    plots = {p.name for p in (tmp_path / "demo" / "plots").glob("*.png")}
    assert {"training_loss.png", "detections_val.png", "detections_photos.png"} <= plots
    md = (tmp_path / "demo" / "report.md").read_text()
    assert "plots/detections_photos.png" in md and "## Reproduce" in md
