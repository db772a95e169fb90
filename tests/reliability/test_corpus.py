"""The bad-input corpus, part 2 (part 1, annotations / images / paths: tests/data/test_bad_inputs.py).

Configs, checkpoints and predict inputs, each through the command line (``focaldet.cli.main.main``)
as a user meets it: exit code 2, a first stderr line ``focaldet CMD: error: …`` naming the file
and the key / field, no traceback, and the files already in the run / output directory unchanged.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from focaldet.cli.main import main
from focaldet.config import load_config
from focaldet.engine.checkpoint import FORMAT_VERSION, save_checkpoint

from .conftest import tiny_config_dict


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _existing_run(folder: Path) -> dict:
    """A run directory with a previous run's files in it; returns their digests."""
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.yaml").write_text("# previous run\n")
    (folder / "metrics.jsonl").write_text('{"type": "train", "iter": 1, "loss": 1.0}\n')
    (folder / "checkpoints" / "last.pt").write_bytes(b"previous checkpoint bytes")
    return _snapshot(folder)


def _one_line_error(capsys, code, *needles) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert lines[0].startswith("focaldet ") and ": error: " in lines[0], err
    assert all(ln.startswith("  hint: ") for ln in lines[1:]), err  # the message itself is one line
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# ------------------------------------------------------------------------------------------
# Configs: `focaldet train` refuses before touching the run directory
# ------------------------------------------------------------------------------------------
CONFIG_CASES = [
    # (id, config text or override, needles in the error line)
    ("unknown-key", {"model": {"backbon": "resnet18"}}, None, ["model.backbon: unknown key"]),
    ("unknown-section", {"modle": {"backbone": "resnet18"}}, None, ["unknown section", "modle"]),
    ("wrong-type-int", {"train": {"max_iters": "ten"}}, None, ["train.max_iters"]),
    ("wrong-type-list", {"data": {"train_sizes": "big"}}, None, ["data.train_sizes"]),
    ("wrong-type-bool-section", {"train": [1, 2]}, None, ["train"]),
    ("gamma-negative", {"loss": {"name": "focal", "gamma": -0.5}}, None, ["gamma", "-0.5"]),
    ("alpha-above-one", {"loss": {"name": "focal", "alpha": 1.5}}, None, ["alpha", "1.5"]),
    ("alpha-negative", {"loss": {"name": "focal", "alpha": -0.1}}, None, ["alpha", "-0.1"]),
    ("negative-lr", {"train": {"base_lr": -0.01}}, None, ["train.base_lr", "out of range"]),
    ("zero-batch", {"data": {"batch_size": 0}}, None, ["data.batch_size", "out of range"]),
    ("unknown-loss", {"loss": {"name": "focal_loss_v2"}}, None, ["unknown loss 'focal_loss_v2'", "focal"]),
    ("unknown-loss-override", {}, "loss.name=fcoal", ["unknown loss 'fcoal'"]),
    ("unknown-loss-param", {"loss": {"name": "focal", "gamam": 2}}, None, ["gamam"]),
    ("override-unknown-key", {}, "train.max_iter=5", ["train.max_iter"]),
    ("override-without-equals", {}, "train.max_iters", ["train.max_iters", "key=value"]),
]


@pytest.mark.parametrize("case,sections,override,needles", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_config_is_one_line_and_leaves_the_run_dir_alone(tmp_path, capsys, case, sections, override, needles):
    run = tmp_path / "run"
    before = _existing_run(run)
    cfg = {"runtime": {"work_dir": str(run)}}
    for k, v in sections.items():
        cfg[k] = v if not isinstance(v, dict) else {**cfg.get(k, {}), **v}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    code = main(["train", str(path)] + ([override] if override else []) + ["--no-progress"])
    line = _one_line_error(capsys, code, *needles)
    if case != "override-without-equals":  # that one names the override instead
        assert str(path) in line  # names the file
    assert _snapshot(run) == before


@pytest.mark.parametrize("text,needle", [
    ("model: {backbone: [unclosed\n", "not valid YAML"),
    ("- just\n- a list\n", "top level must be a mapping"),
    ("model:\n\tbackbone: resnet18\n", "not valid YAML"),  # a tab
], ids=["broken-yaml", "top-level-list", "tab-indent"])
def test_unreadable_config_file(tmp_path, capsys, text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    _one_line_error(capsys, main(["train", str(path)]), str(path), needle)


def test_missing_config_file(tmp_path, capsys):
    _one_line_error(capsys, main(["train", str(tmp_path / "nope.yaml")]), "nope.yaml", "config file not found")


# ------------------------------------------------------------------------------------------
# Checkpoints: `focaldet predict` / `focaldet eval` refuse bad weights with one line
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def good_checkpoint(tiny_benchmark, tmp_path_factory):
    """A real checkpoint of the tiny model (untrained weights; loading is what is under test)."""
    from focaldet.model import build_model

    root = tmp_path_factory.mktemp("ckpt")
    d = tiny_config_dict(tiny_benchmark, root / "run")
    cfg_path = root / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(d))
    cfg = load_config(cfg_path)
    cats = json.loads(Path(tiny_benchmark.val_ann).read_text())["categories"]
    torch.manual_seed(0)
    model = build_model(cfg, len(cats))
    state = {"model": model.state_dict(), "iter": 1, "epoch": 0, "config": cfg.to_dict(),
             "class_names": [c["name"] for c in cats], "cat_ids": [c["id"] for c in cats]}
    path = save_checkpoint(root / "good.pt", state)
    return path, state, cfg_path


@pytest.fixture
def photos(tmp_path, tiny_benchmark):
    folder = tmp_path / "photos"
    folder.mkdir()
    for src in sorted(Path(tiny_benchmark.val_images).iterdir())[:2]:
        shutil.copy(src, folder / src.name)
    return folder


def _predict(weights, inputs, out) -> int:
    return main(["predict", "--weights", str(weights), *map(str, inputs), "--out", str(out), "--device", "cpu"])


def test_good_checkpoint_predicts(good_checkpoint, photos, tmp_path, capsys):
    """The control for the cases below: the same files work with the untouched checkpoint."""
    assert _predict(good_checkpoint[0], [photos], tmp_path / "out") == 0
    assert (tmp_path / "out" / "results.json").is_file()


def _bad_copy(good: Path, tmp_path: Path, name: str, data: bytes, sidecar: bool = False) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    if sidecar:  # the sidecar of the good file: the checksum no longer matches
        Path(str(p) + ".sha256").write_text(Path(str(good) + ".sha256").read_text())
    return p


@pytest.mark.parametrize("case", ["truncated", "zero-bytes", "random-bytes", "text-file", "checksum-mismatch",
                                  "plain-tensor-dict", "newer-format", "missing-keys", "missing-file"])
def test_bad_checkpoint_file_is_refused_in_one_line(good_checkpoint, photos, tmp_path, capsys, case):
    good, state, _ = good_checkpoint
    data = good.read_bytes()
    if case == "truncated":
        bad, needle = _bad_copy(good, tmp_path, "c.pt", data[: len(data) // 2]), "not a readable checkpoint"
    elif case == "zero-bytes":
        bad, needle = _bad_copy(good, tmp_path, "c.pt", b""), "not a readable checkpoint"
    elif case == "random-bytes":
        gen = torch.Generator().manual_seed(1)
        noise = torch.randint(0, 256, (4096,), generator=gen, dtype=torch.uint8).numpy().tobytes()
        bad, needle = _bad_copy(good, tmp_path, "c.pt", noise), "not a readable checkpoint"
    elif case == "text-file":
        bad, needle = _bad_copy(good, tmp_path, "c.pt", b"model: resnet\n"), "not a readable checkpoint"
    elif case == "checksum-mismatch":
        flipped = bytearray(data)
        flipped[len(data) // 2] ^= 0x10
        bad, needle = _bad_copy(good, tmp_path, "c.pt", bytes(flipped), sidecar=True), "checksum mismatch"
    elif case == "plain-tensor-dict":
        bad, needle = tmp_path / "c.pt", "not a focaldet checkpoint (missing format_version, model, iter"
        torch.save({"weight": torch.zeros(3)}, bad)
    elif case == "newer-format":
        bad, needle = tmp_path / "c.pt", f"format_version {FORMAT_VERSION + 1} is newer"
        torch.save({**state, "format_version": FORMAT_VERSION + 1}, bad)
    elif case == "missing-keys":
        bad, needle = tmp_path / "c.pt", "missing class_names"
        torch.save({k: v for k, v in state.items() if k != "class_names"} | {"format_version": 1}, bad)
    else:
        bad, needle = tmp_path / "nope.pt", "checkpoint file not found"
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("earlier output\n")
    before = _snapshot(out)
    _one_line_error(capsys, _predict(bad, [photos], out), str(bad), needle)
    assert _snapshot(out) == before


def test_checkpoint_with_other_model_config(good_checkpoint, tmp_path, capsys):
    _, _, cfg_path = good_checkpoint
    good = good_checkpoint[0]
    code = main(["eval", str(cfg_path), "model.fpn_channels=64", "model.head_depth=2", "--weights", str(good)])
    _one_line_error(capsys, code, str(good), "model.fpn_channels=32 in the checkpoint but 64",
                    "model.head_depth=1 in the checkpoint but 2")


def test_checkpoint_with_other_number_of_classes(good_checkpoint, tmp_path, capsys):
    from focaldet.model import build_model

    good, state, cfg_path = good_checkpoint
    three = build_model(load_config(cfg_path), 3)  # a real checkpoint of a 3-class dataset
    bad = save_checkpoint(tmp_path / "three.pt", {**state, "model": three.state_dict(),
                                                  "class_names": ["a", "b", "c"], "cat_ids": [1, 2, 3]})
    n = len(state["class_names"])
    code = main(["eval", str(cfg_path), "--weights", str(bad)])
    _one_line_error(capsys, code, str(bad), "trained on category ids [1, 2, 3]", "val.json has [1, 2, 3, 4")
    run = tmp_path / "run"
    before = _existing_run(run)
    code = main(["train", str(cfg_path), f"runtime.work_dir={run}", "--resume", str(bad), "--no-progress"])
    _one_line_error(capsys, code, str(bad), f"number of classes 3 in the checkpoint but {n} in the dataset")
    assert _snapshot(run) == before


def test_checkpoint_whose_weights_do_not_fit_its_stored_config(good_checkpoint, photos, tmp_path, capsys):
    good, state, _ = good_checkpoint
    model = dict(state["model"])
    name = next(k for k in model if k.endswith("weight") and model[k].dim() == 4)
    model[name] = torch.zeros(1, 1, 1, 1)
    model["unexpected.extra"] = torch.zeros(1)
    bad = save_checkpoint(tmp_path / "misfit.pt", {**state, "model": model})
    _one_line_error(capsys, _predict(bad, [photos], tmp_path / "out"), str(bad), "model weights do not fit")


def test_resume_from_checkpoint_of_other_model_leaves_the_run_alone(good_checkpoint, tmp_path, capsys):
    good, _, cfg_path = good_checkpoint
    run = tmp_path / "run"
    before = _existing_run(run)
    code = main(["train", str(cfg_path), f"runtime.work_dir={run}", "model.fpn_channels=64",
                 "--resume", str(good), "--no-progress"])
    _one_line_error(capsys, code, str(good), "model.fpn_channels=32 in the checkpoint but 64")
    assert _snapshot(run) == before


# ------------------------------------------------------------------------------------------
# Predict inputs
# ------------------------------------------------------------------------------------------
def test_predict_directory_with_non_images_mixed_in(good_checkpoint, photos, tmp_path, capsys):
    (photos / "notes.txt").write_text("not an image\n")
    (photos / "labels.json").write_text("{}")
    (photos / "Makefile").write_text("all:\n")
    (photos / "subdir").mkdir()
    (photos / "subdir" / "nested.png").write_bytes(b"")  # folders are not recursed into
    out = tmp_path / "out"
    assert _predict(good_checkpoint[0], [photos], out) == 0
    captured = capsys.readouterr()
    assert "skipped 4 non-image entries" in captured.out  # 3 files and a folder
    images = json.loads((out / "images.json").read_text())["images"]
    assert sorted(Path(i["file_name"]).name for i in images) == sorted(
        p.name for p in photos.iterdir() if p.suffix in (".jpg", ".png"))
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["images.json", "results.json"] + [p.stem + ".jpg" for p in photos.iterdir() if p.suffix in (".jpg", ".png")])


def test_predict_directory_without_images(good_checkpoint, tmp_path, capsys):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("x")
    _one_line_error(capsys, _predict(good_checkpoint[0], [folder], tmp_path / "out"), "no images found", str(folder))
    assert not (tmp_path / "out").exists()


def test_predict_text_file_named_jpg(good_checkpoint, photos, tmp_path, capsys):
    fake = photos / "zz_fake.jpg"
    fake.write_text("this is text\n")
    _one_line_error(capsys, _predict(good_checkpoint[0], [photos], tmp_path / "out"), str(fake), "not an image file")


def test_predict_missing_input(good_checkpoint, tmp_path, capsys):
    missing = tmp_path / "nowhere"
    _one_line_error(capsys, _predict(good_checkpoint[0], [missing], tmp_path / "out"), str(missing),
                    "no such file or directory")
