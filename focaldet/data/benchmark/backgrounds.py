"""Background photographs and textures that ship inside installed pip wheels.

Only files that are present in the installed package are read, directly from disk with Pillow /
NumPy: no loader that could download (scikit-image fetches some of its data through ``pooch``)
is ever called, so generation works offline. Each source is assigned to one split, so train and
val never share a background photograph.

Left out on purpose: images that show a benchmark class (``chelsea`` — a cat, ``coffee`` — a cup,
``coins``, scikit-learn's ``flower.jpg`` and ``china.jpg`` — trees, the ``horse`` silhouette),
synthetic test patterns (``color``, ``chessboard_*``, ``phantom``, logos), text scans, tiny
files, and duplicates (PyWavelets' ``camera`` is scikit-image's). The two motorcycle images are
one stereo pair, so both are in the same split.
"""
from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class BackgroundSource:
    name: str
    package: str  # importable package that ships the file
    relpath: str  # path of the file inside that package
    split: str  # "train" | "val"
    credit: str  # author / origin and licence as stated by the package

    def path(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"package {self.package!r} is not installed")
        return Path(list(spec.submodule_search_locations)[0]) / self.relpath


_SK = "skimage"
SOURCES: tuple[BackgroundSource, ...] = (
    # --- train ---
    BackgroundSource("astronaut", _SK, "data/astronaut.png", "train",
                     "NASA (astronaut Eileen Collins); public domain, per scikit-image"),
    BackgroundSource("retina", _SK, "data/retina.jpg", "train",
                     "Mikael Häggström (2014), CC0 1.0; via scikit-image"),
    BackgroundSource("hubble_deep_field", _SK, "data/hubble_deep_field.jpg", "train",
                     "NASA, public domain; via scikit-image"),
    BackgroundSource("camera", _SK, "data/camera.png", "train",
                     "Lav Varshney, CC0; via scikit-image"),
    BackgroundSource("brick", _SK, "data/brick.png", "train", "CC0Textures (Bricks25), CC0; via scikit-image"),
    BackgroundSource("gravel", _SK, "data/gravel.png", "train", "CC0Textures (Gravel04), CC0; via scikit-image"),
    BackgroundSource("moon", _SK, "data/moon.png", "train",
                     "scikit-image sample data (BSD-3-Clause package; no separate image licence stated)"),
    BackgroundSource("cell", _SK, "data/cell.png", "train", "Paul Müller et al., CC0; via scikit-image"),
    BackgroundSource("grace_hopper", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg", "train",
                     "US Navy photograph of Grace Hopper, public domain; via matplotlib sample_data"),
    BackgroundSource("aero", "pywt", "data/aero.npz", "train",
                     "PyWavelets bundled image (MIT-licensed package; no separate image licence stated)"),
    # --- val ---
    BackgroundSource("rocket", _SK, "data/rocket.jpg", "val", "SpaceX, public domain; via scikit-image"),
    BackgroundSource("ihc", _SK, "data/ihc.png", "val",
                     "CMMI immunohistochemistry image, no known copyright restrictions; via scikit-image"),
    BackgroundSource("grass", _SK, "data/grass.png", "val", "linolafett on DeviantArt, CC0; via scikit-image"),
    BackgroundSource("clock_motion", _SK, "data/clock_motion.png", "val",
                     "Stefan van der Walt, public domain; via scikit-image"),
    BackgroundSource("motorcycle_left", _SK, "data/motorcycle_left.png", "val",
                     "Middlebury 2014 stereo benchmark (Scharstein et al.); via scikit-image (BSD-3-Clause package)"),
    BackgroundSource("motorcycle_right", _SK, "data/motorcycle_right.png", "val",
                     "Middlebury 2014 stereo benchmark (Scharstein et al.); via scikit-image (BSD-3-Clause package)"),
    BackgroundSource("ascent", "pywt", "data/ascent.npz", "val",
                     "from public-domain-image.com (public domain); via PyWavelets"),
)


def available_sources(split: str) -> list[BackgroundSource]:
    """The sources of ``split`` whose file exists in this installation (missing ones are skipped)."""
    out = []
    for s in SOURCES:
        if s.split != split:
            continue
        try:
            if s.path().is_file():
                out.append(s)
        except FileNotFoundError:
            pass
    return out


def _read(path: Path) -> np.ndarray:
    if path.suffix == ".npz":
        with np.load(path) as z:
            arr = np.asarray(z[list(z.keys())[0]])
    else:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB") if im.mode not in ("L", "RGB") else im)
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return arr


@functools.lru_cache(maxsize=2)
def load_backgrounds(split: str) -> tuple[tuple[str, np.ndarray], ...]:
    """Decoded backgrounds of ``split`` as ``(name, array)``; array (H, W, 3) or (H, W) uint8
    (grey images stay grey here; the compositor tints them)."""
    out = tuple((s.name, _read(s.path())) for s in available_sources(split))
    if not out:
        raise FileNotFoundError(f"no bundled background image found for split {split!r}")
    return out
