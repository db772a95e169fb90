"""``eval`` and ``predict`` show a tqdm bar (count, rate, ETA) on a terminal; none with --quiet or
when stderr is a pipe or file."""
from __future__ import annotations

import io
import json
import sys

import pytest
import torch
import yaml

from focaldet.cli.main import main
from tests.tiny_config import tiny_config_dict


class FakeTerminal(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.fixture
def untrained(tiny_benchmark, tmp_path):
    """(config path, checkpoint path) of an untrained tiny model for the tiny benchmark's classes."""
    from focaldet.config import config_from_dict
    from focaldet.engine.checkpoint import save_checkpoint
    from focaldet.model import build_model

    raw = tiny_config_dict(tiny_benchmark, tmp_path / "run", loss={"name": "focal"})
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(raw))
    cats = json.loads(tiny_benchmark.val_ann.read_text())["categories"]
    cfg = config_from_dict(raw)
    torch.manual_seed(0)
    model = build_model(cfg, len(cats))
    ckpt = save_checkpoint(tmp_path / "untrained.pt", {"model": model.state_dict(), "iter": 0, "config": cfg.to_dict(),
                                                       "class_names": [c["name"] for c in cats],
                                                       "cat_ids": [c["id"] for c in cats]})
    return cfg_path, ckpt


def _stderr_of(monkeypatch, tty: bool, argv) -> str:
    fake = FakeTerminal(tty)
    monkeypatch.setattr(sys, "stderr", fake)
    assert main(argv) == 0
    return fake.getvalue()


@pytest.mark.parametrize("command", ["predict", "eval"])
def test_bar_on_a_terminal_only(command, untrained, tiny_benchmark, tmp_path, monkeypatch):
    monkeypatch.setenv("FOCALDET_COMPILE", "0")
    cfg_path, ckpt = untrained
    n = len(list(tiny_benchmark.val_images.iterdir()))
    if command == "predict":
        argv = ["predict", "--weights", str(ckpt), str(tiny_benchmark.val_images), "--out", str(tmp_path / "pred")]
    else:
        argv = ["eval", str(cfg_path), "--weights", str(ckpt), "--results", str(tmp_path / "r.json")]
    shown = _stderr_of(monkeypatch, True, argv)
    assert f"{command}:" in shown and f"{n}/{n}" in shown  # the final state of the bar
    assert "img/s" in shown or "s/img" in shown  # rate
    assert "<" in shown  # elapsed<remaining, tqdm's ETA
    assert _stderr_of(monkeypatch, True, argv + ["--quiet"]) == ""
    assert _stderr_of(monkeypatch, False, argv) == ""
