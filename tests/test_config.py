import pytest

from focaldet.config import ConfigError, load_config


def test_defaults_follow_spec_recipe():
    cfg = load_config()
    assert cfg.train.base_lr == 0.01 and cfg.train.base_batch == 16
    assert cfg.train.momentum == 0.9 and cfg.train.weight_decay == 1e-4
    assert cfg.train.warmup_iters == 500 and cfg.train.milestones == [8, 11]
    assert cfg.model.fg_iou_thresh == 0.5 and cfg.model.bg_iou_thresh == 0.4
    assert cfg.loss.name == "focal"


def test_overrides_and_loss_params(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("loss: {name: focal, gamma: 2, alpha: 0.5}\ntrain: {epochs: 3}\n")
    cfg = load_config(p, ["loss.name=equalized_focal", "loss.scale=8", "train.epochs=6",
                          "train.weight_decay=1e-4"])
    assert cfg.loss.name == "equalized_focal"
    # the file's focal gamma is not an EFL parameter: dropped; alpha is one: kept
    assert cfg.loss.params == {"alpha": 0.5, "scale": 8}
    assert cfg.train.epochs == 6 and cfg.train.weight_decay == 1e-4


def test_a_loss_parameter_given_on_the_command_line_is_never_dropped(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("loss: {name: focal, gamma: 2}\n")
    cfg = load_config(p, ["loss.name=equalized_focal", "loss.gamma=3"])
    assert cfg.loss.params == {"gamma": 3}  # left for the loss check to refuse by name


def test_null_removes_a_loss_parameter(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("loss: {name: focal, gamma: 2, alpha: 0.5}\n")
    assert load_config(p, ["loss.gamma=null"]).loss.params == {"alpha": 0.5}


@pytest.mark.parametrize("text,needle", [
    ("train: {epocs: 3}\n", "train.epocs: unknown key"),
    ("train: {epochs: three}\n", "train.epochs: expected an integer"),
    ("train: {base_lr: -0.1}\n", "train.base_lr: -0.1 is out of range"),
    ("data: {batch_size: 0}\n", "data.batch_size: 0 is out of range"),
    ("model: {backbone: resnet7}\n", "model.backbone: 'resnet7' is not one of"),
    ("modle: {}\n", "unknown section"),
    ("- a\n- b\n", "top level must be a mapping"),
    ("train: [1, 2]\n", "section 'train' must be a mapping"),
])
def test_bad_configs_name_file_and_key(tmp_path, text, needle):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert needle in str(e.value)
    assert str(p) in str(e.value)


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(None, ["train.epochs"])


def test_roundtrip_dump(tmp_path):
    cfg = load_config(None, ["loss.gamma=1.5", "model.backbone=resnet18"])
    p = tmp_path / "resolved.yaml"
    p.write_text(cfg.dump())
    again = load_config(p)
    assert again.to_dict() == cfg.to_dict()
