"""PNG compression plan: how hard oxipng works on each image, and with which row filter.

Owns the choice, per PNG and ``effort``, of oxipng's settings
(:func:`plan`) and running them (:func:`optimise`). Measured on the broad
corpus (``bench/README.md``, PNG strategy): the deflate level, not the
filter search, sets both the bytes and the time, and libdeflate's
near-optimal parser (levels 10-12) is worth 5-10 % over its lazy levels
(which lose to zlib 9 on photos), so at the default effort 6:

- **small images** (raw samples up to :data:`SMALL_RAW` bytes: icons,
  sprites, most screenshots) get oxipng's own filter evaluation and
  libdeflate 12 (11 past :data:`TINY_RAW`): their cost is mostly oxipng's
  fixed per-call cost (effort 8-9: every oxipng filter, Brute included,
  for 0.5 % fewer bytes at 1.4x the time);
- **large 8-bit images with more than 256 colours** get their row filter
  chosen here, on a sample of row strips (:func:`choose_filter`: the five PNG
  filters and the per-row MinSum heuristic, each strip deflated by zlib 3),
  then one libdeflate 10 pass (11 at effort 7, 12 at 8) with that filter
  only — no full-size filter trials, which were about a third of oxipng's
  time (on the two large files checked side by side, UKUI ``calla.png`` and
  LXQt ``flowers.png``, the sampled pick also beat oxipng's own by 1-3 %;
  on 64 KiB - 1 MiB images it lost 1.4 %, hence :data:`SMALL_RAW`);
- **other large images** (palette-sized, 16-bit, low bit depth) keep oxipng's
  own fast filter evaluation at the same level.

Effort 9 gives every image the exhaustive search (every filter, libdeflate 12),
and effort 8 small images: with oxipng's fast evaluation that search can pick
a worse filter than the lower efforts' plans, so those plans run too and the
smallest result is kept (effort 9 is never larger than 8, nor 8 than 6).
Every setting is lossless: oxipng's reductions keep each sample (16-bit
included), the colour of fully transparent pixels, ``tRNS`` and colour
chunks. ``optimize_alpha=True`` lets oxipng change that hidden colour (no
pipeline path asks for it: the matrix compares raw samples).
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

from . import boost

__all__ = ["Plan", "plan", "optimise", "choose_filter", "SMALL_RAW", "TINY_RAW", "FILTERS"]

#: Raw-sample size (width x height x bytes per pixel) up to which an image is
#: small: oxipng's own filter evaluation, no sampled choice. Above it oxipng's
#: full-size filter trials and libdeflate 12 cost 2-3x Pillow's time.
SMALL_RAW = 1 << 20
#: Up to this raw size a small image gets libdeflate 12 at effort 6 (11 above
#: it, which halves the time of the 64 KiB - 1 MiB images for +0.35 % bytes).
TINY_RAW = 64 << 10
#: The filters :func:`choose_filter` compares (oxipng's ``RowFilter`` names).
FILTERS = ("NoOp", "Sub", "Up", "Average", "Paeth", "MinSum")
#: libdeflate level of the final pass for large images, by effort (6 is the default).
_LARGE_LEVEL = {6: 10, 7: 11, 8: 12}
#: oxipng's own filter set (level 2), used where no sampled choice is made.
_OXIPNG_SET = ("NoOp", "Sub", "Entropy", "Bigrams")
_ALL = ("NoOp", "Sub", "Up", "Average", "Paeth", "MinSum", "Entropy", "Bigrams", "BigEnt", "Brute")
#: Bytes of filtered rows per candidate filter that :func:`choose_filter` deflates.
_SAMPLE_BYTES = (256 << 10, 512 << 10)
_STRIP_ROWS = 8
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


@dataclass(frozen=True)
class Plan:
    """oxipng settings for one image: ``filters`` tried (one: no trials), libdeflate ``level``,
    ``fast`` (oxipng's fast filter evaluation), and why (for notes and the bench)."""

    filters: tuple[str, ...]
    level: int
    fast: bool
    why: str


def _raw_size(data: bytes) -> int | None:
    if len(data) < 33 or data[12:16] != b"IHDR":
        return None
    w, h, depth, ctype = struct.unpack(">IIBB", data[16:26])
    return w * h * _CHANNELS.get(ctype, 4) * max(depth, 8) // 8


def plan(data: bytes, effort: int) -> Plan:
    """The oxipng settings pyimgopt uses on the PNG ``data`` at ``effort`` (1-9).

    Effort 1-5 keep the fixed presets of :func:`.boost.png_options` (level-2
    filters with libdeflate 5, or level 1); 6-8 follow the module's plan:
    libdeflate 12 for small images (every filter at 8), 10, 11 and 12 for
    large ones; 9 gives every image the exhaustive search.
    """
    if effort <= 5:
        return Plan((), 0, True, f"effort {effort} preset")
    raw = _raw_size(data)
    if effort >= 9 or (effort == 8 and (raw is None or raw <= SMALL_RAW)):
        return Plan(_ALL, 12, True, "exhaustive (every filter, libdeflate 12)")
    if raw is None or raw <= SMALL_RAW:
        level = 12 if raw is None or raw <= TINY_RAW or effort >= 7 else 11
        return Plan(_OXIPNG_SET, level, True, f"oxipng's filter evaluation, libdeflate {level}")
    level = _LARGE_LEVEL[effort]
    chosen = choose_filter(data)
    if chosen is None:
        return Plan(_OXIPNG_SET, level, True, f"oxipng's filter evaluation, libdeflate {level}")
    return Plan((chosen,), level, False, f"{chosen} filter (sampled), libdeflate {level}")


def optimise(data: bytes, effort: int, *, optimize_alpha: bool = False) -> bytes | None:
    """oxipng over the PNG ``data`` as :func:`plan` says; ``None`` when oxipng is missing or refuses.

    The result is exact (see the module text); it may be larger than ``data``
    (the caller compares).
    """
    if not boost.available("oxipng"):
        return None
    p = plan(data, effort)
    if not p.filters:
        return boost.png_optimize(data, effort, optimize_alpha=optimize_alpha)
    best = boost.png_optimize(data, effort, filters=p.filters, level=p.level, fast=p.fast,
                              optimize_alpha=optimize_alpha)
    if p.filters == _ALL:
        # The exhaustive search picks its filter with oxipng's fast evaluation, which can
        # misjudge: the lower efforts' plans are candidates too, so effort 9 is never
        # larger than 8, nor 8 than 6 (the smallest is kept; all are exact).
        for lower in dict.fromkeys(plan(data, e) for e in (8, 6) if e < effort):
            if lower.filters == _ALL:
                continue
            other = boost.png_optimize(data, effort, filters=lower.filters, level=lower.level,
                                       fast=lower.fast, optimize_alpha=optimize_alpha)
            if other is not None and (best is None or len(other) < len(best)):
                best = other
    return best


def choose_filter(data: bytes) -> str | None:
    """The row filter (a :data:`FILTERS` name) that deflates smallest on a sample of ``data``'s rows.

    ``None`` — leave the choice to oxipng — unless ``data`` decodes (Pillow)
    to 8-bit gray, RGB or RGBA with more than 256 colours: a palette-sized
    image is re-coded by oxipng, whose filters then act on indices. An
    opaque alpha channel and R = G = B are dropped first, as oxipng's
    reductions will. The sample is strips of :data:`_STRIP_ROWS` rows spread
    over the image, each strip filtered against its real previous row.
    """
    if len(data) < 29 or data[12:16] != b"IHDR" or data[24] != 8 or data[25] not in (0, 2, 4, 6):
        return None  # not 8-bit gray/RGB(A): Pillow would hide 16-bit samples as 8-bit
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = Image.open(io.BytesIO(data))
            if im.mode not in ("L", "LA", "RGB", "RGBA") or getattr(im, "n_frames", 1) != 1:
                return None
            im.load()
    except Exception:
        return None
    if im.getcolors(256) is not None:
        return None
    return _best_filter(_reduced(np.asarray(im)))


def _reduced(a: np.ndarray) -> np.ndarray:
    """``a`` without an opaque alpha channel, and as gray when R = G = B (oxipng's cheap reductions)."""
    if a.ndim == 3 and a.shape[2] in (2, 4) and a[..., -1].min() == 255:
        a = a[..., :-1]
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim == 3 and a.shape[2] in (3, 4) and np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(
            a[..., 1], a[..., 2]):
        a = a[..., [0, 3]] if a.shape[2] == 4 else a[..., 0]
    return a


def _best_filter(a: np.ndarray) -> str:
    h = a.shape[0]
    bpp = a.shape[2] if a.ndim == 3 else 1
    rows = a.reshape(h, -1)
    stride = rows.shape[1]
    budget = min(max(rows.size // 16, _SAMPLE_BYTES[0]), _SAMPLE_BYTES[1])
    n_strips = max(1, min(h // _STRIP_ROWS, budget // max(stride * _STRIP_ROWS, 1)))
    starts = np.linspace(0, max(h - _STRIP_ROWS, 0), n_strips).astype(np.intp)
    idx = np.unique((starts[:, None] + np.arange(_STRIP_ROWS)[None, :]).ravel().clip(0, h - 1))
    cur = rows[idx].astype(np.int16)
    prev = np.zeros_like(cur)
    has_prev = idx > 0
    prev[has_prev] = rows[idx[has_prev] - 1]
    residuals = _residuals(cur, prev, bpp)
    sizes = {}
    for code, name in enumerate(FILTERS[:5]):
        sizes[name] = _deflated(np.full(len(idx), code, np.uint8), residuals[code])
    # MinSum: per row, the filter whose residuals (as signed bytes) sum smallest
    cost = np.abs(residuals.view(np.int8).astype(np.int16)).sum(axis=2)
    pick = cost.argmin(axis=0)
    sizes["MinSum"] = _deflated(pick.astype(np.uint8), residuals[pick, np.arange(len(idx))])
    return min(FILTERS, key=lambda name: (sizes[name], FILTERS.index(name)))


def _residuals(cur: np.ndarray, prev: np.ndarray, bpp: int) -> np.ndarray:
    """The five PNG filters of the rows ``cur`` (previous rows ``prev``), as uint8 (5, rows, stride)."""
    left = np.zeros_like(cur)
    left[:, bpp:] = cur[:, :-bpp]
    upleft = np.zeros_like(cur)
    upleft[:, bpp:] = prev[:, :-bpp]
    p = left + prev - upleft
    pa, pb, pc = np.abs(p - left), np.abs(p - prev), np.abs(p - upleft)
    paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, upleft))
    out = np.stack([cur, cur - left, cur - prev, cur - ((left + prev) >> 1), cur - paeth])
    return (out & 255).astype(np.uint8)


def _deflated(codes: np.ndarray, residuals: np.ndarray) -> int:
    scanlines = np.concatenate([codes[:, None], residuals], axis=1)
    return len(zlib.compress(scanlines.tobytes(), 3))
