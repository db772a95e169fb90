"""Issue 14, one line where the README promises it: hostile values and paths end in one short
error line (never a traceback, never a message the size of the input), and one bad image does not
cost the others their results."""
from __future__ import annotations

import json

import pytest

from PIL import Image

from focaldet.cli.main import main
from focaldet.engine.checkpoint import save_checkpoint

from .test_corpus import _one_line_error, _predict, good_checkpoint, photos  # noqa: F401 — fixtures

# 9 levels of 9 references: 387 million leaves if anything expands it (repr, a loop over it).
ALIAS_BOMB = "[" + ", ".join(
    ["&a0 [x, x, x, x, x, x, x, x, x]"]
    + [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]) + "]"


@pytest.mark.parametrize("override,needle", [
    ("runtime.seed=" + str(10**30), "runtime.seed"),
    ("runtime.seed=-1", "runtime.seed"),
    ("a." * 50_000 + "b=1", "too many dots"),
    ("train.milestones=" + "[" * 50_000 + "]" * 50_000, "train.milestones"),
    ("loss.alpha=" + ALIAS_BOMB, "loss.alpha"),
    ("train.milestones=" + ALIAS_BOMB, "train.milestones"),
    ("model.anchors.sizes=" + ALIAS_BOMB, "model.anchors.sizes"),
    ("train.base_lr=" + "9" * 5000, "train.base_lr"),
    ("runtime.work_dir=" + ALIAS_BOMB, "runtime.work_dir"),
])
def test_hostile_override_values_give_one_short_line(write_tiny_config, tmp_path, capsys, override, needle):
    cfg = write_tiny_config(work_dir=tmp_path / "run")
    line = _one_line_error(capsys, main(["train", str(cfg), override]), needle)
    assert len(line) < 400, line[:400]
    assert not (tmp_path / "run").exists()


def test_an_alias_bomb_inside_the_config_file(tmp_path, capsys):
    cfg = tmp_path / "bomb.yaml"
    cfg.write_text(f"loss: {{name: focal, gamma: {ALIAS_BOMB}}}\nruntime: {{work_dir: {tmp_path / 'run'}}}\n")
    line = _one_line_error(capsys, main(["train", str(cfg)]), str(cfg), "loss.gamma")
    assert len(line) < 400


def test_a_config_file_that_is_not_text(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(b"\xff\xfe\x00model\x00")
    _one_line_error(capsys, main(["train", str(cfg)]), str(cfg), "not a UTF-8 text file")


# ------------------------------------------------------------------------------------------
# predict
# ------------------------------------------------------------------------------------------
def test_predict_out_that_is_a_file(good_checkpoint, photos, tmp_path, capsys):  # noqa: F811
    f = tmp_path / "out.txt"
    f.write_text("mine\n")
    _one_line_error(capsys, _predict(good_checkpoint[0], [photos], f), "exists and is not a folder")
    assert f.read_text() == "mine\n"


@pytest.mark.parametrize("value", ["0", "-5", "100000"])
def test_predict_test_size_out_of_range(good_checkpoint, photos, tmp_path, capsys, value):  # noqa: F811
    code = main(["predict", "--weights", str(good_checkpoint[0]), str(photos), "--out", str(tmp_path / "o"),
                 "--test-size", value])
    _one_line_error(capsys, code, f"--test-size {value}")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("value", ["nan", "-0.1", "inf"])
def test_predict_score_thresh_out_of_range(good_checkpoint, photos, tmp_path, capsys, value):  # noqa: F811
    code = main(["predict", "--weights", str(good_checkpoint[0]), str(photos), "--out", str(tmp_path / "o"),
                 "--score-thresh", value])
    _one_line_error(capsys, code, "--score-thresh")


def test_an_image_too_wide_for_jpeg_keeps_everyone_s_results(good_checkpoint, photos, tmp_path, capsys):  # noqa: F811
    Image.new("RGB", (66_000, 48), (120, 90, 60)).save(photos / "panorama.png")
    out = tmp_path / "out"
    assert _predict(good_checkpoint[0], [photos], out) == 0
    printed = capsys.readouterr()
    assert "panorama.png: drawing not written" in printed.out
    records = {r["file_name"].rsplit("/", 1)[-1]: r for r in json.loads((out / "images.json").read_text())["images"]}
    assert records["panorama.png"]["output"] is None
    assert all(r["output"] for name, r in records.items() if name != "panorama.png")
    assert json.loads((out / "results.json").read_text()) is not None
    assert "Traceback" not in printed.err


def test_predict_prints_no_warning_per_image(good_checkpoint, photos, tmp_path, capsys):  # noqa: F811
    for i, p in enumerate(sorted(photos.iterdir())):
        for k in range(1):
            (photos / f"copy{i}_{k}{p.suffix}").write_bytes(p.read_bytes())
    assert _predict(good_checkpoint[0], [photos], tmp_path / "out") == 0
    captured = capsys.readouterr()
    assert "warn" not in captured.err.lower(), captured.err
    assert captured.out.count("warning:") == 0


# ------------------------------------------------------------------------------------------
# checkpoints with malformed plain fields
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field,value,needle", [
    ("config", "garbage", "field 'config'"),
    ("config", {"model": "x"}, "field 'config'"),
    ("class_names", "abc", "field 'class_names'"),
    ("class_names", [1, 2], "field 'class_names'"),
    ("class_names", [], "field 'class_names'"),
    ("cat_ids", "12", "field 'cat_ids'"),
    ("cat_ids", [1], "field 'cat_ids'"),  # not one per class
    ("cat_ids", None, None),  # absent: allowed (ids 0..K-1)
    ("iter", "7", "field 'iter'"),
    ("iter", -1, "field 'iter'"),
    ("model", {"w": [1, 2]}, "field 'model'"),
])
def test_checkpoint_with_malformed_fields(good_checkpoint, photos, tmp_path, capsys, field, value, needle):  # noqa: F811
    good, state, _ = good_checkpoint
    bad_state = dict(state)
    if field == "cat_ids" and value is None:
        bad_state.pop("cat_ids")
    elif field == "cat_ids" and value == [1]:
        bad_state["cat_ids"] = [1] * 1
    else:
        bad_state[field] = value
    bad = save_checkpoint(tmp_path / "bad.pt", bad_state)
    out = tmp_path / "out"
    code = _predict(bad, [photos], out)
    if needle is None:
        assert code == 0
        return
    _one_line_error(capsys, code, str(bad), needle)
    assert not out.exists()


def test_checkpoint_with_malformed_fields_for_eval_and_resume(good_checkpoint, tmp_path, capsys):  # noqa: F811
    good, state, cfg_path = good_checkpoint
    bad = save_checkpoint(tmp_path / "bad.pt", {**state, "config": "garbage"})
    _one_line_error(capsys, main(["eval", str(cfg_path), "--weights", str(bad)]), "field 'config'")
    run = tmp_path / "run"
    code = main(["train", str(cfg_path), f"runtime.work_dir={run}", "--resume", str(bad), "--no-progress"])
    _one_line_error(capsys, code, "field 'config'")
    assert not (run / "checkpoints").exists()
