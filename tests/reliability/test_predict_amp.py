"""``focaldet predict --amp``: the fast mode switch for inference on your own photos (issue 12).

On a CPU with native bfloat16 (AVX512-BF16/AMX) ``--amp bf16`` really runs the forward pass in
bfloat16 (the scores differ from float32 in the third significant digit, not more); elsewhere it
runs float32 with a notice (the results are the float32 ones, byte for byte). ``--amp fp16`` off
CUDA is a one-line error."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from focaldet.cli.main import main
from focaldet.engine import amp
from focaldet.engine.amp import cpu_has_fast_bf16
from focaldet.engine.checkpoint import save_checkpoint

from .test_corpus import _one_line_error, good_checkpoint, photos  # noqa: F401 — fixtures


@pytest.fixture
def scoring_checkpoint(good_checkpoint, tmp_path):
    """The untrained checkpoint with class-output biases of 0 and random class weights, so that
    every anchor scores ~0.5 with varied scores: detections to compare, as in the benchmarks."""
    _, state, _ = good_checkpoint
    model = {k: v.clone() for k, v in state["model"].items()}
    keys = [k for k in model if k.endswith("cls_logits.bias")]
    assert keys, sorted(model)[:10]
    gen = torch.Generator().manual_seed(0)
    for k in keys:
        model[k].zero_()
        w = k[:-len("bias")] + "weight"
        model[w] = torch.randn(model[w].shape, generator=gen) * 0.05
    return save_checkpoint(tmp_path / "scoring.pt", {**state, "model": model})


def _run(weights, photos, out, *extra) -> list[dict]:
    code = main(["predict", "--weights", str(weights), str(photos), "--out", str(out), "--device", "cpu",
                 "--quiet", *extra])
    assert code == 0
    return json.loads((out / "results.json").read_text())


def test_predict_amp_bf16_against_float32(scoring_checkpoint, photos, tmp_path, capsys, monkeypatch):
    # the notice is printed once per process: forget that an earlier test in this process saw it
    monkeypatch.setattr(amp, "_warned", set())
    fp32 = _run(scoring_checkpoint, photos, tmp_path / "fp32", "--amp", "none")
    bf16 = _run(scoring_checkpoint, photos, tmp_path / "bf16", "--amp", "bf16")
    err = capsys.readouterr().err
    assert len(fp32) > 0
    a = np.sort([r["score"] for r in fp32])[::-1]
    b = np.sort([r["score"] for r in bf16])[::-1]
    if cpu_has_fast_bf16():
        assert "no native bfloat16" not in err
        assert fp32 != bf16  # bfloat16 arithmetic really ran
        n = min(len(a), len(b))
        assert abs(len(a) - len(b)) <= 0.05 * len(a)  # near-ties at the score threshold may flip
        np.testing.assert_allclose(b[:n], a[:n], rtol=2e-2, atol=1e-3)
    else:
        assert "no native bfloat16" in err
        assert fp32 == bf16


def test_predict_amp_fp16_on_cpu_is_one_line(good_checkpoint, photos, tmp_path, capsys):
    code = main(["predict", "--weights", str(good_checkpoint[0]), str(photos), "--out", str(tmp_path / "o"),
                 "--device", "cpu", "--amp", "fp16"])
    _one_line_error(capsys, code, "fp16 needs a CUDA device")
    assert not (tmp_path / "o").exists()  # refused before anything is written
