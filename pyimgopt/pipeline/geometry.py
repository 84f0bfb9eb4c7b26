"""Geometry: where the output's pixels come from.

Owns the fit rules (``inside``, ``cover``, ``contain``, ``fill``), the
no-enlargement rule and the never-below-one-pixel rule, as a :class:`Plan`
computed from dimensions alone, and applies a plan to a Pillow image through
the resize kernels of :mod:`pyimgopt._kernels`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .. import _kernels
from ..settings import Settings

__all__ = ["Plan", "plan", "apply", "PRESHRINK_MARGIN"]

#: A box pre-shrink never goes below this multiple of the target size.
PRESHRINK_MARGIN = 2


@dataclass(frozen=True)
class Plan:
    """Resize to ``resize_to``, then crop ``crop`` (l, t, w, h), then pad to ``pad_to``."""

    source: tuple[int, int]
    resize_to: tuple[int, int] | None = None
    crop: tuple[int, int, int, int] | None = None
    pad_to: tuple[int, int] | None = None

    @property
    def output(self) -> tuple[int, int]:
        """Final (width, height)."""
        if self.pad_to:
            return self.pad_to
        if self.crop:
            return self.crop[2], self.crop[3]
        return self.resize_to or self.source

    @property
    def changes_pixels(self) -> bool:
        return bool(self.resize_to or self.crop or self.pad_to)


def _dim(v: float) -> int:
    return max(1, int(math.floor(v + 0.5)))


def plan(width: int, height: int, s: Settings) -> Plan:
    """Compute the geometry for an upright ``width`` x ``height`` image."""
    src = (width, height)
    mw, mh = s.max_width, s.max_height
    if mw is None and mh is None:
        return Plan(src)
    if s.fit == "fill":
        tw = mw if mw is not None else width
        th = mh if mh is not None else height
        if not s.enlarge:
            tw, th = min(tw, width), min(th, height)
        return Plan(src, resize_to=(tw, th) if (tw, th) != src else None)
    sx = mw / width if mw is not None else math.inf
    sy = mh / height if mh is not None else math.inf
    both = mw is not None and mh is not None
    if s.fit == "cover" and both:
        scale = max(sx, sy)
        if scale > 1 and not s.enlarge:
            scale = 1.0
        rw, rh = _dim(width * scale), _dim(height * scale)
        if scale == sx:
            rw = mw
        elif scale == sy:
            rh = mh
        cw, ch = min(mw, rw), min(mh, rh)
        crop = ((rw - cw) // 2, (rh - ch) // 2, cw, ch) if (cw, ch) != (rw, rh) else None
        return Plan(src, resize_to=(rw, rh) if (rw, rh) != src else None, crop=crop)
    scale = min(sx, sy)
    if scale > 1 and not s.enlarge:
        scale = 1.0
    rw, rh = _dim(width * scale), _dim(height * scale)
    if mw is not None:
        rw = min(rw, mw)
    if mh is not None:
        rh = min(rh, mh)
    resize = (rw, rh) if (rw, rh) != src else None
    if s.fit == "contain" and both and (rw, rh) != (mw, mh):
        return Plan(src, resize_to=resize, pad_to=(mw, mh))
    return Plan(src, resize_to=resize)


def apply(im: Image.Image, p: Plan, filter: str, background: tuple[int, ...]) -> Image.Image:
    """Apply ``p`` to ``im`` (mode L, LA, RGB or RGBA) and return the new image.

    ``background`` fills the padding of ``contain``; it must have one value per
    band of ``im``.
    """
    if p.resize_to is not None:
        arr = np.asarray(im)
        tw, th = p.resize_to
        # Big downscales: an integer box reduce first (cheap, exact mean) while
        # keeping at least PRESHRINK_MARGIN x the target, so the final filter
        # still sees enough samples to do its job (the libvips shrink+reduce idea).
        fx = arr.shape[1] // (tw * PRESHRINK_MARGIN)
        fy = arr.shape[0] // (th * PRESHRINK_MARGIN)
        if filter != "nearest" and (fx >= 2 or fy >= 2):
            arr = _kernels.reduce_box(arr, max(1, fx), max(1, fy))
        out = _kernels.resize(arr, tw, th, filter)
        im = Image.fromarray(out)  # HxW -> L, x2 -> LA, x3 -> RGB, x4 -> RGBA
    if p.crop is not None:
        left, top, w, h = p.crop
        im = im.crop((left, top, left + w, top + h))
    if p.pad_to is not None:
        canvas = Image.new(im.mode, p.pad_to, background)
        canvas.paste(im, ((p.pad_to[0] - im.width) // 2, (p.pad_to[1] - im.height) // 2))
        im = canvas
    return im
