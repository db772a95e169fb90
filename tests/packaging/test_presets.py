"""Packaged presets are addressable by name from any folder; a real file of that name wins."""
from __future__ import annotations

import pytest

from focaldet.config import ConfigError, load_config, preset_names


def test_preset_by_name_from_another_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("lt_digits_cpu", "lt_digits_cpu.yaml"):
        cfg = load_config(name, ["train.max_iters=3"])
        assert cfg.data.benchmark == "lt-digits" and cfg.train.max_iters == 3
        assert cfg.source.endswith("focaldet/configs/lt_digits_cpu.yaml")
    assert {"lt_digits_cpu", "lt_stamps_cpu", "retinanet_r50_fpn_1x_coco"} <= set(preset_names())


def test_the_fallback_preset_is_the_demo_recipe_on_lt_digits():
    """`focaldet demo` falls back to lt_digits_cpu where the lt-stamps photos are missing; it must
    train the default preset's recipe on the other benchmark, repeat-factor sampling included."""
    stamps, digits = load_config("lt_stamps_cpu").to_dict(), load_config("lt_digits_cpu").to_dict()
    assert (digits["data"]["sampler"], digits["data"]["repeat_threshold"]) == ("repeat_factor", 0.1)
    assert digits["data"].pop("benchmark") == "lt-digits" and stamps["data"].pop("benchmark") == "lt-stamps"
    assert digits["data"]["generator"].pop("classes") == "category"
    assert stamps["data"]["generator"].pop("classes") == "instance"
    assert digits["runtime"].pop("work_dir") != stamps["runtime"].pop("work_dir")
    assert digits == stamps
    assert digits["model"]["backbone_weights"] == "imagenet"


def test_a_local_file_takes_precedence(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lt_digits_cpu.yaml").write_text("train: {epochs: 7}\n")
    cfg = load_config("lt_digits_cpu.yaml")
    assert cfg.train.epochs == 7 and cfg.source == "lt_digits_cpu.yaml"


@pytest.mark.parametrize("name", ["lt_digits_gpu", "sub/lt_digits_cpu", "lt_digits_cpu.yml"])
def test_unknown_name_lists_the_presets(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as e:
        load_config(name)
    msg = str(e.value)
    assert msg.startswith(f"{name}: config file not found") and "lt_stamps_cpu" in msg and "\n" not in msg


def test_train_accepts_a_preset_name(tmp_path, monkeypatch, capsys):
    """The CLI path: a preset name plus a bad override fails on the override, not on the name."""
    from focaldet.cli.main import main

    monkeypatch.chdir(tmp_path)
    assert main(["train", "lt_stamps_cpu", "train.epocs=1"]) == 2
    err = capsys.readouterr().err
    assert "lt_stamps_cpu.yaml: train.epocs: unknown key" in err


def test_a_checkout_path_outside_the_checkout_names_the_preset(tmp_path, monkeypatch, capsys):
    """`focaldet train configs/lt_stamps_cpu.yaml` (the README's form) run where no `configs/`
    link exists, e.g. from an installed wheel: one line plus a hint naming the preset to use."""
    from focaldet.cli.main import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as e:
        load_config("configs/lt_stamps_cpu.yaml")
    assert e.value.hint.endswith("name the packaged preset: lt_stamps_cpu")
    with pytest.raises(ConfigError) as e:
        load_config("configs/lt_stamps_gpu.yaml")
    assert e.value.hint == ""
    assert main(["train", "configs/lt_digits_cpu.yaml"]) == 2
    err = capsys.readouterr().err
    assert "config file not found" in err and "name the packaged preset: lt_digits_cpu" in err
