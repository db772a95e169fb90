"""Object cut-outs for ``lt-stamps``: the RGBA photographs of Debian's ``tuxpaint-stamps-default``.

The stamps tree (``/usr/share/tuxpaint/stamps/<category>/...``) mixes photographic cut-outs with
drawings. Classes are defined by folder (plus a few single files moved to the class they belong
to), drawings are removed by folder name (``cartoon``) and by an image statistic, and a second set
of photographic stamps that belong to no class is kept as distractors (hard negatives).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

STAMPS_ROOT = Path("/usr/share/tuxpaint/stamps")

# class name -> (supercategory, folders or single files under the stamps root). Folders are not
# recursive: sub-folders (cartoon/, toys/, utensils/) are left out on purpose.
CLASSES: dict[str, tuple[str, tuple[str, ...]]] = {
    "bird": ("animal", ("animals/birds",)),
    "fruit": ("food", ("food/fruit", "plants/trees/rambutan.png")),
    "flower": ("plant", ("plants/flowers",)),
    "vegetable": ("food", ("food/vegetables",)),
    "coin": ("object", ("symbols/money/us/coins", "symbols/money/euro/coins",
                        "symbols/money/canadian/coins", "symbols/money/japanese")),
    "bovine": ("animal", ("animals/mammals/bovines",)),
    "tool": ("object", ("household/tools",)),
    "fish": ("animal", ("animals/fish",)),
    "planet": ("space", ("space/planets",)),
    "insect": ("animal", ("animals/insects",)),
    "rodent": ("animal", ("animals/mammals/rodents",)),
    "tree": ("plant", ("plants/trees",)),
    "string instrument": ("object", ("hobbies/music/string",)),
    "car": ("vehicle", ("vehicles/auto",)),
    "military vehicle": ("vehicle", ("military/vehicles",)),
    "marine mammal": ("animal", ("animals/mammals/aquatic",)),
    "equine": ("animal", ("animals/mammals/equines",)),
    "deer": ("animal", ("animals/mammals/deer",)),
    "big cat": ("animal", ("animals/mammals/cats",)),
    "nut": ("food", ("food/nuts",)),
    "dish": ("object", ("household/dishes", "household/kettle.png")),
    "canine": ("animal", ("animals/mammals/dogs",)),  # dog, dingo, fox
    "ape": ("animal", ("animals/mammals/apes",)),
    "marsupial": ("animal", ("animals/marsupials",)),
    "mushroom": ("plant", ("plants/mushrooms", "food/vegetables/mushroom.png")),
    "percussion": ("object", ("hobbies/music/percussion",)),  # drums, cymbal
    "bear": ("animal", ("animals/mammals/bears",)),
    "camel": ("animal", ("animals/mammals/camel",)),
}

# Files that sit in a class folder but belong elsewhere (moved above) or are not that class.
EXCLUDE_FROM_CLASSES = {
    "plants/trees/rambutan.png",  # a fruit
    "food/vegetables/mushroom.png",  # counted as a mushroom
    "plants/trees/holly_leaves.png",  # a sprig, not a tree
    "plants/trees/pinecone.png",
    "household/tools/cementmixer.png",  # a machine, kept as a distractor
    "household/tools/measuring_tape_mirror.png",  # a mirrored duplicate of measuring_tape.png
    "animals/fish/lobster.png", "animals/fish/shrimp.png",  # crustaceans: distractors
    "animals/insects/Brown_slug.png", "animals/insects/Woodlouse.png",  # not insects: distractors
    "space/planets/0_sun.png",  # a glow, not an object with an outline
}

# Photographs the statistic below rejects (clipped, saturated colours look "flat"); checked by eye.
PHOTO_OVERRIDES = {
    *(f"plants/flowers/flower{i}.png" for i in range(1, 11)),
    "animals/birds/albino_peahen.png", "animals/birds/pelican.png", "animals/mammals/bears/bear.png",
    "symbols/money/euro/coins/200.png", "space/planets/1_mercury.png", "space/planets/4_mars.png",
    "vehicles/auto/sedan.png", "vehicles/auto/sportscar2.png", "vehicles/auto/truck.png",
    "household/dishes/mug.png",
}
# ... and a stamp that passes it but is not a usable photo (most of the car is transparent)
NOT_PHOTOS = {"vehicles/emergency/sedan_police.png", "vehicles/emergency/sedan_police_mirror.png"}

# Photographic stamps that belong to no class: pasted unlabelled, so the detector must learn to
# ignore real objects that are not in the label set.
DISTRACTORS: tuple[str, ...] = (
    "town/roadsigns", "seasonal/christmas", "seasonal/easter", "seasonal/halloween",
    "seasonal/newyears", "seasonal/hanukkah", "sports", "clothes", "household",
    "household/arttools", "household/dishes/utensils", "hobbies", "hobbies/music/brass",
    "hobbies/music/wind", "space", "space/moon", "town", "town/monuments", "vehicles",
    "vehicles/construction", "vehicles/cycle", "vehicles/flight", "vehicles/flight/planes",
    "vehicles/masstransit", "vehicles/ship", "vehicles/race", "animals/mammals",
    "animals/amphibians", "animals/lizards", "animals/shellfish",
    "household/tools/cementmixer.png", "animals/fish/lobster.png", "animals/fish/shrimp.png",
    "animals/insects/Brown_slug.png", "animals/insects/Woodlouse.png",
)
# distractors that would be a labelled class if pasted (a bunny is a rodent-like mammal, a
# daffodil a flower, a bluebird a bird ...): never used, to keep the labels honest
EXCLUDE_FROM_DISTRACTORS = {
    "seasonal/easter/bunny.png", "seasonal/easter/bunny-egg.png", "seasonal/easter/bluebird.png",
    "seasonal/easter/butterfly.png", "seasonal/easter/daffodil.png", "seasonal/easter/chick.png",
    "seasonal/easter/chick-in-egg.png", "seasonal/easter/chick-hatched.png",
    "household/kettle.png", "vehicles/emergency/firetruck.png",
    "seasonal/christmas/Christmas_Tree_photo.png",  # a tree
    "space/moon/moon_full.png", "space/moon/moon_3qt.png", "space/moon/moon_crescent.png",
    "household/rubberduck.png", "animals/mammals/rabbit_little.png",  # rabbits are rodents here
}

# Photographs have smooth shading: few horizontally adjacent opaque pixels share an exact colour.
# Drawings are flat fills. Thresholds checked by eye on the whole tree (docs/benchmark.md).
MAX_FLAT_FRACTION = 0.12
MIN_COLOURS = 100  # distinct 15-bit colours among opaque pixels (RGB)
MIN_GREY_LEVELS = 20  # distinct 5-bit levels (grey stamps)


@dataclass(frozen=True)
class Exemplar:
    """One cut-out: ``rgba`` uint8 (h, w, 4), cropped to its opaque pixels, long side ≤ 400 px."""

    key: str  # path relative to the stamps root
    name: str  # English description from the .txt beside the stamp
    rgba: np.ndarray


def photo_statistics(rgba: np.ndarray) -> tuple[float, int, bool]:
    """(flat fraction, distinct colours, is grey) of the opaque pixels of ``rgba`` (h, w, 4) uint8."""
    opaque = rgba[..., 3] > 128
    rgb = rgba[..., :3].astype(np.int16)
    both = opaque[:, 1:] & opaque[:, :-1]
    same = (np.abs(rgb[:, 1:] - rgb[:, :-1]).sum(-1) == 0)
    flat = float(same[both].mean()) if both.any() else 1.0
    q = (rgba[..., :3][opaque] >> 3).astype(np.int32)
    grey = bool(len(q) and (q[:, 0] == q[:, 1]).all() and (q[:, 1] == q[:, 2]).all())
    colours = len(np.unique(q[:, 0] * 1024 + q[:, 1] * 32 + q[:, 2])) if len(q) else 0
    return flat, colours, grey


def is_photographic(rgba: np.ndarray, key: str = "") -> bool:
    """Photo or drawing? ``key`` (path under the stamps root) selects the by-eye overrides."""
    if key in NOT_PHOTOS:
        return False
    if key in PHOTO_OVERRIDES:
        return True
    flat, colours, grey = photo_statistics(rgba)
    return flat < MAX_FLAT_FRACTION and colours >= (MIN_GREY_LEVELS if grey else MIN_COLOURS)


def _stamp_name(png: Path) -> str:
    txt = png.with_suffix(".txt")
    try:
        first = txt.read_text(encoding="utf-8", errors="replace").splitlines()[0].strip()
    except (OSError, IndexError):
        first = ""
    return first.rstrip(".") or png.stem.replace("_", " ")


def load_cutout(path: Path, max_side: int = 400) -> np.ndarray:
    """The stamp as RGBA uint8 (h, w, 4), cropped to alpha > 0, long side at most ``max_side``."""
    with Image.open(path) as im:
        im = im.convert("RGBA")
        bbox = im.getchannel("A").point(lambda a: 255 if a > 8 else 0).getbbox()
        if bbox:
            im = im.crop(bbox)
        if max(im.size) > max_side:
            s = max_side / max(im.size)
            im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))),
                           Image.Resampling.LANCZOS, reducing_gap=3.0)
        return np.asarray(im, dtype=np.uint8).copy()


def _pngs(root: Path, entry: str) -> list[Path]:
    p = root / entry
    if p.suffix == ".png":
        return [p] if p.is_file() else []
    return sorted(p.glob("*.png")) if p.is_dir() else []


def stamps_available(root: Path = STAMPS_ROOT) -> bool:
    return (root / "animals" / "birds").is_dir()


@functools.lru_cache(maxsize=2)
def load_stamp_sources(
        root: str = str(STAMPS_ROOT)) -> tuple[dict[str, list[Exemplar]], list[Exemplar], dict[str, str]]:
    """Decode every photographic stamp once per process.

    Returns ``(classes, distractors, supercategories)``: ``classes`` maps class name to its
    exemplars (sorted by key), ``distractors`` the unlabelled cut-outs. Classes with no
    photographic stamp left are dropped."""
    base = Path(root)
    classes: dict[str, list[Exemplar]] = {}
    supercats: dict[str, str] = {}
    used: set[str] = set()
    for name, (supercat, entries) in CLASSES.items():
        exemplars = []
        for entry in entries:
            for png in _pngs(base, entry):
                key = png.relative_to(base).as_posix()
                if key in used or (key in EXCLUDE_FROM_CLASSES and key not in entries):
                    continue
                rgba = load_cutout(png)
                if is_photographic(rgba, key):
                    exemplars.append(Exemplar(key, _stamp_name(png), rgba))
                    used.add(key)
        if exemplars:
            classes[name] = sorted(exemplars, key=lambda e: e.key)
            supercats[name] = supercat
    distractors = []
    for entry in DISTRACTORS:
        for png in _pngs(base, entry):
            key = png.relative_to(base).as_posix()
            if key in used or key in EXCLUDE_FROM_DISTRACTORS or "/cartoon/" in key:
                continue
            rgba = load_cutout(png)
            if is_photographic(rgba, key):
                distractors.append(Exemplar(key, _stamp_name(png), rgba))
                used.add(key)
    return classes, sorted(distractors, key=lambda e: e.key), supercats
