from __future__ import annotations

import csv
import json
import shutil

import pytest
import torch
import yaml
from PIL import Image

from focaldet.cli.main import build_parser, main
from tests.evaluation.synthetic import pycocotools_eval


@pytest.mark.parametrize("command", ["train", "eval", "predict"])
def test_help_explains_every_option(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    sub = build_parser()._subparsers._group_actions[0].choices[command]
    for action in sub._actions:
        for opt in action.option_strings:
            assert opt in out
        assert action.help, f"{command}: {action.dest} has no help"


@pytest.mark.parametrize("text,override,needle", [
    ("train: {epocs: 3}\n", None, "train.epocs: unknown key"),
    ("train: {base_lr: -1}\n", None, "train.base_lr: -1.0 is out of range"),
    ("data: {batch_size: 0}\n", None, "data.batch_size: 0 is out of range"),
    ("loss: {name: focal}\n", "loss.name=focall", "unknown loss 'focall'"),
    ("loss: {name: focal, gamma: -1}\n", None, "gamma"),
    ("loss: {name: focal, gama: 2}\n", None, "gama"),
    ("train: {amp: fp8}\n", None, "train.amp: 'fp8' is not one of"),
])
def test_config_errors_are_one_line_naming_file_and_key(tmp_path, capsys, text, override, needle):
    p = tmp_path / "bad.yaml"
    p.write_text(text + f"runtime: {{work_dir: {tmp_path / 'run'}}}\n")
    code = main(["train", str(p)] + ([override] if override else []))
    err = capsys.readouterr().err
    assert code == 2
    first = err.splitlines()[0]
    assert first.startswith("focaldet train: error: ") and str(p) in first and needle in first
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()  # nothing started


def test_missing_checkpoint_is_a_clear_error(tiny_config, tmp_path, capsys):
    code = main(["eval", str(tiny_config), "--weights", str(tmp_path / "nope.pt")])
    err = capsys.readouterr().err
    assert code == 2 and "nope.pt: checkpoint file not found" in err and "Traceback" not in err


@pytest.mark.slow
def test_train_eval_predict_end_to_end(tiny_config, tiny_benchmark, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(tiny_config), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "Epoch(train) [1][1/6] (iter 1/4)" in out and "loss_cls:" in out and "eta:" in out
    # run directory per design.md
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["train"]["max_iters"] == 4 and resolved["model"]["head_width"] == 32
    assert resolved["train"]["momentum"] == 0.9  # defaults are written out too
    lines = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in lines if r["type"] == "train"] == [1, 2, 3, 4]
    assert [r["iter"] for r in lines if r["type"] == "eval"] == [2, 4]
    assert {"epoch", "lr", "loss", "loss_cls", "loss_box", "time", "data_time", "memory"} <= set(lines[0])
    gs = [r for r in lines if r["type"] == "grad_stats"]
    assert gs and len(gs[-1]["ratio"]) == len(json.loads(tiny_benchmark.train_ann.read_text())["categories"])
    with open(run / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["type"] for r in rows].count("train") == 4 and "AP" in rows[0]
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "finished" and result["iterations"] == 4 and result["wall_time_s"] > 0
    # the arithmetic and the machine the numbers depend on (the tiny config trains without autocast)
    assert result["precision"] == "float32" and result["world_size"] == 1
    n = torch.get_num_threads()
    assert result["device"].startswith("cpu: ") and result["device"].endswith(f", {n} thread{'s' if n > 1 else ''}")
    assert set(result["metrics"]) >= {"AP", "AP50", "APr", "APc", "APf"}
    final = json.loads((run / "eval" / "final.json").read_text())
    assert final["stats"]["AP"] == result["metrics"]["AP"]
    ckdir = run / "checkpoints"
    assert {"last.pt", "best.pt", "iter_0000004.pt"} <= {p.name for p in ckdir.iterdir()}

    # eval: prints the table, writes results + metrics JSON
    assert main(["eval", str(tiny_config), "--weights", str(ckdir / "last.pt")]) == 0
    out = capsys.readouterr().out
    assert "AP50" in out and "APr" in out and "Per class" in out
    results = json.loads((run / "eval" / "last_results.json").read_text())
    assert isinstance(results, list)
    metrics = json.loads((run / "eval" / "last_metrics.json").read_text())
    assert metrics["stats"]["AP"] == pytest.approx(result["metrics"]["AP"], abs=1e-9)
    assert "class_agnostic" not in metrics

    # --class-agnostic: the same results scored with every class merged, as pycocotools scores the
    # relabelled files
    agn = tmp_path / "agn_results.json"
    # (score threshold 0: four iterations leave every score near the prior, under the default 0.05)
    assert main(["eval", str(tiny_config), "model.inference.score_thresh=0", "--weights", str(ckdir / "last.pt"),
                 "--class-agnostic", "--results", str(agn)]) == 0
    assert "class-agnostic (every class merged into one), points: AP " in capsys.readouterr().out
    merged = json.loads((tmp_path / "agn_metrics.json").read_text())["class_agnostic"]
    gt = json.loads(tiny_benchmark.val_ann.read_text())
    gt["annotations"] = [dict(a, category_id=1) for a in gt["annotations"]]
    gt["categories"] = [{"id": 1, "name": "object"}]
    ref = pycocotools_eval(gt, [dict(r, category_id=1) for r in json.loads(agn.read_text())]).stats
    assert merged["AP"] == pytest.approx(ref[0], abs=1e-12) and merged["AP50"] == pytest.approx(ref[1], abs=1e-12)
    assert merged["AP50"] > 0.01  # a non-trivial case

    # a config with another architecture is refused with the differing key named
    code = main(["eval", str(tiny_config), "model.head_width=64", "--weights", str(ckdir / "last.pt")])
    err = capsys.readouterr().err
    assert code == 2 and "model.head_width=32 in the checkpoint but 64 in the config" in err

    # predict on a folder of photos with a non-image mixed in
    photos = tmp_path / "photos"
    photos.mkdir()
    for p in sorted(tiny_benchmark.val_images.iterdir())[:2]:
        shutil.copy(p, photos / p.name)
    (photos / "notes.txt").write_text("not an image")
    pred = tmp_path / "pred"
    assert main(["predict", "--weights", str(ckdir / "best.pt"), str(photos), "--out", str(pred),
                 "--score-thresh", "0.0"]) == 0
    out = capsys.readouterr().out
    assert "skipped 1 non-image entry" in out
    drawn = sorted(p.name for p in pred.glob("*.jpg"))
    assert len(drawn) == 2
    for p in pred.glob("*.jpg"):
        src = next(photos.glob(p.stem + ".*"))
        assert Image.open(p).size == Image.open(src).size
    res = json.loads((pred / "results.json").read_text())
    assert isinstance(res, list)
    images = json.loads((pred / "images.json").read_text())
    assert len(images["images"]) == 2
    assert {r["image_id"] for r in res} <= {im["id"] for im in images["images"]}

    # refuses to write outside --out: a planted symlink pointing elsewhere
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(b"keep")
    evil = tmp_path / "evil_out"
    evil.mkdir()
    first = sorted(photos.glob("*.*"))[0]
    (evil / f"{first.stem}.jpg").symlink_to(outside)
    code = main(["predict", "--weights", str(ckdir / "best.pt"), str(first), "--out", str(evil)])
    err = capsys.readouterr().err
    assert code == 2 and "outside --out" in err
    assert outside.read_bytes() == b"keep"
