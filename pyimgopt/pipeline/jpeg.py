"""JPEG output: quality mapping, chroma subsampling by content, and the encoder choice.

Owns how pyimgopt writes a JPEG. By default (``effort`` 5-7) mozjpeg through
libvips (:func:`.boost.jpeg_encode`) with quantisation table 8, optimised
Huffman coding and progressive scans, *without* trellis quantisation or
the scan search: on the broad corpus trellis bought ~1 % of bytes at equal
SSIM for +262 % time over the default and the scan search 1.0 % for +81 %
(``bench/README.md``, step prices), so they run only from
:data:`JPEG_SCAN_SEARCH_EFFORT` and :data:`JPEG_TRELLIS_EFFORT`. Without libvips, Pillow's
libjpeg-turbo writes the same table 8 (:func:`.boost.jpeg_table_8`). Below
:data:`JPEG_MOZJPEG_EFFORT` Pillow writes its own Annex K tables (speed
first). Progressive or baseline, whichever is smaller for small images;
4:4:4 chroma at high qualities and for graphics with hard colour edges
(:func:`colour_edges`), 4:2:0 otherwise; never a higher quality than the
source JPEG's own tables. Alpha is flattened onto the background (JPEG has none).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..settings import Settings
from . import boost, isolate
from .frames import flatten, looks_like_graphic, save

__all__ = ["DEFAULT_QUALITY", "JPEG_MOZJPEG_EFFORT", "JPEG_SCAN_SEARCH_EFFORT", "JPEG_TRELLIS_EFFORT", "jpeg_quality",
           "encode_jpeg", "colour_edges", "choose_subsampling"]

#: JPEG quality when none is given.
DEFAULT_QUALITY = 80
_SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}
_SMALL_PIXELS = 250_000  # below this, try baseline and progressive JPEG and keep the smaller
#: Below this effort JPEG writes libjpeg-turbo's progressive JPEG with Pillow's
#: own (Annex K) tables: the speed-first setting, as sharp and pyvips default to.
JPEG_MOZJPEG_EFFORT = 5
#: From this effort mozjpeg searches the progressive scan script: 1.0 % fewer
#: bytes on the broad corpus's step-price sample for +81 % of the default's
#: CPU time (bench/README.md, step prices): under the 1 %-for-20 % bar.
JPEG_SCAN_SEARCH_EFFORT = 7
#: From this effort mozjpeg adds trellis quantisation (and overshoot
#: deringing) to table 8 and the scan search: ~1 % fewer bytes at equal SSIM
#: on the broad corpus as a whole for 3.6x the default's CPU time (though 11.6 %
#: on its 15 JPEGs of 8 MP or more, at 4.6x Pillow q80's time: over the 3x
#: budget). Without libvips, this effort adds mozjpeg's lossless pass.
JPEG_TRELLIS_EFFORT = 8
#: A chroma difference (Cb or Cr, 8-bit levels) inside one 2x2 block above
#: which 4:2:0 visibly bleeds a colour edge.
_EDGE_LEVELS = 32
#: Share of sampled 2x2 blocks with such an edge from which a graphic keeps
#: 4:4:4: coloured-text screenshots of the broad corpus measured 1-18 %,
#: smooth graphics such as gradient wallpapers (MATE's GreenTraditional)
#: 0 %, so 0.5 % separates them.
_EDGE_SHARE = 0.005
_EDGE_SAMPLE_BLOCKS = 65_536  # 2x2 blocks looked at (rows of blocks evenly spaced)


def jpeg_quality(s: Settings, source_quality: int | None, source_format: str) -> int:
    """The quality to write: ``s.quality`` (default 80), capped at a source JPEG's own."""
    q = s.quality if s.quality is not None else DEFAULT_QUALITY
    if source_format == "jpeg" and source_quality:
        q = min(q, source_quality)
    return q


def colour_edges(im: Image.Image) -> float:
    """Share of 2x2 blocks whose Cb or Cr spans more than ``_EDGE_LEVELS`` levels.

    What 4:2:0 loses is the colour difference inside a 2x2 block, so this is
    measured directly (BT.601 full-range chroma, as JPEG's) on up to
    ``_EDGE_SAMPLE_BLOCKS`` blocks from evenly spaced rows. Gray images and
    black text on white have no chroma to lose: 0.
    """
    if im.mode != "RGB" or im.width < 2 or im.height < 2:
        return 0.0
    a = np.asarray(im)
    h2, w2 = im.height // 2 * 2, im.width // 2 * 2
    rows = np.arange(0, h2, 2)
    rows = rows[:: max(1, len(rows) * (w2 // 2) // _EDGE_SAMPLE_BLOCKS)]
    sel = a[np.stack([rows, rows + 1], axis=1).ravel(), :w2].astype(np.float32)
    r, g, b = sel[..., 0], sel[..., 1], sel[..., 2]
    spans = []
    for c in (-0.168736 * r - 0.331264 * g + 0.5 * b, 0.5 * r - 0.418688 * g - 0.081312 * b):
        blocks = c.reshape(len(rows), 2, w2 // 2, 2)
        spans.append(blocks.max(axis=(1, 3)) - blocks.min(axis=(1, 3)))
    return float((np.maximum(spans[0], spans[1]) > _EDGE_LEVELS).mean())


def choose_subsampling(im: Image.Image, quality: int) -> str:
    """``4:4:4`` at quality >= 90 or for a graphic with hard colour edges, else ``4:2:0``.

    A graphic (:func:`.frames.looks_like_graphic`) whose colours change
    smoothly (a gradient wallpaper) or only in luma (black text) loses
    nothing visible at 4:2:0 and is ~1.4x smaller; coloured text does.
    """
    if quality >= 90:
        return "4:4:4"
    if looks_like_graphic(im) and colour_edges(im) >= _EDGE_SHARE:
        return "4:4:4"
    return "4:2:0"


def encode_jpeg(frame: Image.Image, s: Settings, *, source_quality: int | None,
                source_format: str, meta: dict, notes: list[str], fast: bool) -> tuple[bytes, int]:
    """``frame`` as JPEG bytes under ``s``; returns (bytes, quality written)."""
    quality = jpeg_quality(s, source_quality, source_format)
    im = flatten(frame, s.background_rgb)
    sub = s.chroma_subsampling
    if sub == "auto":
        sub = choose_subsampling(im, quality)
    return _jpeg(im, quality, sub, meta, notes, fast, s.effort), quality


def _jpeg(im: Image.Image, quality: int, sub: str, meta: dict, notes: list[str], fast: bool,
          effort: int) -> bytes:
    """JPEG through mozjpeg (libvips) when present, else Pillow with the same table.

    ``effort`` below :data:`JPEG_MOZJPEG_EFFORT` takes Pillow's Annex K path
    on purpose (speed first, as sharp and pyvips by default).

    The quality search probes with ``fast`` on the same encoder as the final
    encode, so its SSIM readings hold for the answer (only Huffman tables and
    scans differ between fast and final).
    """
    small = im.width * im.height <= _SMALL_PIXELS
    exif, icc = meta.get("exif"), meta.get("icc_profile")
    table8 = effort >= JPEG_MOZJPEG_EFFORT
    trellis = effort >= JPEG_TRELLIS_EFFORT
    data = None
    if table8:
        data = boost.jpeg_encode(im, quality=quality, subsampling=sub, exif=exif, icc=icc, fast=fast,
                                 trellis=trellis, optimize_scans=effort >= JPEG_SCAN_SEARCH_EFFORT)
    if data is not None:
        if small and not fast:
            base = boost.jpeg_encode(im, quality=quality, subsampling=sub, progressive=False,
                                     exif=exif, icc=icc, trellis=trellis)
            data = min(data, base or data, key=len)
        return data
    if table8 and not fast and not boost.available("vips"):
        notes.append(boost.missing_note("vips"))
    params = dict(quality=quality, optimize=not fast, subsampling=_SUBSAMPLING[sub], **meta)
    if table8:  # mozjpeg's table 8 through libjpeg-turbo (``qtables`` replaces ``quality``)
        table = boost.jpeg_table_8(quality)
        params.pop("quality")
        params["qtables"] = [table] if im.mode == "L" else [table, table]
    data = save([im], "jpeg", progressive=not fast, **params)
    if not fast and small:
        base = save([im], "jpeg", progressive=False, **params)
        data = min(data, base, key=len)
    if not fast and trellis:  # mozjpeg's lossless pass: same pixels, fewer bytes
        try:
            moz = boost.jpeg_lossless(data, keep_markers=bool(meta), trusted=True)
        except isolate.NativeFailure as exc:  # Pillow's own output: not expected
            notes.append(boost.refused_note("mozjpeg's lossless pass", exc))
            return data
        if moz is None:
            notes.append(boost.missing_note("mozjpeg"))
        elif len(moz) < len(data):
            data = moz
    return data
