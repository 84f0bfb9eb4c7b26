"""Frames: the small Pillow helpers every encoder shares.

Owns writing a list of frames through one of Pillow's writers
(:func:`save`), flattening transparency onto a background (:func:`flatten`
for an encoder without alpha, :func:`flatten_rgb` for comparisons), and the
content test :func:`looks_like_graphic` that picks 4:4:4 chroma and the
lossless WebP try. Nothing here knows any one format's settings.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

__all__ = ["save", "flatten", "flatten_rgb", "opposite", "looks_like_graphic"]

_PIL_NAMES = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "avif": "AVIF", "gif": "GIF",
              "tiff": "TIFF", "bmp": "BMP"}  # JPEG XL: pipeline/jxl.py


def save(frames: list[Image.Image], fmt: str, **params) -> bytes:
    """``frames`` written by Pillow's ``fmt`` writer (an animation when there are several)."""
    buf = io.BytesIO()
    first = frames[0]
    if len(frames) > 1:
        params.update(save_all=True, append_images=frames[1:])
    first.save(buf, _PIL_NAMES[fmt], **params)
    return buf.getvalue()


def flatten(im: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """``im`` as L or RGB, any alpha composited onto ``background`` (for JPEG)."""
    if im.mode in ("RGBA", "LA"):
        base = Image.new("RGB", im.size, background)
        base.paste(im.convert("RGB"), mask=im.getchannel("A"))
        if im.mode == "LA":
            return base.convert("L")
        return base
    if im.mode in ("L", "RGB"):
        return im
    return im.convert("RGB")


def flatten_rgb(im: Image.Image, background: tuple[int, int, int]) -> np.ndarray:
    """``im`` as an RGB array, any transparency composited onto ``background``."""
    if im.has_transparency_data:  # alpha band, tRNS, or an RGBA palette
        rgba = im.convert("RGBA")
        base = Image.new("RGB", im.size, background)
        base.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
        return np.asarray(base)
    return np.asarray(im.convert("RGB"))


def opposite(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """The second background alpha is judged on: black for a light background, else white."""
    return (0, 0, 0) if sum(background) >= 3 * 128 else (255, 255, 255)


def looks_like_graphic(im: Image.Image) -> bool:
    """Few distinct colours on a coarse sample: a screenshot, chart or logo, not a photo.

    Such images keep 4:4:4 chroma in JPEG (text and hard edges bleed at 4:2:0)
    and are tried as lossless WebP.
    """
    if im.width * im.height < 64:
        return False
    # Sampled first, converted after: the same pixels, without copying the whole image.
    size = (min(160, im.width), min(160, im.height))
    try:
        sample = im.resize(size, Image.Resampling.NEAREST).convert("RGB")
    except (ValueError, OSError):  # a mode resize does not take: convert first
        sample = im.convert("RGB").resize(size, Image.Resampling.NEAREST)
    return sample.getcolors(600) is not None
