"""The wheel works outside the checkout: build it, install it (no dependencies: those of this
environment are reused) into a fresh virtual environment in one folder, and run the commands a
user starts with from another folder. About 1-2 minutes on 2 cores."""
from __future__ import annotations

import importlib.util
import os
import shutil
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOP_LEVEL_SKIP = {".git", ".venv", "runs", "data", "build", "dist", ".pytest_cache", ".cache"}


def _skip(folder: str, names: list[str]) -> set[str]:
    """Local state of the checkout (only at its top: focaldet/data is a package), caches anywhere."""
    top = TOP_LEVEL_SKIP if Path(folder) == REPO else set()
    return {n for n in names if n in top or n == "__pycache__" or n.endswith(".egg-info")}


def build_wheel(tmp: Path) -> Path:
    """``pip wheel`` of a copy of the checkout (the checkout gets no build/ or egg-info)."""
    src = tmp / "src"
    shutil.copytree(REPO, src, symlinks=True, ignore=_skip)
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q", "-w",
           str(tmp / "dist"), str(src)]
    if importlib.util.find_spec("setuptools") is not None:
        cmd.insert(4, "--no-build-isolation")  # the build backend is here already: no download
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    (wheel,) = (tmp / "dist").glob("focaldet-*.whl")
    return wheel


def fresh_venv(path: Path) -> Path:
    """A new environment whose own site-packages comes first and that sees this environment's
    packages after it (a .pth line), so the installed focaldet is the wheel's and nothing else."""
    venv.EnvBuilder(with_pip=False).create(path)
    python = path / "bin" / "python"
    own = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         check=True, capture_output=True, text=True).stdout.strip()
    shared = [p for p in site.getsitepackages() if Path(p).is_dir()]
    Path(own, "zz_shared_site.pth").write_text("\n".join(shared) + "\n")
    return python


@pytest.mark.slow
def test_wheel_installed_elsewhere_runs_the_quick_paths(tmp_path):
    wheel = build_wheel(tmp_path / "build")
    names = zipfile.ZipFile(wheel).namelist()
    for preset in ("lt_digits_cpu", "lt_stamps_cpu", "lt_stamps_cpu_scratch", "retinanet_r50_fpn_1x_coco", "lvis_efl_r50_2x"):
        assert f"focaldet/configs/{preset}.yaml" in names
    assert not any(n.startswith(("tests/", "benchmarks/", "configs/")) for n in names)

    python = fresh_venv(tmp_path / "env")
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--disable-pip-version-check",
                    "-q", str(wheel)], check=True, capture_output=True, text=True)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    # one thread: on a shared 2-core machine, two OpenMP threads per process wait on each other
    env.update(FOCALDET_COMPILE="0", OMP_NUM_THREADS="1", PATH=f"{python.parent}{os.pathsep}{env.get('PATH', '')}")

    def run(*args: str) -> str:
        done = subprocess.run(list(args), cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        return done.stdout

    where = run(str(python), "-c", "import focaldet; print(focaldet.__file__)")
    assert where.strip().startswith(str(tmp_path / "env")), f"focaldet imported from {where}"
    assert "export" in run(str(python), "-m", "focaldet", "--help")
    focaldet = str(python.parent / "focaldet")  # the console script the wheel installed
    out = run(focaldet, "data", "make", "lt-digits", "--out", "digits", "--train", "12", "--val", "4",
              "--size", "128", "--quiet")
    assert "wrote 16 images" in out and (work / "digits" / "annotations" / "train.json").is_file()
    out = run(focaldet, "train", "lt_digits_cpu", "--no-progress", "data.generator.train=16", "data.generator.val=4",
              "data.batch_size=2", "data.num_workers=0", "train.max_iters=2", "train.warmup_iters=1",
              "train.milestones=[2]", "runtime.work_dir=runs/tiny", "runtime.threads=1")
    assert "finished 2 iterations" in out and (work / "runs" / "tiny" / "checkpoints" / "last.pt").is_file()
    out = run(focaldet, "demo", "--quick", "--benchmark", "lt-digits", "--out", "runs/demo", "runtime.threads=1")
    assert "report:" in out and (work / "runs" / "demo").is_dir()
