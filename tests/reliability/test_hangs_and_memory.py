"""Issue 14, hangs and memory blow-ups: a failing rank brings a torchrun job down within seconds
with its one-line error; evaluation survives image ids >= 2^53 and the final checkpoint is written
before the final evaluation; one bad input cannot ask for gigabytes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from focaldet.cli.main import main
from focaldet.config import load_config
from focaldet.engine.checkpoint import load_checkpoint
from focaldet.engine.trainer import train
from focaldet.errors import CheckpointError, DataError

from .test_corpus import _one_line_error, good_checkpoint  # noqa: F401 — fixture
from .test_documented_commands import free_port

HERE = Path(__file__).parent


# ------------------------------------------------------------------------------------------
# 4. torchrun: one rank fails
# ------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.dist
@pytest.mark.parametrize("mode,needle", [("setup", "field 'width'"), ("step", "not an image file")])
def test_a_data_error_on_one_rank_ends_the_whole_job(write_tiny_config, tmp_path, mode, needle):
    """Without the fix the healthy rank waits in its collective for the 30-minute timeout; the
    600-s limit here is only a guard against that hang, not a measurement."""
    cfg = write_tiny_config(work_dir=tmp_path / "run", train={"max_iters": 6, "ckpt_interval": 6})
    env = dict(os.environ, OMP_NUM_THREADS="1", FOCALDET_COMPILE="0")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port",
                           str(free_port()), str(HERE / "_rank_failure_driver.py"), mode, str(cfg)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode != 0
    errors = [ln for ln in proc.stderr.splitlines() if "focaldet train: error:" in ln]
    assert errors and needle in errors[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr.split("focaldet train: error:")[0][-2000:]  # the rank's own output


# ------------------------------------------------------------------------------------------
# 5. image ids >= 2^53; the final checkpoint is written before the final evaluation
# ------------------------------------------------------------------------------------------
def _gt_and_results(ids):
    images = [{"id": i, "file_name": f"{n}.jpg", "width": 100, "height": 100} for n, i in enumerate(ids)]
    anns = [{"id": 7 + n, "image_id": i, "category_id": 1, "bbox": [10, 10, 30, 30], "area": 900, "iscrowd": 0}
            for n, i in enumerate(ids)]
    # image 0: a perfect detection; image 1: a wrong one with a higher score
    results = [{"image_id": ids[0], "category_id": 1, "bbox": [10, 10, 30, 30], "score": 0.6},
               {"image_id": ids[1], "category_id": 1, "bbox": [60, 60, 30, 30], "score": 0.9}]
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "a"}]}, results


def test_image_ids_beyond_2_pow_53_evaluate_like_small_ids():
    """pycocotools on the same data with small ids is the reference; 2^53 and 2^53 + 1 are the
    same double, so without remapping the two images would merge."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from focaldet.evaluation import evaluate_detections

    big = [2**53, 2**53 + 1]
    gt_big, res_big = _gt_and_results(big)
    got = evaluate_detections(gt_big, res_big).stats

    gt_small, res_small = _gt_and_results([1, 2])
    coco = COCO()
    coco.dataset = gt_small
    coco.createIndex()
    ev = COCOeval(coco, coco.loadRes(res_small), "bbox")
    import contextlib
    import io
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate(), ev.accumulate(), ev.summarize()
    assert got["AP"] == pytest.approx(ev.stats[0], abs=1e-12)
    assert got["AR100"] == pytest.approx(ev.stats[8], abs=1e-12)
    assert 0 < got["AP"] < 1  # the wrong, higher-scored detection on the other image counts


def test_category_ids_beyond_2_pow_53_are_refused_at_load_time(tmp_path):
    from focaldet.data.validation import load_coco_annotations

    (tmp_path / "img").mkdir()
    ann = tmp_path / "a.json"
    ann.write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": 2**53 + 1, "name": "x"}]}))
    data = {"images": [{"id": 1, "file_name": "x.jpg", "width": 10, "height": 10}], "annotations": [],
            "categories": [{"id": 2**53 + 1, "name": "x"}]}
    ann.write_text(json.dumps(data))
    (tmp_path / "img" / "x.jpg").write_bytes(b"")
    with pytest.raises(DataError, match=r"categories\[0\].*beyond 2\^53"):
        load_coco_annotations(ann, tmp_path / "img")


def test_a_failing_final_evaluation_keeps_the_final_checkpoint_and_resume_finishes(write_tiny_config, tmp_path,
                                                                                  monkeypatch):
    import focaldet.engine.trainer as trainer

    cfg = write_tiny_config(work_dir=tmp_path / "run", train={"max_iters": 2, "ckpt_interval": 5})
    real = trainer.evaluate_model

    def crash(*a, **k):
        raise RuntimeError("evaluator crashed")
    monkeypatch.setattr(trainer, "evaluate_model", crash)
    with pytest.raises(RuntimeError, match="evaluator crashed"):
        train(load_config(cfg), stream=open(os.devnull, "w"))
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert ckpt["iter"] == 2  # written before the evaluation
    assert not (tmp_path / "run" / "result.json").exists()

    monkeypatch.setattr(trainer, "evaluate_model", real)
    result = train(load_config(cfg, ["runtime.resume=auto"]), stream=open(os.devnull, "w"))
    assert result["status"] == "finished" and result["iterations"] == 2
    assert "AP" in result["metrics"]  # the final evaluation was redone
    assert (tmp_path / "run" / "eval" / "final.json").is_file()


# ------------------------------------------------------------------------------------------
# 6. memory: one bad input must not ask for gigabytes
# ------------------------------------------------------------------------------------------
def test_an_image_with_100000_boxes_is_refused_for_training_naming_it(tmp_path):
    """Loading and evaluating such a file is fine (tests/data/test_bad_inputs.py loads 50,000
    boxes); training on it would make the anchor matching ask for tens of GB."""
    from PIL import Image

    from focaldet.config import DataConfig
    from focaldet.data.loader import build_dataset
    from focaldet.data.validation import MAX_BOXES_PER_IMAGE

    (tmp_path / "img").mkdir()
    Image.new("RGB", (64, 64)).save(tmp_path / "img" / "a.jpg")
    Image.new("RGB", (64, 64)).save(tmp_path / "img" / "b.jpg")
    n = 100_000
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 50, (n, 2)).round(2).tolist()
    data = {"images": [{"id": 4, "file_name": "b.jpg", "width": 64, "height": 64},
                       {"id": 5, "file_name": "a.jpg", "width": 64, "height": 64}],
            "annotations": [{"id": i, "image_id": 5, "category_id": 1, "bbox": [x, y, 4, 4]}
                            for i, (x, y) in enumerate(xy)],
            "categories": [{"id": 1, "name": "dot"}]}
    (tmp_path / "a.json").write_text(json.dumps(data))
    cfg = DataConfig(train_ann=str(tmp_path / "a.json"), train_images=str(tmp_path / "img"),
                     val_ann=str(tmp_path / "a.json"), val_images=str(tmp_path / "img"))
    assert len(build_dataset(cfg, train=False)) == 2  # evaluating on it is fine
    with pytest.raises(DataError, match=rf"images\[1\] \(id 5\): 100000 boxes in one image; training supports "
                                        rf"at most {MAX_BOXES_PER_IMAGE}"):
        build_dataset(cfg, train=True)


def test_a_checkpoint_declaring_far_more_bytes_than_it_holds_is_refused_before_inflating(tmp_path):
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        with zf.open("archive/data/0", "w", force_zip64=True) as fh:
            zeros = bytes(1 << 20)
            for _ in range(200):  # 200 MiB of zeros, about 200 KiB deflated
                fh.write(zeros)
    assert bomb.stat().st_size < 2**20
    with pytest.raises(CheckpointError, match="declare 200 MiB"):
        load_checkpoint(bomb)


def test_a_real_checkpoint_is_not_mistaken_for_a_bomb(good_checkpoint):  # noqa: F811
    assert load_checkpoint(good_checkpoint[0])["iter"] == 1


@pytest.mark.parametrize("override,needle", [
    ("data.size_divisibility=100000", "data.size_divisibility: 100000 is out of range [1, 1024]"),
    ("data.max_size=10000000", "data.max_size"),
    ("data.train_sizes=[100000]", "data.train_sizes[]"),
    ("data.batch_size=100000", "data.batch_size"),
    ("model.anchors.sizes=[1e9,2,3,4,5]", "model.anchors.sizes[]"),
    ("model.head_width=1000000", "model.head_width"),
    ("model.inference.detections_per_img=1000000000", "model.inference.detections_per_img"),
    ("data.generator.size=100000", "data.generator.size"),
])
def test_config_values_that_would_ask_for_huge_memory_are_refused(tmp_path, capsys, override, needle):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"runtime: {{work_dir: {tmp_path / 'run'}}}\n")
    _one_line_error(capsys, main(["train", str(cfg), override]), needle, str(cfg))
    assert not (tmp_path / "run").exists()
