"""Security: hostile checkpoints and YAML never run code; no shell commands; predict / compare
write only inside their output directory."""
from __future__ import annotations

import ast
import io
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml

import focaldet
from focaldet.cli.main import main
from focaldet.config import ConfigError, load_config
from focaldet.engine.checkpoint import CheckpointManager, load_checkpoint
from focaldet.errors import CheckpointError

from .test_corpus import _one_line_error, _predict, _snapshot, good_checkpoint, photos  # noqa: F401 — fixtures

PACKAGE = Path(focaldet.__file__).parent


class _CreatesFile:
    """Unpickling this object would create the file ``target`` (via ``open(target, "w")``)."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def _malicious_checkpoint(path: Path, target: Path) -> Path:
    """A file that looks like a focaldet checkpoint but carries a payload in a weights-free pickle
    (``torch.save`` with the full pickler, as an attacker would)."""
    torch.save({"format_version": 1, "model": {"w": torch.zeros(2)}, "iter": 1, "config": {},
                "class_names": ["x"], "payload": _CreatesFile(str(target))}, path)
    return path


def test_the_payload_is_live(tmp_path):
    """Control: the same file loaded with weights_only=False does create the file, so the test
    below would notice an unsafe loader."""
    target = tmp_path / "pwned"
    evil = _malicious_checkpoint(tmp_path / "evil.pt", target)
    torch.load(evil, weights_only=False)
    assert target.exists()


def test_malicious_checkpoint_is_refused_and_runs_nothing(tmp_path):
    target = tmp_path / "pwned"
    evil = _malicious_checkpoint(tmp_path / "evil.pt", target)
    with pytest.raises(CheckpointError, match=r"evil\.pt: refused to load: it contains Python objects"):
        load_checkpoint(evil)
    assert not target.exists()


def test_malicious_checkpoint_through_the_cli_and_resume(tmp_path, capsys, good_checkpoint, photos):  # noqa: F811
    target = tmp_path / "pwned"
    evil = _malicious_checkpoint(tmp_path / "evil.pt", target)
    _one_line_error(capsys, _predict(evil, [photos], tmp_path / "out"), str(evil), "refused to load")
    assert not target.exists()
    # planted as the newest checkpoint of a run: skipped with a warning, the good one is used
    mgr = CheckpointManager(tmp_path / "run" / "checkpoints")
    mgr.dir.mkdir(parents=True)
    shutil.copy(good_checkpoint[0], mgr.dir / "iter_0000001.pt")
    shutil.copy(str(good_checkpoint[0]) + ".sha256", mgr.dir / "iter_0000001.pt.sha256")
    shutil.copy(evil, mgr.dir / "iter_0000009.pt")
    with pytest.warns(RuntimeWarning, match="iter_0000009.pt: refused to load"):
        path, ckpt = mgr.latest_good()
    assert path.name == "iter_0000001.pt" and not target.exists()


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def _source_files():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 30  # the scan sees the whole package
    return files


def test_every_torch_load_in_the_package_is_weights_only():
    found = 0
    for path in _source_files():
        for call in _calls(ast.parse(path.read_text(), str(path))):
            f = call.func
            if isinstance(f, ast.Attribute) and f.attr == "load" and getattr(f.value, "id", None) == "torch":
                found += 1
                kw = {k.arg: k.value for k in call.keywords}
                assert "weights_only" in kw and getattr(kw["weights_only"], "value", None) is True, \
                    f"{path}:{call.lineno}: torch.load without weights_only=True"
    assert found >= 1


def test_no_unsafe_yaml_pickle_eval_or_shell_in_the_package():
    bad = []
    for path in _source_files():
        text = path.read_text()
        for call in _calls(ast.parse(text, str(path))):
            f = call.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            owner = getattr(getattr(f, "value", None), "id", "")
            kw = {k.arg: k.value for k in call.keywords}
            where = f"{path.relative_to(PACKAGE)}:{call.lineno}"
            if owner == "yaml" and name in ("load", "load_all", "unsafe_load", "full_load"):
                bad.append(f"{where}: yaml.{name} (use yaml.safe_load)")
            if owner == "pickle" and name in ("load", "loads"):
                bad.append(f"{where}: pickle.{name}")
            if owner == "os" and name in ("system", "popen"):
                bad.append(f"{where}: os.{name}")
            if name in ("eval", "exec") and isinstance(f, ast.Name):
                bad.append(f"{where}: {name}()")
            if "shell" in kw and getattr(kw["shell"], "value", False) is not False:
                bad.append(f"{where}: shell=True")
    assert not bad, bad


def test_yaml_python_tags_are_refused(tmp_path):
    target = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(f"model: !!python/object/apply:builtins.open ['{target}', 'w']\n")
    with pytest.raises(ConfigError, match=r"(?s)evil\.yaml: not valid YAML.*python/object/apply"):
        load_config(path)
    assert not target.exists()


def test_yaml_python_tag_through_the_cli(tmp_path, capsys):
    path = tmp_path / "evil.yaml"
    path.write_text(f"model: !!python/object/apply:os.system ['touch {tmp_path / 'pwned'}']\n")
    _one_line_error(capsys, main(["train", str(path)]), str(path), "not valid YAML")
    assert not (tmp_path / "pwned").exists()


def test_yaml_python_tag_in_an_override(tmp_path):
    """An override value is parsed as a YAML scalar with the safe loader too: the tag is not
    constructed; the value stays plain text."""
    text = f"!!python/object/apply:os.system ['touch {tmp_path / 'pwned'}']"
    cfg = load_config(None, [f"runtime.work_dir={text}"])
    assert cfg.runtime.work_dir == text
    assert not (tmp_path / "pwned").exists()


# ------------------------------------------------------------------------------------------
# predict / compare write only inside their output directory
# ------------------------------------------------------------------------------------------
def test_predict_output_names_cannot_escape(good_checkpoint, tmp_path, capsys):  # noqa: F811
    """Input files whose names try to climb out (``..``, dots, odd characters) are written as
    flat, sanitised names inside --out."""
    from PIL import Image

    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    img = Image.new("RGB", (64, 48), (120, 30, 200))
    names = ["..jpg", "...png", "a b;rm -rf ~.jpg", "$(touch x).png", "-.jpg"]
    for n in names:
        img.save(src / n, format="PNG" if n.endswith("png") else "JPEG")
    out = tmp_path / "a" / "out"
    outside_before = _snapshot(tmp_path)
    assert _predict(good_checkpoint[0], [src / n for n in names], out) == 0
    written = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert all(len(p.parts) == 1 for p in written)
    assert len(written) == len(names) + 2  # one drawing per image + results.json + images.json
    after = _snapshot(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("a/out/")} == outside_before
    assert not (tmp_path / "x").exists() and not Path("x").exists()


@pytest.mark.parametrize("link_name", ["photo.jpg", "results.json"])
def test_predict_refuses_to_follow_a_symlink_out_of_the_output_dir(good_checkpoint, tmp_path, capsys, link_name):  # noqa: F811
    from PIL import Image

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / link_name).symlink_to(victim)
    Image.new("RGB", (64, 48)).save(tmp_path / "photo.png")
    _one_line_error(capsys, _predict(good_checkpoint[0], [tmp_path / "photo.png"], out), "refusing to write",
                    "outside --out")
    assert victim.read_text() == "precious\n"


def test_compare_arm_names_cannot_escape_the_output_dir(tmp_path):
    from focaldet.analysis.arms import build_arms
    from focaldet.analysis.compare import plan_runs, run_dir_of

    arms = build_arms(["focal"], ["focal.gamma=../../../evil,/abs/path,..,0.5"])
    base = load_config(None)
    out = tmp_path / "out"
    for arm in arms:
        resolved = run_dir_of(out, arm, 0).resolve()
        assert out.resolve() in resolved.parents, arm.name
        assert resolved.relative_to(out.resolve()).parts[:1] == ("runs",)
        assert len(resolved.relative_to(out.resolve() / "runs").parts) == 2  # runs/<arm>/seed0
    # and a path as a loss parameter never gets as far as a run: planning checks every run's loss
    hostile = [a for a in arms if isinstance(a.params.get("gamma"), str)]
    assert len(hostile) == 3
    for arm in hostile:
        with pytest.raises(ConfigError, match="loss.gamma: loss 'focal': parameter 'gamma' must be a number"):
            plan_runs(base, [arm], [0], out)
    fine = [a for a in arms if a not in hostile]
    assert [s.dir for s in plan_runs(base, fine, [0], out)] == [out / "runs" / a.name / "seed0" for a in fine]
