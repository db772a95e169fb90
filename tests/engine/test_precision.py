"""``result.json`` records the arithmetic a run really trained in: ``train.amp=bf16`` is bfloat16
only where the CPU computes it natively, float32 (with a one-line notice) elsewhere."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from focaldet.cli.main import main
from focaldet.engine import amp


def _cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="reads the CPU flags from /proc/cpuinfo")
def test_bf16_request_records_what_the_cpu_ran(write_tiny_config, tmp_path, capsys, monkeypatch):
    # the notice is printed once per process: forget that an earlier test in this process saw it
    monkeypatch.setattr(amp, "_warned", set())
    cfg = write_tiny_config(train={"amp": "bf16", "max_iters": 1, "milestones": [1], "warmup_iters": 0,
                                   "ckpt_interval": 1})
    assert main(["train", str(cfg), "--no-progress", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    # oneDNN runs bfloat16 natively with AVX512-BF16 or AMX (the kernel's CPU flags, not torch's answer)
    native = bool({"avx512_bf16", "amx_bf16"} & _cpu_flags())
    assert result["precision"] == ("bfloat16" if native else "float32")
    assert ("this run uses float32" in err) == (not native)
    assert result["device"].startswith("cpu: ") and result["device"].endswith(", 1 thread")
