"""``focaldet export``: the ONNX file (onnxruntime) and the TorchScript archive (``torch.jit.load``)
give the detections of ``focaldet predict`` on real images; ``--raw`` anchors follow docs/spec.md
formula; bad inputs are one-line errors."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from focaldet.cli.main import main

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
BOX_TOL, SCORE_TOL = 1e-3, 1e-4  # pixels of the original image; score units


# ---------------------------------------------------------------------------------------------
# Reference: what `focaldet predict` writes, per image
# ---------------------------------------------------------------------------------------------
def predict_detections(weights, images, out_dir) -> dict[str, np.ndarray]:
    """file name → rows ``[category_id, x, y, w, h, score]`` from predict's results.json."""
    assert main(["predict", "--weights", str(weights), *map(str, images), "--out", str(out_dir)]) == 0
    records = json.loads((out_dir / "images.json").read_text())["images"]
    names = {r["id"]: r["file_name"] for r in records}
    rows: dict[str, list] = {names[i]: [] for i in names}
    for r in json.loads((out_dir / "results.json").read_text()):
        rows[names[r["image_id"]]].append([r["category_id"], *r["bbox"], r["score"]])
    return {k: np.array(v, dtype=np.float64).reshape(-1, 6) for k, v in rows.items()}


def preprocess(path, meta):
    """predict's input pipeline, driven by the file's metadata: resize the short side to
    ``test_size`` (long side ≤ ``max_size``), pad to a multiple of the file's ``size_divisibility``. → (images, image_sizes, scale)."""
    from focaldet.data.collate import collate
    from focaldet.data.images import read_image
    from focaldet.data.transforms import ResizeShortSide

    image = read_image(path)
    target = {"image_id": 1, "scale": 1.0}
    resized, target = ResizeShortSide([meta["test_size"]], meta["max_size"])(image, target, np.random.default_rng(0))
    batch = collate([(resized, target)], size_divisibility=meta["size_divisibility"])
    return batch.images, torch.tensor(batch.image_sizes, dtype=torch.int64), batch.scales[0]


def as_rows(outputs, i: int, scale: float, cat_ids) -> np.ndarray:
    """Image ``i`` of the exported outputs as predict's rows (original pixels, xywh)."""
    boxes, scores, labels, num = outputs
    n = int(num[i])
    assert bool((labels[i, n:] == -1).all()) and bool((scores[i, n:] == 0).all())  # documented padding
    b = boxes[i, :n].double().numpy() / scale
    cats = np.asarray(cat_ids)[labels[i, :n].numpy()]
    return np.column_stack([cats, b[:, :2], b[:, 2:] - b[:, :2], scores[i, :n].double().numpy()])


def assert_same_detections(got: np.ndarray, ref: np.ndarray, where: str) -> None:
    assert len(ref) > 0, f"{where}: the reference has no detections; the test would prove nothing"
    assert got.shape == ref.shape, f"{where}: {len(got)} detections, predict has {len(ref)}"
    # by score, and equal scores by label and box: detections are a set, and which of two exactly
    # tied detections comes first differs between runtimes (seen on an AVX-512 CPU)
    got, ref = (x[np.lexsort((x[:, 2], x[:, 1], x[:, 0], -x[:, 5]))] for x in (got, ref))
    assert np.array_equal(got[:, 0], ref[:, 0]), f"{where}: labels differ"
    assert np.abs(got[:, 1:5] - ref[:, 1:5]).max() <= BOX_TOL, f"{where}: boxes differ"
    assert np.abs(got[:, 5] - ref[:, 5]).max() <= SCORE_TOL, f"{where}: scores differ"


# ---------------------------------------------------------------------------------------------
# Parity with predict
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_onnx_matches_predict_on_real_images(trained_checkpoint, real_images, tmp_path):
    pytest.importorskip("onnxruntime")
    import onnx

    from focaldet.export import run_exported

    out = tmp_path / "model.onnx"
    assert main(["export", "--weights", str(trained_checkpoint), "--format", "onnx", "--out", str(out),
                 "--dynamic"]) == 0
    model = onnx.load(str(out))
    assert [i.name for i in model.graph.input] == ["images", "image_sizes"]
    assert [o.name for o in model.graph.output] == ["boxes", "scores", "labels", "num_detections"]
    meta = json.loads({p.key: p.value for p in model.metadata_props}["focaldet"])
    ref = predict_detections(trained_checkpoint, real_images, tmp_path / "pred")
    same_size = []
    for path in real_images:
        images, sizes, scale = preprocess(path, meta)
        outputs = run_exported(out, "onnx", images, sizes)
        assert outputs[0].dtype == torch.float32 and outputs[2].dtype == torch.int64
        assert_same_detections(as_rows(outputs, 0, scale, meta["cat_ids"]), ref[str(path)], f"onnx {path.name}")
        if tuple(images.shape[-2:]) == (128, 128):
            same_size.append((path, images, sizes, scale))
    # the dynamic batch: the digit images in one call give the same detections
    images = torch.cat([s[1] for s in same_size])
    outputs = run_exported(out, "onnx", images, torch.cat([s[2] for s in same_size]))
    for i, (path, _, _, scale) in enumerate(same_size):
        assert_same_detections(as_rows(outputs, i, scale, meta["cat_ids"]), ref[str(path)], f"onnx batch {path.name}")


@pytest.mark.slow
def test_torchscript_matches_predict_on_real_images(trained_checkpoint, real_images, tmp_path):
    ref = predict_detections(trained_checkpoint, real_images, tmp_path / "pred")
    archives = {}

    def archive(size: str):  # TorchScript is traced at one size: one archive per padded size
        if size not in archives:
            out = tmp_path / f"model_{size}.ts"
            assert main(["export", "--weights", str(trained_checkpoint), "--format", "torchscript", "--out",
                         str(out), "--size", size]) == 0
            files = {"focaldet.json": ""}
            archives[size] = torch.jit.load(str(out), _extra_files=files), json.loads(files["focaldet.json"])
        return archives[size]

    _, meta = archive("128")
    for path in real_images:
        images, sizes, scale = preprocess(path, meta)
        module, _ = archive("x".join(map(str, images.shape[-2:])).replace("128x128", "128"))
        with torch.no_grad():
            outputs = module(images, sizes)
        assert_same_detections(as_rows(outputs, 0, scale, meta["cat_ids"]), ref[str(path)], f"torchscript {path.name}")
    assert len(archives) >= 2  # images of more than one padded size were checked


@pytest.mark.parametrize("loss", ["focal", "softmax_ce"])
def test_torchscript_matches_eager_postprocessing_per_family(loss, tmp_path):
    """Both head families, a batch of two with different valid sizes (clipping, padding mask):
    the archive gives the model's own eager detections."""
    ckpt, model = random_checkpoint(tmp_path, loss=loss, prior_prob=0.3)  # scores above 0.05 from the start
    out = tmp_path / "model.ts"
    assert main(["export", "--weights", str(ckpt), "--format", "torchscript", "--out", str(out), "--size", "128x256"]) == 0
    module = torch.jit.load(str(out))
    images = torch.rand(2, 3, 128, 256, generator=torch.Generator().manual_seed(3))
    sizes = [(128, 256), (97, 180)]
    with torch.no_grad():
        boxes, scores, labels, num = module(images, torch.tensor(sizes))
        want = model(images, sizes)
    for i, w in enumerate(want):
        n = int(num[i])
        assert n == len(w["scores"]) > 0
        assert torch.equal(labels[i, :n], w["labels"])
        torch.testing.assert_close(boxes[i, :n], w["boxes"], rtol=0, atol=1e-4)
        torch.testing.assert_close(scores[i, :n], w["scores"], rtol=0, atol=1e-6)
        assert float(boxes[i, :n, 2].max()) <= sizes[i][1] and float(boxes[i, :n, 3].max()) <= sizes[i][0]


# ---------------------------------------------------------------------------------------------
# --raw: anchors against the docs/spec.md formula, outputs against the network
# ---------------------------------------------------------------------------------------------
def reference_anchors(size, base_sizes, scales, ratios, strides=(8, 16, 32, 64, 128)) -> np.ndarray:
    """float64 anchors, level-major, then location (y, x), then ratio, then scale: centre
    (x·s, y·s), width √(area/ratio), height √(area·ratio), area = (base·scale)²."""
    H, W = (-(-v // 128) * 128 for v in size)
    rows = []
    for base, s in zip(base_sizes, strides):
        for y in range(math.ceil(H / s)):
            for x in range(math.ceil(W / s)):
                for r in ratios:
                    for sc in scales:
                        a = base * sc
                        w, h = a / math.sqrt(r), a * math.sqrt(r)
                        rows.append([x * s - w / 2, y * s - h / 2, x * s + w / 2, y * s + h / 2])
    return np.array(rows)


def random_checkpoint(tmp_path, loss="focal", **model_cfg):
    """An untrained small model for 3 classes, saved as a focaldet checkpoint → (path, model)."""
    from focaldet.config import config_from_dict
    from focaldet.engine.checkpoint import save_checkpoint
    from focaldet.model import build_model

    cfg = config_from_dict({"model": {"backbone": "resnet18", "norm": "gn", "frozen_stages": 0, "fpn_channels": 16,
                                      "head_depth": 1, "head_width": 16, "anchors": {"sizes": [16, 32, 64, 128, 256]},
                                      **model_cfg}, "loss": {"name": loss}})
    torch.manual_seed(0)
    model = build_model(cfg, num_classes=3).eval()
    ckpt = tmp_path / "random.pt"
    save_checkpoint(ckpt, {"model": model.state_dict(), "iter": 0, "config": cfg.to_dict(),
                           "class_names": ["a", "b", "c"], "cat_ids": [1, 2, 5]})
    return ckpt, model


def test_raw_torchscript_anchors_follow_the_formula(tmp_path):
    ckpt, model = random_checkpoint(tmp_path)
    out = tmp_path / "raw.ts"
    assert main(["export", "--weights", str(ckpt), "--format", "torchscript", "--out", str(out), "--raw",
                 "--size", "128x256"]) == 0
    module = torch.jit.load(str(out))
    images = torch.rand(2, 3, 128, 256, generator=torch.Generator().manual_seed(1))
    sizes = torch.tensor([[128, 256], [100, 200]])
    with torch.no_grad():
        cls_logits, box_deltas, anchors = module(images, sizes)
        x = model.normalize(images, [(128, 256), (100, 200)])
        want_cls, want_box = model.head(model.fpn(model.backbone(x)))
    ref = reference_anchors((128, 256), [16, 32, 64, 128, 256], [1.0, 2 ** (1 / 3), 2 ** (2 / 3)], [0.5, 1.0, 2.0])
    assert anchors.dtype == torch.float32 and anchors.shape == ref.shape
    assert np.abs(anchors.double().numpy() - ref).max() <= 1e-4
    assert cls_logits.shape == (2, ref.shape[0], 3) and box_deltas.shape == (2, ref.shape[0], 4)
    torch.testing.assert_close(cls_logits, want_cls, rtol=0, atol=1e-5)
    torch.testing.assert_close(box_deltas, want_box, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------
def _one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("  hint: "))
    return err


def test_not_a_focaldet_checkpoint(tmp_path, capsys):
    bad = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, bad)
    line = _one_line_error(capsys, ["export", "--weights", str(bad), "--format", "torchscript", "--out",
                                    str(tmp_path / "x.ts")])
    assert line.startswith("focaldet export: error: ") and "other.pt: not a focaldet checkpoint" in line
    assert not (tmp_path / "x.ts").exists()


@pytest.mark.parametrize("opset", ["9", "99"])
def test_unsupported_opset(tmp_path, capsys, opset):
    line = _one_line_error(capsys, ["export", "--weights", str(tmp_path / "any.pt"), "--format", "onnx",
                                    "--out", str(tmp_path / "x.onnx"), "--opset", opset])
    assert f"--opset {opset}: unsupported" in line and "18 to 23" in line


def test_missing_onnxruntime_is_named(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    err = _one_line_error(capsys, ["export", "--weights", str(tmp_path / "any.pt"), "--format", "onnx",
                                   "--out", str(tmp_path / "x.onnx")])
    assert "needs onnxruntime, which is not installed" in err and "pip install 'focaldet[export]'" in err


def test_dynamic_torchscript_is_refused(tmp_path, capsys):
    line = _one_line_error(capsys, ["export", "--weights", str(tmp_path / "any.pt"), "--format", "torchscript",
                                    "--out", str(tmp_path / "x.ts"), "--dynamic"])
    assert "--dynamic applies to ONNX only" in line
