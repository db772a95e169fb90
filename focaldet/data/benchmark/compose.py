"""Cut-and-paste compositing ("Cut, Paste and Learn", Dwibedi et al. 2017) with per-pixel
occlusion tracking.

One image is rendered from a NumPy ``Generator`` seeded by ``(seed, split, index)`` alone, so any
image can be regenerated on its own and the result does not depend on the order or the number of
worker processes. The class of every pasted object is planned per split beforehand
(:func:`plan_labels`) so the class histogram follows the Zipf law closely even for small splits.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageFilter

from .sources_stamps import Exemplar

# paste geometry and photometric jitter
MIN_VISIBLE_FRACTION = 0.25  # objects less visible than this are not annotated
MIN_BOX_SIDE = 4  # px; smaller visible boxes are not annotated either
ALPHA_VISIBLE = 0.5  # a pixel belongs to an object where its alpha is at least this
LONG_SIDE_RANGE = (0.05, 0.95)  # object long side / image side, drawn log-uniformly
MIN_LONG_SIDE = 10  # px
MAX_ROTATION_DEG = 15.0
FEATHER_RADIUS = (0.4, 1.2)  # px, Gaussian blur of the alpha matte
BRIGHTNESS = (0.7, 1.3)
SATURATION = (0.6, 1.4)
NOISE_SIGMA = 2.0  # grey levels of sensor-like noise over the whole composite (hides paste seams)
DISTRACTOR_RATE = 0.7  # mean unlabelled cut-outs per image (Poisson)


@dataclass
class SplitObjects:
    """The object pools one split draws from."""

    exemplars: list[list[Exemplar]]  # per label (0..K-1), the exemplars this split may use
    distractors: list[Exemplar]
    tint_objects: bool = False  # paint white cut-outs (digits) with a random ink colour
    long_side_range: tuple[float, float] = LONG_SIDE_RANGE  # object long side / image side
    min_visible_fraction: float = MIN_VISIBLE_FRACTION


@dataclass
class Instance:
    label: int
    bbox: tuple[int, int, int, int]  # x, y, w, h in pixels: the visible part, tight
    area: int  # visible pixels
    visible_fraction: float
    exemplar: str = ""
    paste_index: int = -1  # this object's pixels are ``instance_map == paste_index + 1``


@dataclass
class Rendered:
    image: np.ndarray  # (S, S, 3) uint8
    instances: list[Instance]
    instance_map: np.ndarray  # (S, S) int32: 0 background, i+1 for the i-th pasted object
    pasted: list[dict] = field(default_factory=list)  # every paste: label (-1 distractor), full_area, kept


def zipf_probabilities(num_classes: int, exponent: float) -> np.ndarray:
    """p_k ∝ (k+1)^-exponent for rank k = 0..K-1 (rank 0 is the head class)."""
    w = np.arange(1, num_classes + 1, dtype=np.float64) ** -exponent
    return w / w.sum()


def plan_labels(num_images: int, probs: np.ndarray, mean_objects: float, rng: np.random.Generator,
                min_per_class: int = 1) -> list[np.ndarray]:
    """Labels of the objects of each image of a split.

    The split gets ``round(num_images · mean_objects · p_k)`` instances of class k, at least
    ``min_per_class``, so that every class appears; the instances are shuffled and dealt to
    images, each image getting at least one object while there are enough."""
    total = max(1, round(num_images * mean_objects))
    quota = np.maximum(min_per_class, np.rint(total * probs)).astype(np.int64)
    labels = rng.permutation(np.repeat(np.arange(len(probs)), quota))
    n = len(labels)
    base = np.minimum(1, n // max(1, num_images))  # one object each when there are enough
    extra = n - base * num_images
    if num_images == 0:
        return []
    counts = base + rng.multinomial(extra, np.full(num_images, 1.0 / num_images))
    return np.split(labels, np.cumsum(counts)[:-1])


def _background(bg: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random crop of ``bg`` (H, W[, 3]) uint8, rescaled to (size, size, 3) float32 in [0, 255]."""
    h, w = bg.shape[:2]
    side = rng.uniform(0.3, 1.0) * min(h, w)
    aspect = math.exp(rng.uniform(-0.25, 0.25))
    ch, cw = min(h, side * aspect), min(w, side / aspect)
    y0, x0 = rng.uniform(0, h - ch), rng.uniform(0, w - cw)
    im = Image.fromarray(bg)
    im = im.resize((size, size), Image.Resampling.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch),
                   reducing_gap=2.0)
    if rng.random() < 0.5:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    out = np.asarray(im, dtype=np.float32)
    if out.ndim == 2:  # grey photo: tint it so grey backgrounds are not a colour cue
        tint = rng.uniform(0.55, 1.1, size=3).astype(np.float32)
        out = out[..., None] * tint
    else:
        out = _jitter_colour(out, rng)
    return out


def _jitter_colour(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness and saturation jitter of float32 RGB (..., 3) in [0, 255]."""
    grey = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    sat = np.float32(rng.uniform(*SATURATION))
    bright = np.float32(rng.uniform(*BRIGHTNESS))
    return np.clip((grey[..., None] + sat * (rgb - grey[..., None])) * bright, 0, 255)


def _prepare_cutout(ex: Exemplar, size: int, rng: np.random.Generator, tint: bool,
                    long_side_range: tuple[float, float] = LONG_SIDE_RANGE) -> tuple[np.ndarray, np.ndarray]:
    """Scale, flip, rotate, jitter and feather one cut-out.

    Returns ``(rgb, alpha)``: float32 (h, w, 3) in [0, 255] and float32 (h, w) in [0, 1]."""
    lo = max(MIN_LONG_SIDE, long_side_range[0] * size)
    hi = max(lo + 1, long_side_range[1] * size)
    long_side = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    im = Image.fromarray(ex.rgba)
    s = long_side / max(im.size)
    new = (max(2, round(im.width * s)), max(2, round(im.height * s)))
    # Pillow resamples RGBA with premultiplied alpha, so transparent pixels do not bleed colour
    im = im.resize(new, Image.Resampling.BILINEAR, reducing_gap=2.0)
    if rng.random() < 0.5:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    angle = rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG)
    feather = rng.uniform(*FEATHER_RADIUS)
    pad = 2 + int(math.ceil(feather * 2))
    canvas = Image.new("RGBA", (im.width + 2 * pad, im.height + 2 * pad), (0, 0, 0, 0))
    canvas.paste(im, (pad, pad))
    im = canvas.rotate(angle, Image.Resampling.BILINEAR, expand=True)
    alpha = im.getchannel("A").filter(ImageFilter.GaussianBlur(feather))
    rgb = np.asarray(im.convert("RGB"), dtype=np.float32)
    a = np.asarray(alpha, dtype=np.float32) * np.float32(1 / 255)
    if tint:  # white ink -> a random ink colour
        ink = rng.uniform(0, 255, size=3).astype(np.float32)
        rgb = rgb * (ink / 255.0)
    rgb = _jitter_colour(rgb, rng)
    return rgb, a


def render_image(objects: SplitObjects, labels: np.ndarray, backgrounds: tuple[tuple[str, np.ndarray], ...],
                 size: int, rng: np.random.Generator) -> Rendered:
    """Composite one ``size`` × ``size`` image with an object of each class in ``labels`` plus
    Poisson(``DISTRACTOR_RATE``) distractors, pasted in random order.

    Occlusion is tracked per pixel in ``instance_map``; an object's box is the tight box of the
    pixels where it is still the top layer with alpha ≥ 0.5, and objects with less than
    ``MIN_VISIBLE_FRACTION`` of their own pixels left visible (in-image and unoccluded) are not
    annotated."""
    _, bg = backgrounds[int(rng.integers(len(backgrounds)))]
    canvas = _background(bg, size, rng)
    n_distract = min(3, int(rng.poisson(DISTRACTOR_RATE))) if objects.distractors else 0
    paste_labels = np.concatenate([np.asarray(labels, np.int64), np.full(n_distract, -1, np.int64)])
    paste_labels = paste_labels[rng.permutation(len(paste_labels))]
    inst_map = np.zeros((size, size), np.int32)
    pasted = []
    for i, label in enumerate(paste_labels):
        pool = objects.distractors if label < 0 else objects.exemplars[label]
        ex = pool[int(rng.integers(len(pool)))]
        rgb, a = _prepare_cutout(ex, size, rng, objects.tint_objects and label >= 0, objects.long_side_range)
        h, w = a.shape
        # centre anywhere in the image: objects may be cut by the border, like real photos
        cy, cx = rng.uniform(0, size), rng.uniform(0, size)
        y0, x0 = int(round(cy - h / 2)), int(round(cx - w / 2))
        iy0, ix0, iy1, ix1 = max(0, y0), max(0, x0), min(size, y0 + h), min(size, x0 + w)
        full_area = int((a >= ALPHA_VISIBLE).sum())
        pasted.append({"label": int(label), "full_area": full_area, "exemplar": ex.key,
                       "box": (iy0, ix0, iy1, ix1)})
        if iy1 <= iy0 or ix1 <= ix0:
            continue
        sa = a[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0, None]
        region = canvas[iy0:iy1, ix0:ix1]
        region += sa * (rgb[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] - region)
        inst_map[iy0:iy1, ix0:ix1][sa[..., 0] >= ALPHA_VISIBLE] = i + 1
    canvas += rng.standard_normal(canvas.shape, dtype=np.float32) * np.float32(NOISE_SIGMA)
    image = np.clip(canvas + 0.5, 0, 255).astype(np.uint8)

    visible = np.bincount(inst_map.ravel(), minlength=len(paste_labels) + 1)
    instances = []
    for i, p in enumerate(pasted):
        p["kept"] = False
        if p["label"] < 0 or visible[i + 1] == 0 or p["full_area"] == 0:
            continue
        frac = visible[i + 1] / p["full_area"]
        iy0, ix0, iy1, ix1 = p["box"]
        mask = inst_map[iy0:iy1, ix0:ix1] == i + 1  # an object can only lose pixels, never gain
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        y, x = iy0 + rows[0], ix0 + cols[0]
        bh, bw = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
        if frac < objects.min_visible_fraction or bh < MIN_BOX_SIDE or bw < MIN_BOX_SIDE:
            continue
        p["kept"] = True
        instances.append(Instance(p["label"], (int(x), int(y), int(bw), int(bh)), int(visible[i + 1]),
                                  float(frac), p["exemplar"], i))
    return Rendered(image, instances, inst_map, pasted)
