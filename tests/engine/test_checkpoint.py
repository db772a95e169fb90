import os
import pickle
import random
import warnings

import numpy as np
import pytest
import torch

from focaldet.engine.checkpoint import (FORMAT_VERSION, CheckpointManager, capture_rng_state, check_compatible,
                                        config_changes, load_checkpoint, restore_rng_state, save_checkpoint)
from focaldet.errors import CheckpointError


def _state(i=0):
    return {"model": {"w": torch.full((3,), float(i))}, "iter": i, "config": {"model": {"head_width": 64},
            "loss": {"name": "focal"}}, "class_names": ["a", "b"], "rng": capture_rng_state()}


def test_rng_state_roundtrip_through_weights_only_file(tmp_path):
    random.seed(1); np.random.seed(2); torch.manual_seed(3)
    np.random.standard_normal()  # leaves a cached Gaussian in NumPy's state
    save_checkpoint(tmp_path / "c.pt", _state())
    expected = (random.random(), np.random.standard_normal(3).tolist(), np.random.rand(), torch.rand(4).tolist())
    random.seed(9); np.random.seed(9); torch.manual_seed(9)
    ckpt = load_checkpoint(tmp_path / "c.pt")
    restore_rng_state(ckpt["rng"])
    got = (random.random(), np.random.standard_normal(3).tolist(), np.random.rand(), torch.rand(4).tolist())
    assert got == expected


def test_malicious_pickle_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "model": {}, "iter": 0, "config": {}, "class_names": [], "x": Evil()}, path)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(path)
    assert not marker.exists()
    # a plain pickle file is refused too
    path.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not marker.exists()


def test_newer_format_and_foreign_files(tmp_path):
    torch.save({"format_version": FORMAT_VERSION + 1, "model": {}, "iter": 0, "config": {}, "class_names": []},
               tmp_path / "new.pt")
    with pytest.raises(CheckpointError, match="newer"):
        load_checkpoint(tmp_path / "new.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a focaldet checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_wrong_model_config_and_class_count_named():
    ckpt = _state()
    with pytest.raises(CheckpointError, match=r"model.head_width=64 in the checkpoint but 96"):
        check_compatible(ckpt, {"head_width": 96}, 2, "focal", "c.pt")
    with pytest.raises(CheckpointError, match="number of classes 2 in the checkpoint but 5"):
        check_compatible(ckpt, {"head_width": 64}, 5, "focal", "c.pt")
    check_compatible(ckpt, {"head_width": 64}, 2, "focal", "c.pt")


def test_a_checkpoint_of_an_earlier_focaldet_reads_its_old_config_keys(tmp_path, capsys):
    """Its config stores every model and data key flat: read under the new names, it resumes and
    evaluates with today's config, and a real change is still named (by its new name)."""
    from focaldet.config import load_config

    cfg = load_config(None, ["model.anchors.sizes=[16,32,64,128,256]", "model.inference.score_thresh=0.1"])
    new = cfg.to_dict()
    old_model = {k: v for k, v in new["model"].items() if not isinstance(v, dict)}
    old_model.update(anchor_sizes=[16, 32, 64, 128, 256], anchor_scales=new["model"]["anchors"]["scales"],
                     aspect_ratios=[0.5, 1.0, 2.0], score_thresh=0.1, box_loss="l1", bbox_clamp=4.135166556742356)
    old_data = {k: v for k, v in new["data"].items() if k != "generator"}
    old_data.update(gen_train=600, gen_val=150, gen_size=288, gen_seed=0, gen_classes="category")
    state = {**_state(), "config": {**new, "model": old_model, "data": old_data}}
    save_checkpoint(tmp_path / "old.pt", state)
    ckpt = load_checkpoint(tmp_path / "old.pt")
    assert f"focaldet: note: {tmp_path / 'old.pt'}: model.box_loss is now model.box_loss.name" in capsys.readouterr().err
    assert ckpt["config"]["model"]["anchors"]["sizes"] == [16, 32, 64, 128, 256]
    assert "anchor_sizes" not in ckpt["config"]["model"] and ckpt["config"]["data"]["generator"]["seed"] == 0
    assert config_changes(ckpt["config"], new) == ([], [])
    check_compatible(ckpt, new["model"], 2, "focal", "old.pt")
    other = load_config(None, ["model.anchors.sizes=[32,64,128,256,512]", "model.inference.score_thresh=0.2",
                               "data.generator.seed=1"]).to_dict()
    allowed, refused = config_changes(ckpt["config"], other)
    assert [k for k, _, _ in allowed] == ["model.inference.score_thresh"]
    assert [k for k, _, _ in refused] == ["data.generator.seed", "model.anchors.sizes"]
    with pytest.raises(CheckpointError, match=r"model.anchors.sizes=\[16, 32, 64, 128, 256\] in the checkpoint"):
        check_compatible(ckpt, other["model"], 2, "focal", "old.pt")
    # keys an older focaldet did not have read as their defaults, the behaviour it had
    older = {**ckpt["config"], "data": dict(ckpt["config"]["data"])}
    del older["data"]["sampler"], older["data"]["repeat_threshold"]
    assert config_changes(older, new) == ([], [])
    rfs = load_config(None, ["model.anchors.sizes=[16,32,64,128,256]", "model.inference.score_thresh=0.1",
                             "data.sampler=repeat_factor"]).to_dict()
    assert config_changes(older, rfs) == ([], [("data.sampler", "uniform", "repeat_factor")])


def test_keep_last_best_and_fallback_to_previous_good(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=2)
    for i in (2, 4, 6):
        mgr.save(_state(i), i, is_best=(i == 4))
    assert [p.name for p in mgr.iter_files()] == ["iter_0000006.pt", "iter_0000004.pt"]
    assert load_checkpoint(tmp_path / "best.pt")["iter"] == 4
    path, ckpt = mgr.latest_good()
    assert ckpt["iter"] == 6 and path.name == "iter_0000006.pt"

    # truncate the newest file (last.pt is a hard link to it, or a copy): fall back to iter 4
    for name in ("last.pt", "iter_0000006.pt"):
        data = (tmp_path / name).read_bytes()
        (tmp_path / name).unlink()
        (tmp_path / name).write_bytes(data[: len(data) // 2])
    with pytest.warns(RuntimeWarning, match="skipping bad checkpoint"):
        path, ckpt = mgr.latest_good()
    assert ckpt["iter"] == 4 and path.name == "iter_0000004.pt"
    assert torch.equal(ckpt["model"]["w"], torch.full((3,), 4.0))


def test_bit_flip_caught_by_checksum(tmp_path):
    p = save_checkpoint(tmp_path / "c.pt", _state(1))
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(p)
