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


def test_a_config_sweep_varies_one_key_for_every_loss(tmp_path: Path):
    arms = build_arms(["focal", "equalized_focal"], ["data.sampler=uniform,repeat_factor"],
                      {"equalized_focal": {"scale": 4}})
    assert [a.name for a in arms] == ["focal-sampleruniform", "equalized_focal-sampleruniform",
                                      "focal-samplerrepeat_factor", "equalized_focal-samplerrepeat_factor"]
    assert arms[3].title == "equalized_focal data.sampler=repeat_factor" and arms[3].params == {"scale": 4}
    assert resolve_baseline(arms, None) == "focal-sampleruniform"
    base = load_config(None, ["data.repeat_threshold=0.03", "train.max_iters=5"])
    cfgs = {s.arm.name: s.cfg for s in plan_runs(base, arms, [0], tmp_path / "out")}
    uniform, rfs = cfgs["focal-sampleruniform"].to_dict(), cfgs["focal-samplerrepeat_factor"].to_dict()
    assert (uniform["data"]["sampler"], rfs["data"]["sampler"]) == ("uniform", "repeat_factor")
    for d in (uniform, rfs):
        d["data"].pop("sampler")
        d["runtime"].pop("work_dir")
    assert uniform == rfs  # the swept key is the only difference; the global overrides reach both
    assert rfs["data"]["repeat_threshold"] == 0.03 and rfs["train"]["max_iters"] == 5


def test_config_sweeps_cross_into_a_grid_and_keep_value_types(tmp_path: Path):
    sweeps = ["model.head_norm=gn,bn", "train.grad_clip=null,10"]
    grid = build_arms(["focal"], sweeps, cross=True)
    assert [a.name for a in grid] == ["focal-head_normgn-grad_clipNone", "focal-head_normgn-grad_clip10",
                                      "focal-head_normbn-grad_clipNone", "focal-head_normbn-grad_clip10"]
    cfg = run_config(load_config(None), grid[2], 0, tmp_path)
    assert cfg.model.head_norm == "bn" and cfg.train.grad_clip is None
    assert run_config(load_config(None), grid[1], 0, tmp_path).train.grad_clip == 10
    side = build_arms(["focal"], sweeps)  # side by side: 2 + 2 arms, one key each
    assert [a.overrides for a in side] == [("model.head_norm=gn",), ("model.head_norm=bn",),
                                           ("train.grad_clip=null",), ("train.grad_clip=10",)]
    nested = build_arms(["focal"], ["data.generator.seed=0,1"])  # val vs the dev split
    assert nested[1].overrides == ("data.generator.seed=1",)
    assert run_config(load_config(None), nested[1], 0, tmp_path).data.generator.seed == 1


def test_config_sweeps_refuse_what_they_cannot_do(tmp_path: Path):
    with pytest.raises(CompareError, match="not both"):
        build_arms(["focal"], ["data.sampler=uniform,repeat_factor", "focal.gamma=1,2"])
    with pytest.raises(CompareError, match="name the losses"):
        build_arms([], ["data.sampler=uniform,repeat_factor"])
    with pytest.raises(CompareError, match="sets runtime.seed itself"):
        parse_sweep("runtime.seed=0,1")
    with pytest.raises(CompareError, match="name the loss whose parameter"):
        parse_sweep("loss.gamma=1,2")
    with pytest.raises(CompareError, match="given twice"):
        build_arms(["focal"], ["data.sampler=uniform", "data.sampler=repeat_factor"])
    arms = build_arms(["focal"], ["data.samplr=uniform,repeat_factor"])  # a typo in the key ...
    with pytest.raises(Exception, match="data.samplr"):  # ... is named when the runs are planned
        plan_runs(load_config(None), arms, [0], tmp_path / "out")


def test_cli_refuses_a_key_that_is_both_swept_and_set_for_every_run(tmp_path: Path, capsys):
    from focaldet.cli.main import main

    code = main(["compare", "lt_stamps_cpu", "--losses", "focal", "--sweep", "data.sampler=uniform,repeat_factor",
                 "--out", str(tmp_path / "out"), "data.sampler=repeat_factor"])
    assert code == 2
    assert "data.sampler is both swept and set for every run" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
