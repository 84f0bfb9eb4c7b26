"""Geometry: where the output's pixels come from.

Owns the fit rules (``inside``, ``cover``, ``contain``, ``fill``), the
no-enlargement rule and the never-below-one-pixel rule, as a :class:`Plan`
computed from dimensions alone; how far a JPEG is shrunk in the DCT on load
before the resize (:func:`dct_scale`, :func:`shrink_on_load`) and where the
source's exact region then lies once turned upright (:func:`turn_box`); and
applies a plan to a Pillow image through the resize kernels of
:mod:`pyimgopt._kernels`, mapping that region onto the output when the
image's first or last column or row stands for only part of a sample (after
a DCT-scaled decode or a box pre-shrink).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .. import _kernels
from ..settings import Settings

__all__ = ["Plan", "plan", "apply", "dct_scale", "shrink_on_load", "turn_box", "DCT_SHRINK_MARGIN", "PRESHRINK_MARGIN"]

#: A box pre-shrink never goes below this multiple of the target size.
PRESHRINK_MARGIN = 2
#: A JPEG decoded at a reduced DCT scale (1/2, 1/4, 1/8) keeps at least this
#: multiple of the target size in both dimensions: the scaled IDCT is a block
#: filter, not lanczos. Measured on 7 corpus photos and the sharp bench's
#: 2725x2225 source at each scale (q80 output, luma SSIM against a full
#: decode resized with Pillow's lanczos, drop against the same encode of that
#: reference): worst 0.022 at a margin of 1 (Pillow's own ``draft``), 0.0036
#: at 1.75, 0.0026 at 1.9 and 0.0026 at 2 (libvips' margin) too.
DCT_SHRINK_MARGIN = 1.85


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


def dct_scale(width: int, height: int, target: tuple[int, int]) -> int:
    """The JPEG DCT scale denominator (8, 4, 2 or 1) to decode a ``width`` x ``height``
    image at before resizing it to ``target``: the largest that keeps at least
    :data:`DCT_SHRINK_MARGIN` times the target in both dimensions."""
    tw, th = target
    for scale in (8, 4, 2):
        if width / scale >= DCT_SHRINK_MARGIN * tw and height / scale >= DCT_SHRINK_MARGIN * th:
            return scale
    return 1


def shrink_on_load(im: Image.Image, target: tuple[int, int]) -> tuple[float, float, float, float] | None:
    """Ask Pillow's JPEG decoder (``im``, not loaded yet) for the DCT scale :func:`dct_scale`
    picks for ``target``; return the source's region (0, 0, W / s, H / s) in the scaled
    pixels (ceil(W / s) by ceil(H / s) of them), or ``None`` at full size."""
    width, height = im.size
    scale = dct_scale(width, height, target)
    if scale == 1:
        return None
    # Pillow takes the largest of 8, 4, 2 not above min(W // w, H // h): with (W // s, H // s)
    # that is s itself
    got = im.draft(im.mode, (width // scale, height // scale))
    if got is None or im.size != (-(-width // scale), -(-height // scale)):
        raise RuntimeError(f"JPEG draft at 1/{scale} gave {im.size} from {width}x{height}")
    return 0.0, 0.0, width / scale, height / scale


def turn_box(box: tuple[float, float, float, float], size: tuple[int, int],
             orientation: int) -> tuple[float, float, float, float]:
    """Where the region ``box`` (x0, y0, x1, y1) of a stored ``size`` frame lies once the
    frame is turned upright for EXIF ``orientation`` 1-8 (as :mod:`.decode` turns it)."""
    x0, y0, x1, y1 = box
    w, h = size
    return {
        2: (w - x1, y0, w - x0, y1),  # mirrored left-right
        3: (w - x1, h - y1, w - x0, h - y0),  # 180 degrees
        4: (x0, h - y1, x1, h - y0),  # mirrored top-bottom
        5: (y0, x0, y1, x1),  # transposed: (x, y) -> (y, x)
        6: (h - y1, x0, h - y0, x1),  # 90 clockwise: (x, y) -> (h - y, x)
        7: (h - y1, w - x1, h - y0, w - x0),  # transverse: (x, y) -> (h - y, w - x)
        8: (y0, w - x1, y1, w - x0),  # 90 counter-clockwise: (x, y) -> (y, w - x)
    }.get(orientation, box)


def apply(im: Image.Image, p: Plan, filter: str, background: tuple[int, ...],
          box: tuple[float, float, float, float] | None = None) -> Image.Image:
    """Apply ``p`` to ``im`` (mode L, LA, RGB or RGBA) and return the new image.

    ``background`` fills the padding of ``contain``; it must have one value per
    band of ``im``. ``box`` (``Decoded.box``) is the region (x0, y0, x1, y1) of
    ``im`` the source covers when its first or last column or row stands for
    only part of a sample: the resize maps exactly that region onto
    ``p.resize_to``.
    """
    if p.resize_to is not None:
        arr = np.asarray(im)
        tw, th = p.resize_to
        x0, y0, x1, y1 = box if box is not None else (0.0, 0.0, arr.shape[1], arr.shape[0])
        # Big downscales: an integer box reduce first (cheap, exact mean) while
        # keeping at least PRESHRINK_MARGIN x the target, so the final filter
        # still sees enough samples to do its job (the libvips shrink+reduce idea).
        fx = arr.shape[1] // (tw * PRESHRINK_MARGIN)
        fy = arr.shape[0] // (th * PRESHRINK_MARGIN)
        if filter != "nearest" and (fx >= 2 or fy >= 2):
            fx, fy = max(1, fx), max(1, fy)
            arr = _kernels.reduce_box(arr, fx, fy)
            # ceil(W / f) pixels for W / f of the source when f does not divide W
            x0, y0, x1, y1 = x0 / fx, y0 / fy, x1 / fx, y1 / fy
        if filter == "nearest" or (x0, y0, x1, y1) == (0, 0, arr.shape[1], arr.shape[0]):
            out = _kernels.resize(arr, tw, th, filter)
        else:
            out = _kernels.resize(arr, tw, th, filter, box=(x0, y0, x1, y1))
        im = Image.fromarray(out)  # HxW -> L, x2 -> LA, x3 -> RGB, x4 -> RGBA
    if p.crop is not None:
        left, top, w, h = p.crop
        im = im.crop((left, top, left + w, top + h))
    if p.pad_to is not None:
        canvas = Image.new(im.mode, p.pad_to, background)
        canvas.paste(im, ((p.pad_to[0] - im.width) // 2, (p.pad_to[1] - im.height) // 2))
        im = canvas
    return im
