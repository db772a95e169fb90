import pytest
import yaml

from focaldet.config import RENAMED_KEYS, ConfigError, config_from_dict, load_config


def test_defaults_follow_spec_recipe():
    cfg = load_config()
    assert cfg.train.base_lr == 0.01 and cfg.train.base_batch == 16
    assert cfg.train.momentum == 0.9 and cfg.train.weight_decay == 1e-4
    assert cfg.train.warmup_iters == 500 and cfg.train.milestones == [8, 11]
    assert cfg.model.matching.fg_iou_thresh == 0.5 and cfg.model.matching.bg_iou_thresh == 0.4
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
    with pytest.raises(ConfigError, match=r"loss\.gamma: loss 'equalized_focal': unknown parameter\(s\) gamma"):
        load_config(p, ["loss.name=equalized_focal", "loss.gamma=3"])  # refused by name, not dropped


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


def test_roundtrip_dump_writes_the_groups(tmp_path):
    cfg = load_config(None, ["model.anchors.sizes=[16,32,64,128,256]", "data.generator.seed=3"])
    d = cfg.to_dict()
    assert d["model"]["anchors"]["sizes"] == [16, 32, 64, 128, 256] and d["data"]["generator"]["seed"] == 3
    flat_names = {old.split(".")[1] for old in RENAMED_KEYS} - {"box_loss"}
    assert not flat_names & (set(d["model"]) | set(d["data"]))  # only the new names are written
    p = tmp_path / "resolved.yaml"
    p.write_text(cfg.dump())
    assert load_config(p).to_dict() == d


# ------------------------------------------------------------------------------------------
# Groups: model.anchors / matching / box_loss / inference, data.generator
# ------------------------------------------------------------------------------------------
GROUPED = """
model:
  backbone: resnet18
  anchors: {sizes: [16, 32, 64, 128, 256], aspect_ratios: [1.0]}
  matching: {fg_iou_thresh: 0.6, bg_iou_thresh: 0.3, normalizer: ema}
  box_loss: {name: smooth_l1, beta: 0.2, weight: 2.0}
  inference: {score_thresh: 0.1, detections_per_img: 50}
data:
  benchmark: lt-digits
  generator: {train: 40, seed: 7, classes: instance}
"""


def test_grouped_keys_load(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(GROUPED)
    m = load_config(p).model
    assert m.backbone == "resnet18" and m.anchors.sizes == [16, 32, 64, 128, 256] and m.anchors.aspect_ratios == [1.0]
    assert m.anchors.scales == pytest.approx([1.0, 2 ** (1 / 3), 2 ** (2 / 3)])  # a key left out keeps its default
    assert (m.matching.fg_iou_thresh, m.matching.bg_iou_thresh, m.matching.normalizer) == (0.6, 0.3, "ema")
    assert (m.box_loss.name, m.box_loss.beta, m.box_loss.weight) == ("smooth_l1", 0.2, 2.0)
    assert (m.inference.score_thresh, m.inference.detections_per_img, m.inference.nms_thresh) == (0.1, 50, 0.5)
    g = load_config(p).data.generator
    assert (g.train, g.val, g.seed, g.classes) == (40, 150, 7, "instance")


def test_grouped_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(GROUPED)
    cfg = load_config(p, ["model.anchors.sizes=[8,16,32,64,128]", "data.generator.seed=1",
                          "model.box_loss.name=giou", "model.inference.nms_thresh=0.6"])
    assert cfg.model.anchors.sizes == [8, 16, 32, 64, 128] and cfg.model.anchors.aspect_ratios == [1.0]
    assert cfg.data.generator.seed == 1 and cfg.data.generator.train == 40  # the rest of the group stays
    assert cfg.model.box_loss.name == "giou" and cfg.model.box_loss.beta == 0.2
    assert cfg.model.inference.nms_thresh == 0.6


@pytest.mark.parametrize("text,override,needle", [
    (GROUPED, "model.anchors.size=[1,2,3,4,5]", "model.anchors.size: unknown key; valid keys: aspect_ratios, scales, sizes"),
    (GROUPED, "model.anchors.sizes=[16,32,64,128,1e9]", "model.anchors.sizes[]: 1000000000.0 is out of range"),
    (GROUPED, "model.anchors.sizes=[16,32]", "model.anchors.sizes: need 5 base sizes"),
    (GROUPED, "model.matching.bg_iou_thresh=0.7", "model.matching.bg_iou_thresh: 0.7 is out of range [0.0, 0.6]"),
    (GROUPED, "model.box_loss.name=l2", "model.box_loss.name: 'l2' is not one of l1, smooth_l1, giou"),
    (GROUPED, "model.inference.topk_candidates=0", "model.inference.topk_candidates: 0 is out of range"),
    (GROUPED, "data.generator.classes=object", "data.generator.classes: 'object' is not one of category, instance"),
    (GROUPED, "data.generator.seed=-1", "data.generator.seed: -1 is out of range"),
    (GROUPED, "data.generator.size=big", "data.generator.size: expected an integer"),
    ("model: {anchors: [16, 32]}\n", None, "model.anchors: expected a mapping of sizes, scales, aspect_ratios"),
    ("data: {generator: {sed: 1}}\n", None, "data.generator.sed: unknown key"),
])
def test_a_bad_grouped_key_is_named_with_its_full_dotted_path(tmp_path, text, override, needle):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(p, [override] if override else [])
    assert f"{p}: {needle}" in str(e.value)


def test_too_deep_an_override_is_refused():
    with pytest.raises(ConfigError, match="too many dots"):
        load_config(None, ["model.anchors.sizes.x=1"])


# ------------------------------------------------------------------------------------------
# Old flat keys: translated with one note
# ------------------------------------------------------------------------------------------
OLD_FLAT = """
model: {anchor_sizes: [16, 32, 64, 128, 256], box_loss: giou, smooth_l1_beta: 0.2, bbox_clamp: 3.0,
        normalizer: ema, detections_per_img: 50}
data: {gen_seed: 1, gen_classes: instance}
"""


def test_every_old_key_has_a_new_home():
    cfg = load_config()
    for old, new in RENAMED_KEYS.items():
        obj = cfg
        for part in new.split("."):
            obj = getattr(obj, part)  # raises if the new place does not exist


def test_old_flat_keys_in_a_file_are_translated_with_one_note(tmp_path, capsys):
    p = tmp_path / "old.yaml"
    p.write_text(OLD_FLAT)
    cfg = load_config(p)
    m = cfg.model
    assert m.anchors.sizes == [16, 32, 64, 128, 256] and m.matching.normalizer == "ema"
    assert (m.box_loss.name, m.box_loss.beta, m.box_loss.clamp) == ("giou", 0.2, 3.0)
    assert m.inference.detections_per_img == 50
    assert (cfg.data.generator.seed, cfg.data.generator.classes) == (1, "instance")
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"focaldet: note: {p}: model.box_loss is now model.box_loss.name "
                   f"(+7 more renamed keys; README, 'Configs')"]
    assert load_config(p).to_dict() == load_config(None, [
        "model.anchors.sizes=[16,32,64,128,256]", "model.box_loss.name=giou", "model.box_loss.beta=0.2",
        "model.box_loss.clamp=3.0", "model.matching.normalizer=ema", "model.inference.detections_per_img=50",
        "data.generator.seed=1", "data.generator.classes=instance"]).to_dict()


def test_old_flat_keys_in_overrides_are_translated_with_a_note(tmp_path, capsys):
    p = tmp_path / "c.yaml"
    p.write_text(GROUPED)
    cfg = load_config(p, ["model.anchor_sizes=[8,16,32,64,128]", "data.gen_seed=5", "model.box_loss=l1"])
    assert cfg.model.anchors.sizes == [8, 16, 32, 64, 128] and cfg.model.anchors.aspect_ratios == [1.0]
    assert cfg.data.generator.seed == 5 and cfg.data.generator.train == 40
    assert cfg.model.box_loss.name == "l1" and cfg.model.box_loss.beta == 0.2  # the group is kept
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["focaldet: note: override: model.anchor_sizes is now model.anchors.sizes",
                   "focaldet: note: override: data.gen_seed is now data.generator.seed",
                   "focaldet: note: override: model.box_loss is now model.box_loss.name"]


def test_a_stored_config_dict_with_old_keys_loads(capsys):
    """The config inside a checkpoint or run folder of an earlier focaldet: every key flat."""
    stored = {"model": {"backbone": "resnet18", "score_thresh": 0.2, "fg_iou_thresh": 0.6,
                        "anchor_scales": [1.0], "box_loss": "l1"},
              "data": {"gen_train": 10, "rare_max": 3}}
    before = yaml.safe_dump(stored)
    cfg = config_from_dict(stored, source="runs/x/last.pt (stored config)")
    assert cfg.model.inference.score_thresh == 0.2 and cfg.model.matching.fg_iou_thresh == 0.6
    assert cfg.model.anchors.scales == [1.0] and cfg.data.generator.train == 10 and cfg.data.rare_max == 3
    assert yaml.safe_dump(stored) == before  # the caller's dict is not changed
    assert "focaldet: note: runs/x/last.pt (stored config): " in capsys.readouterr().err


def test_the_note_is_printed_on_rank_0_only(tmp_path, capsys, monkeypatch):
    p = tmp_path / "old.yaml"
    p.write_text(OLD_FLAT)
    monkeypatch.setenv("RANK", "1")
    assert load_config(p, ["model.nms_thresh=0.4"]).model.inference.nms_thresh == 0.4
    assert capsys.readouterr().err == ""


def test_a_key_under_its_old_and_new_name_is_refused(tmp_path):
    p = tmp_path / "both.yaml"
    p.write_text("model: {anchor_sizes: [1, 2, 3, 4, 5], anchors: {sizes: [16, 32, 64, 128, 256]}}\n")
    with pytest.raises(ConfigError, match=r"model.anchor_sizes \(the old name of model.anchors.sizes\) and "
                                          r"model.anchors.sizes are both set"):
        load_config(p)


# ------------------------------------------------------------------------------------------
# Loss parameters: checked once, at load time, against the loss itself
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,overrides,needle", [
    ("loss: {name: focal, gamma: 2}\n", ["loss.gamma=-1"], "loss.gamma: loss 'focal': parameter 'gamma' must satisfy 0 <= gamma"),
    ("loss: {name: focal, gama: 2}\n", [], "loss.gama: loss 'focal': unknown parameter(s) gama"),
    ("loss: {name: focal}\n", ["loss.alpha=1.5"], "loss.alpha: loss 'focal': parameter 'alpha' must satisfy 0 <= alpha <= 1"),
    ("loss: {name: ghm}\n", ["loss.momentum=1"], "loss.momentum: loss 'ghm': parameter 'momentum' must satisfy 0 <= momentum < 1"),
    ("loss: {name: ghm}\n", ["loss.bins=2.5"], "loss.bins: loss 'ghm': parameter 'bins' must be an integer"),
    ("loss: {name: equalized_focal}\n", ["loss.scale=x"], "loss.scale: loss 'equalized_focal': parameter 'scale' must be a number"),
    ("loss: {name: focall}\n", [], "loss.name: unknown loss 'focall'; valid names: bce"),
])
def test_a_bad_loss_parameter_is_refused_at_load_time(tmp_path, text, overrides, needle):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(p, overrides)
    assert f"{p}: {needle}" in str(e.value)


def test_good_loss_parameters_load_unchanged(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("loss: {name: modified_focal, gamma: 1, max_weight: 10}\n")
    assert load_config(p).loss.params == {"gamma": 1, "max_weight": 10}


def test_a_generator_override_the_recorded_paths_would_win_over_is_refused(tmp_path):
    """A run's config.yaml records the generated files it used; given paths win over the
    benchmark, so `eval runs/x/config.yaml data.generator.val=1000` would silently evaluate the old
    200-image split. It must stop, naming the override and the keys to clear."""
    run = tmp_path / "config.yaml"
    run.write_text(yaml.safe_dump({"data": {
        "benchmark": "lt-stamps", "generator": {"train": 2000, "val": 200},
        "train_ann": "/d/bench_n2000-200/annotations/train.json", "train_images": "/d/bench_n2000-200/train",
        "val_ann": "/d/bench_n2000-200/annotations/val.json", "val_images": "/d/bench_n2000-200/val"}}))
    with pytest.raises(ConfigError) as e:
        load_config(run, ["data.generator.val=1000"])
    assert "override data.generator.val would be ignored: the file sets data.train_ann" in str(e.value)
    assert e.value.hint.endswith("data.train_ann=null data.train_images=null")
    with pytest.raises(ConfigError, match="the file sets data.val_ann"):  # train cleared, val still recorded
        load_config(run, ["data.generator.val=1000", "data.train_ann=null", "data.train_images=null"])
    cleared = ["data.train_ann=null", "data.train_images=null", "data.val_ann=null", "data.val_images=null"]
    cfg = load_config(run, ["data.generator.val=1000", *cleared])
    assert cfg.data.generator.val == 1000 and cfg.data.val_ann is None and cfg.data.train_ann is None
    # no generator override, or paths given on the command line, or no benchmark: nothing to refuse
    assert load_config(run, ["train.max_iters=3"]).data.val_ann.endswith("val.json")
    assert load_config(run, ["data.generator={train: 2000, val: 1000}", "data.train_ann=/x/t.json",
                             "data.val_ann=/x/v.json"]).data.generator.val == 1000
    assert load_config(run, ["data.benchmark=null", "data.generator.seed=3"]).data.generator.seed == 3
