"""Robust image reading: whatever is on disk becomes a (3, H, W) uint8 RGB tensor in the frame a
viewer shows, or a :class:`~focaldet.errors.DataError` that names the file.

- EXIF orientation is applied (``ImageOps.exif_transpose``): COCO tools and annotators see the
  displayed frame, so boxes are in that frame.
- Grayscale, palette, RGBA/LA (composited over white), CMYK and 16-bit grayscale are converted to
  8-bit RGB. 16-bit values ``v`` map to ``round(v / 257)`` (full range to full range).
- The pixel count is read from the header and checked *before* decoding; larger images are refused
  instead of exhausting memory.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from focaldet.errors import DataError

# Pillow's own decompression-bomb threshold (about 89.5 megapixels, e.g. 9459 x 9459).
DEFAULT_MAX_PIXELS = int(Image.MAX_IMAGE_PIXELS or 89_478_485)

_WHITE = (255, 255, 255)


def read_image(path: Union[str, os.PathLike], max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """Read ``path`` and return a ``(3, H, W)`` uint8 RGB tensor (H, W after EXIF orientation).

    Raises :class:`DataError` naming the file when it is missing, empty, not an image, truncated,
    or has more than ``max_pixels`` pixels.
    """
    return torch.from_numpy(read_image_array(path, max_pixels)).permute(2, 0, 1).contiguous()


def read_image_array(path: Union[str, os.PathLike], max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Like :func:`read_image` but returns an ``(H, W, 3)`` uint8 numpy array."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot access image file: {e.strerror or e}") from None
    if not path.is_file():
        raise DataError(f"{path}: not a regular file")
    if size == 0:
        raise DataError(f"{path}: empty image file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Our own pixel limit below replaces Pillow's warning; its hard error still applies.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image file (Pillow cannot identify its format)") from None
    except Image.DecompressionBombError as e:
        raise DataError(f"{path}: image too large to decode safely ({e})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot open image: {e}") from None
    with img:
        w, h = img.size
        if w <= 0 or h <= 0:
            raise DataError(f"{path}: image header reports an empty size {w}x{h}")
        if w * h > max_pixels:
            raise DataError(
                f"{path}: image is {w}x{h} = {w * h:,} pixels, more than the limit of {max_pixels:,}; "
                "refusing to decode it (downscale the file or raise max_pixels)")
        try:
            img.load()
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            # Pillow reports truncated or corrupt data as OSError ("image file is truncated"),
            # SyntaxError ("broken PNG file") or ValueError depending on the codec.
            raise DataError(f"{path}: corrupt or truncated image data ({type(e).__name__}: {e})") from None
        try:
            img = ImageOps.exif_transpose(img)
        except Exception as e:  # malformed EXIF can fail in many ways inside Pillow's parser
            raise DataError(f"{path}: unreadable EXIF metadata, so the orientation the boxes refer to is "
                            f"unknown ({type(e).__name__}: {e})") from None
        return _to_rgb_array(img)


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode == "RGB":
        return np.asarray(img, dtype=np.uint8).copy()
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit grayscale (PNG opens as I;16 or I); scale the full 16-bit range to 8 bits.
        a = np.asarray(img).astype(np.float64)
        a = np.clip(np.rint(a / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(a[:, :, None], 3, axis=2)
    if mode == "F":
        a = np.clip(np.rint(np.asarray(img, dtype=np.float64)), 0, 255).astype(np.uint8)
        return np.repeat(a[:, :, None], 3, axis=2)
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE + (255,))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"), dtype=np.uint8).copy()
    # L, 1, P, CMYK, YCbCr, LAB, HSV: Pillow's own conversions.
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
