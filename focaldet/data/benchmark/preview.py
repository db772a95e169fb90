"""A contact sheet of generated images with their ground-truth boxes and class names drawn."""
from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw

from focaldet.utils.io import atomic_write

_PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
            (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255)]


def preview_grid(ann_file, image_dir, out_png, *, image_ids=None, cols: int = 2, rows: int = 2,
                 cell: int = 288, colors: int = 0) -> Path:
    """Draw ``cols × rows`` images of a COCO file (the first ones, or ``image_ids``) with their
    boxes and names into one PNG of ``cols·cell × rows·cell`` pixels (``colors`` > 0: a palette
    PNG with that many colours, several times smaller)."""
    data = json.loads(Path(ann_file).read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    images = {im["id"]: im for im in data["images"]}
    ids = list(image_ids) if image_ids is not None else [im["id"] for im in data["images"]][: cols * rows]
    by_image: dict[int, list[dict]] = {}
    for a in data["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    sheet = Image.new("RGB", (cols * cell, rows * cell), (255, 255, 255))
    for n, image_id in enumerate(ids[: cols * rows]):
        info = images[image_id]
        with Image.open(Path(image_dir) / info["file_name"]) as im:
            im = im.convert("RGB")
        s = cell / max(im.size)
        im = im.resize((round(im.width * s), round(im.height * s)), Image.Resampling.BILINEAR)
        draw = ImageDraw.Draw(im)
        for a in by_image.get(image_id, []):
            x, y, w, h = (v * s for v in a["bbox"])
            colour = _PALETTE[(a["category_id"] - 1) % len(_PALETTE)]
            draw.rectangle([x, y, x + w - 1, y + h - 1], outline=colour, width=2)
            label = names[a["category_id"]]
            tw = draw.textlength(label)
            ty = y - 11 if y >= 11 else y + 1
            draw.rectangle([x, ty, x + tw + 3, ty + 10], fill=colour)
            draw.text((x + 2, ty - 1), label, fill=(0, 0, 0))
        sheet.paste(im, ((n % cols) * cell, (n // cols) * cell))
    if colors:
        sheet = sheet.quantize(colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG)
    out_png = Path(out_png)
    atomic_write(out_png, lambda fh: sheet.save(fh, format="PNG", optimize=True))
    return out_png
