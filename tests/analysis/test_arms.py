"""Parsing of --losses / --sweep / per-loss key=value arguments, and per-run configs."""
from pathlib import Path

import pytest

from focaldet.analysis.arms import CompareError, build_arms, parse_sweep, split_overrides
from focaldet.analysis.compare import plan_runs, resolve_baseline, run_config
from focaldet.config import load_config


def test_split_overrides_global_and_per_loss():
    g, per = split_overrides(["train.epochs=6", "modified_focal.gamma=1", "modified_focal.max_weight=100",
                              "loss.alpha=0.5"], ["focal", "modified_focal"])
    assert g == ["train.epochs=6", "loss.alpha=0.5"]
    assert per == {"modified_focal": {"gamma": 1, "max_weight": 100}}


def test_split_overrides_unknown_prefix_names_it():
    with pytest.raises(CompareError, match="'varifocal' is neither a config section"):
        split_overrides(["varifocal.alpha=0.5"], ["focal"])


def test_sweep_makes_one_arm_per_value_with_per_loss_params():
    assert parse_sweep("focal.gamma=0,0.5,1,2,5") == ("focal", "gamma", [0, 0.5, 1, 2, 5])
    arms = build_arms(["equalized_focal"], ["focal.gamma=0,0.5"], {"focal": {"alpha": 0.5, "gamma": 9}})
    assert [a.name for a in arms] == ["equalized_focal", "focal-gamma0", "focal-gamma0.5"]
    assert arms[2].params == {"alpha": 0.5, "gamma": 0.5}  # the swept value wins
    assert arms[0].params == {}


def test_cross_makes_a_grid_per_loss_and_side_by_side_without_it():
    sweeps = ["modified_focal.gamma=0.5,2", "modified_focal.max_weight=3,null", "focal.gamma=1,2"]
    grid = build_arms(["equalized_focal"], sweeps, {"modified_focal": {"alpha": 0.5}}, cross=True)
    assert [a.name for a in grid] == [
        "equalized_focal", "modified_focal-gamma0.5-max_weight3", "modified_focal-gamma0.5-max_weightNone",
        "modified_focal-gamma2-max_weight3", "modified_focal-gamma2-max_weightNone", "focal-gamma1", "focal-gamma2"]
    assert grid[2].params == {"alpha": 0.5, "gamma": 0.5, "max_weight": None}
    assert grid[3].title == "modified_focal gamma=2 max_weight=3"
    side = build_arms([], sweeps)  # default: 2 + 2 + 2 arms, each varying one parameter
    assert [a.name for a in side][:4] == ["modified_focal-gamma0.5", "modified_focal-gamma2",
                                          "modified_focal-max_weight3", "modified_focal-max_weightNone"]
    with pytest.raises(CompareError, match="given twice"):
        build_arms([], ["focal.gamma=1", "focal.gamma=2"], cross=True)


def test_duplicate_and_empty_arms_refused():
    with pytest.raises(CompareError, match="listed twice"):
        build_arms(["focal", "focal"])
    with pytest.raises(CompareError, match="nothing to compare"):
        build_arms([])
    with pytest.raises(CompareError, match="expected LOSS.PARAM"):
        parse_sweep("gamma=1,2")


def test_baseline_resolution():
    arms = build_arms(["modified_focal"], ["focal.gamma=1,2"])
    assert resolve_baseline(arms, None) == "modified_focal"  # no arm named focal: the first one
    assert resolve_baseline(build_arms(["bce", "focal"]), None) == "focal"
    assert resolve_baseline(arms, "modified_focal") == "modified_focal"
    with pytest.raises(CompareError, match="not one of the arms"):
        resolve_baseline(arms, "focal")  # two focal arms: ambiguous


def test_run_configs_differ_only_in_loss_and_seed(tmp_path: Path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("loss: {name: focal, gamma: 3, alpha: 0.5}\ntrain: {epochs: 2}\n")
    base = load_config(cfg_file, ["train.base_lr=0.02"])
    arms = build_arms(["focal", "equalized_focal"], per_loss={"equalized_focal": {"scale": 4}})
    specs = plan_runs(base, arms, [0, 1], tmp_path / "out")
    assert [s.key for s in specs] == ["focal/seed0", "equalized_focal/seed0", "focal/seed1", "equalized_focal/seed1"]
    focal1, efl1 = specs[2].cfg, specs[3].cfg
    assert focal1.loss.name == "focal" and focal1.loss.params == {"gamma": 3, "alpha": 0.5}  # base params kept
    assert efl1.loss.name == "equalized_focal" and efl1.loss.params == {"scale": 4}  # not focal's
    assert focal1.runtime.seed == 1 and focal1.runtime.resume == "auto"
    assert Path(efl1.runtime.work_dir) == tmp_path / "out" / "runs" / "equalized_focal" / "seed1"
    a, b = focal1.to_dict(), efl1.to_dict()
    for d in (a, b):
        d.pop("loss")
        d["runtime"].pop("work_dir")
    assert a == b  # everything else identical: same data, same schedule
    assert a["train"]["base_lr"] == 0.02 and a["train"]["epochs"] == 2


def test_arm_overrides_apply_to_that_arm_only(tmp_path: Path):
    from focaldet.analysis.presets import PRESETS

    arms = {a.name: a for a in PRESETS["paper-table1"].arms}
    base = load_config(None)
    assert run_config(base, arms["bce_noprior"], 0, tmp_path).model.prior_prob == 0.5
    assert run_config(base, arms["bce_prior"], 0, tmp_path).model.prior_prob == 0.01
    clipped = load_config(None, ["train.grad_clip=10"])
    assert run_config(clipped, arms["bce_noprior"], 0, tmp_path).train.grad_clip is None
    assert run_config(clipped, arms["focal_g2"], 0, tmp_path).train.grad_clip == 10
    # Table 1b's α per γ (Lin et al. 2017): γ 0.5 → α 0.5; γ 1, 2, 5 → α 0.25
    assert {n: arms[n].params for n in ("focal_g0.5", "focal_g1", "focal_g2", "focal_g5")} == {
        "focal_g0.5": {"gamma": 0.5, "alpha": 0.5}, "focal_g1": {"gamma": 1.0, "alpha": 0.25},
        "focal_g2": {"gamma": 2.0, "alpha": 0.25}, "focal_g5": {"gamma": 5.0, "alpha": 0.25}}


def test_cli_accepts_overrides_before_and_after_options():
    from focaldet.cli.main import build_parser

    p = build_parser()
    a = p.parse_args(["compare", "c.yaml", "train.epochs=2", "--losses", "focal,bce", "--seeds", "0,4",
                      "--out", "o", "modified_focal.gamma=1"])
    assert (a.config, a.overrides, a.losses, a.seeds, a.out) == (
        "c.yaml", ["train.epochs=2", "modified_focal.gamma=1"], "focal,bce", "0,4", "o")
    assert p.parse_args(["demo", "--quick", "train.max_iters=5"]).overrides == ["train.max_iters=5"]
    with pytest.raises(SystemExit):
        p.parse_args(["compare", "c.yaml", "--out", "o", "stray-word"])  # still refused


def test_parse_seeds():
    from focaldet.cli.compare import parse_seeds

    assert parse_seeds(None, 3) == [0, 1, 2]
    assert parse_seeds("2", 3) == [0, 1]
    assert parse_seeds("0,5,7", 3) == [0, 5, 7]
    with pytest.raises(CompareError, match="--seeds 'x'"):
        parse_seeds("x", 3)
