"""JPEG output: quality mapping, chroma subsampling by content, and the encoder choice.

Owns how pyimgopt writes a JPEG: mozjpeg through libvips when present
(trellis quantisation, table 8, scan optimisation; :func:`.boost.jpeg_encode`)
from :data:`JPEG_MOZJPEG_EFFORT`, else libjpeg-turbo through Pillow plus
mozjpeg's lossless pass; progressive or baseline, whichever is smaller for
small images; 4:4:4 chroma for graphics and high qualities; never a higher
quality than the source JPEG's own tables. Alpha is flattened onto the
background (JPEG has none).
"""

from __future__ import annotations

from PIL import Image

from ..settings import Settings
from . import boost, isolate
from .frames import flatten, looks_like_graphic, save

__all__ = ["DEFAULT_QUALITY", "JPEG_MOZJPEG_EFFORT", "JPEG_SCAN_SEARCH_EFFORT", "jpeg_quality",
           "encode_jpeg"]

#: JPEG quality when none is given.
DEFAULT_QUALITY = 80
_SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}
_SMALL_PIXELS = 250_000  # below this, try baseline and progressive JPEG and keep the smaller
#: Below this effort JPEG skips mozjpeg — its trellis (4-8x the encode time for
#: ~9 % fewer bytes at equal SSIM) and its lossless pass (~4x a libjpeg-turbo
#: encode for ~1-2 %) — and writes libjpeg-turbo's progressive JPEG through Pillow.
JPEG_MOZJPEG_EFFORT = 5
#: From this effort mozjpeg also searches the progressive scan script.
JPEG_SCAN_SEARCH_EFFORT = 8


def jpeg_quality(s: Settings, source_quality: int | None, source_format: str) -> int:
    """The quality to write: ``s.quality`` (default 80), capped at a source JPEG's own."""
    q = s.quality if s.quality is not None else DEFAULT_QUALITY
    if source_format == "jpeg" and source_quality:
        q = min(q, source_quality)
    return q


def encode_jpeg(frame: Image.Image, s: Settings, *, source_quality: int | None,
                source_format: str, meta: dict, notes: list[str], fast: bool) -> tuple[bytes, int]:
    """``frame`` as JPEG bytes under ``s``; returns (bytes, quality written)."""
    quality = jpeg_quality(s, source_quality, source_format)
    im = flatten(frame, s.background_rgb)
    sub = s.chroma_subsampling
    if sub == "auto":  # graphics and text keep full colour resolution
        sub = "4:4:4" if quality >= 90 or looks_like_graphic(im) else "4:2:0"
    return _jpeg(im, quality, sub, meta, notes, fast, s.effort), quality


def _jpeg(im: Image.Image, quality: int, sub: str, meta: dict, notes: list[str], fast: bool,
          effort: int) -> bytes:
    """JPEG through mozjpeg (libvips) when present, else Pillow plus mozjpeg's lossless pass.

    ``effort`` below :data:`JPEG_MOZJPEG_EFFORT` takes the Pillow path, without
    the lossless pass, on purpose (speed first, as sharp and pyvips by default).

    The quality search probes with ``fast`` on the same encoder as the final
    encode, so its SSIM readings hold for the answer (mozjpeg's trellis moves
    pixels; only Huffman tables and scans differ between fast and final).
    """
    small = im.width * im.height <= _SMALL_PIXELS
    exif, icc = meta.get("exif"), meta.get("icc_profile")
    trellis = effort >= JPEG_MOZJPEG_EFFORT
    data = None
    if trellis:
        data = boost.jpeg_encode(im, quality=quality, subsampling=sub, exif=exif, icc=icc, fast=fast,
                                 optimize_scans=effort >= JPEG_SCAN_SEARCH_EFFORT)
    if data is not None:
        if small and not fast:
            base = boost.jpeg_encode(im, quality=quality, subsampling=sub, progressive=False,
                                     exif=exif, icc=icc)
            data = min(data, base or data, key=len)
        return data
    if trellis and not fast and not boost.available("vips"):
        notes.append(boost.missing_note("vips"))
    params = dict(quality=quality, optimize=not fast, subsampling=_SUBSAMPLING[sub], **meta)
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

