"""PNG at the byte level: the header facts Pillow hides, and the lossless PNG-to-PNG route.

Owns reading a PNG's IHDR (bit depth, colour type, interlacing) and its
``tRNS``/``iCCP`` chunks without decoding, and :func:`optimise_original`:
PNG to PNG with no pixel change is done on the file itself — metadata
chunks stripped (:func:`~.strip.strip_png`), an sRGB ``iCCP`` replaced by
the 13-byte ``sRGB`` chunk, then oxipng's lossless reductions and deflate —
so every sample (16-bit included), the transparency (``tRNS``) and any
non-sRGB profile survive exactly, which a decode and re-encode through
Pillow cannot promise (Pillow reads 16-bit RGB as 8-bit, and scales low-bit
gray without its ``tRNS`` key).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from . import boost, colour, pngplan
from .strip import strip_png

__all__ = ["PngHeader", "png_header", "png_chunks", "png_icc", "display_chunks", "optimise_original",
           "palette_overrun"]

#: Chunks that change how the pixels are shown and that Pillow's PNG writer
#: does not carry over from a decoded image.
DISPLAY_CHUNKS = frozenset({b"gAMA", b"cHRM", b"sBIT", b"cICP", b"mDCV", b"cLLI", b"pHYs"})

_SIG = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class PngHeader:
    width: int
    height: int
    depth: int
    color_type: int
    interlaced: bool


def png_header(data: bytes) -> PngHeader | None:
    """The IHDR of ``data``, or ``None`` when it is not a PNG with a readable IHDR."""
    if data[:8] != _SIG or data[12:16] != b"IHDR" or len(data) < 33:
        return None
    w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    return PngHeader(w, h, depth, ctype, interlace == 1)


def png_chunks(data: bytes):
    """Yield (type, payload) for each chunk up to IEND; stops at the first malformed one."""
    pos, n = 8, len(data)
    while pos + 12 <= n:
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        ctype = data[pos + 4 : pos + 8]
        if pos + 12 + length > n:
            return
        yield ctype, data[pos + 8 : pos + 8 + length]
        if ctype == b"IEND":
            return
        pos += 12 + length


def png_icc(data: bytes) -> bytes | None:
    """The decompressed ``iCCP`` profile of a PNG, or ``None``."""
    for ctype, payload in png_chunks(data):
        if ctype == b"iCCP":
            nul = payload.find(b"\0")
            try:
                return zlib.decompress(payload[nul + 2 :]) if nul > 0 else None
            except zlib.error:
                return None
        if ctype == b"IDAT":
            return None
    return None


def display_chunks(data: bytes) -> set[bytes]:
    """Which of :data:`DISPLAY_CHUNKS` the PNG ``data`` has."""
    return {t for t, _ in png_chunks(data) if t in DISPLAY_CHUNKS}


def palette_overrun(data: bytes, im) -> str | None:
    """Why a palette PNG is malformed (a pixel's index past the end of ``PLTE``), or ``None``.

    The PNG specification calls such an index an error; decoders disagree on
    what to show (black, the last entry, an error), so no output could be
    exact. ``im`` is the opened (not yet loaded) Pillow image of ``data``; the
    first frame's indices are decoded here. Only colour type 3 is checked.
    """
    hdr = png_header(data)
    if hdr is None or hdr.color_type != 3:
        return None
    entries = next((len(p) // 3 for t, p in png_chunks(data) if t == b"PLTE"), 0)
    im.load()
    if im.mode != "P":
        return None
    _, top = im.getextrema()
    if top >= entries:
        return f"a pixel uses palette index {top}, past the {entries} entries of PLTE"
    return None


def _chunk(ctype: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(
        ">I", zlib.crc32(ctype + payload) & 0xFFFFFFFF
    )


def _srgb_chunk_for_icc(data: bytes) -> bytes:
    """``data`` with its (sRGB) iCCP replaced by an sRGB chunk; other chunks byte for byte."""
    has_srgb = any(t == b"sRGB" for t, _ in png_chunks(data))
    out, pos = [data[:8]], 8
    for ctype, payload in png_chunks(data):
        end = pos + 12 + len(payload)
        if ctype != b"iCCP":
            out.append(data[pos:end])
        elif not has_srgb:
            out.append(_chunk(b"sRGB", b"\0"))
        pos = end
    return b"".join(out)


def optimise_original(data: bytes, *, effort: int, keep_metadata: bool,
                      orientation: int = 1) -> tuple[bytes, list[str]] | None:
    """The smallest exact PNG of ``data`` that pyimgopt can make without decoding it.

    Without ``keep_metadata``, text, time, EXIF and private chunks go (what
    :func:`~.strip.strip_png` drops) and an sRGB profile becomes an ``sRGB``
    chunk; colour chunks, ``tRNS`` and a non-sRGB ``iCCP`` stay. Then oxipng
    (effort 1-9, planned per image by :mod:`.pngplan`) re-filters and
    re-deflates, with only its lossless reductions (no 16-to-8 scaling, and
    the colour under fully transparent pixels kept). Effort 0, or oxipng missing, stops after the strip.
    An EXIF ``orientation`` 2-8 the stored pixels still need survives as a
    minimal ``eXIf`` (:func:`~.strip.strip_png`). Returns ``None`` when the
    file cannot be parsed (bad CRC, no IEND): the caller decodes instead.
    Notes say what was done.
    """
    icc = png_icc(data)
    keep_icc = bool(icc) and (keep_metadata or colour.profile_must_stay(icc))
    src = _srgb_chunk_for_icc(data) if icc and not keep_icc else data
    base = src if keep_metadata else strip_png(src, keep_icc=keep_icc, orientation=orientation)
    if base is None:
        return None
    notes = ["lossless PNG route (original samples, bit depth and transparency kept)"]
    if icc and keep_icc and colour.profile_must_stay(icc):
        notes.append("non-sRGB (or unreadable) ICC profile kept with the original pixel values")
    if effort >= 1:
        if boost.available("oxipng"):
            opt = pngplan.optimise(base, effort)
            # oxipng refuses what it cannot decode: the caller decodes and reports it
            return None if opt is None else (opt, notes)
        notes.append(boost.missing_note("oxipng"))
    return base, notes
