"""Lossless metadata stripping of JPEG and PNG files, without re-encoding.

Owns the byte-level rewrite that removes what a privacy auditor would find
(EXIF with GPS and camera tags, XMP, comments, vendor APPn blocks, embedded
thumbnails and appended images, PNG text/time/EXIF and private chunks) while
keeping every byte of image data and everything that changes how the image is
displayed: colour (ICC when it is not sRGB, Adobe APP14, PNG ``gAMA``
``cHRM`` ``sRGB`` ``cICP`` ``mDCV`` ``cLLI`` ``sBIT``), physical size (JFIF
density, PNG ``pHYs``) and an EXIF orientation other than 1, kept as a
minimal EXIF block holding that one tag (:func:`minimal_exif`). A stripped
file displays exactly like its source. :func:`strip_lossless` is the entry
point for every format (WebP, GIF, TIFF and AVIF live in
:mod:`.containers`). Also the reverse for encoders that write no metadata
themselves: :func:`add_jpeg_metadata` inserts EXIF and ICC segments exactly as
Pillow's JPEG writer lays them out.
"""

from __future__ import annotations

import struct
import zlib

__all__ = ["strip_jpeg", "strip_png", "strip_lossless", "minimal_exif", "add_jpeg_metadata"]

_ICC_CHUNK = 65519  # 65535 - 2 (length) - 12 ("ICC_PROFILE\0") - 2 (sequence, count)

# PNG chunks that change how the image is shown (colour, HDR signalling,
# significant bits, physical size) or carry it (critical, tRNS, APNG).
# oxipng's "safe" strip keeps the same set.
PNG_KEEP = frozenset({
    b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"sBIT",
    b"cICP", b"mDCV", b"cLLI", b"pHYs", b"acTL", b"fcTL", b"fdAT",
})  # fmt: skip
_PNG_SIG = b"\x89PNG\r\n\x1a\n"


def minimal_exif(orientation: int) -> bytes:
    """A big-endian TIFF block (no ``Exif\\0\\0`` header) holding only ``Orientation``.

    32 bytes with the JPEG APP1 header: nothing but the tag a viewer needs to
    show the stored pixels upright.
    """
    entry = struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0)  # SHORT, count 1, left-justified
    return b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", 1) + entry + b"\x00\x00\x00\x00"


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload


def _jfif(seg: bytes) -> bytes | None:
    """A JFIF APP0 segment without its thumbnail, or ``None`` if ``seg`` is not JFIF."""
    payload = seg[4:]
    if payload[:5] != b"JFIF\x00" or len(payload) < 14:
        return None  # JFXX (thumbnail extension), AVI1, ...: metadata only
    if payload[12] == 0 and payload[13] == 0 and len(payload) == 14:
        return seg
    return _segment(0xE0, payload[:12] + b"\x00\x00")  # version, units, density; no thumbnail


def strip_jpeg(data: bytes, *, keep_icc: bool, orientation: int = 1) -> bytes | None:
    """The primary image of ``data`` without metadata, or ``None`` if it does not parse.

    The markers are walked to the end of the primary image: every scan's
    entropy-coded data is skipped byte by byte (stuffed ``FF00`` bytes,
    restart markers and fill bytes included), so progressive files with many
    scans and restart intervals end at their own EOI, and anything after it
    (an appended image with its own EXIF, the MPF pictures of a camera file)
    is dropped. Kept: SOI, tables and frame headers, every scan, JFIF APP0
    (density, without a thumbnail), Adobe APP14, the ICC APP2 segments when
    ``keep_icc``, and a minimal EXIF APP1 with only the tag when
    ``orientation`` is 2-8. Dropped: other APPn (EXIF, XMP, MPF, vendor
    blocks), COM, and all bytes after the primary image's EOI. A file with no
    EOI (truncated) returns ``None``.
    """
    if data[:2] != b"\xff\xd8":
        return None
    out = [b"\xff\xd8"]
    pos, n = 2, len(data)
    exif_at = 1  # index in ``out`` where a minimal EXIF goes: after SOI (and JFIF)
    while True:
        if pos + 2 > n or data[pos] != 0xFF:
            return None
        while pos + 1 < n and data[pos + 1] == 0xFF:  # fill bytes before a marker
            pos += 1
        if pos + 2 > n:
            return None
        marker = data[pos + 1]
        if marker == 0xD9:  # EOI: the end of the primary image
            out.append(b"\xff\xd9")
            break
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # TEM, stray RST: no length
            out.append(data[pos : pos + 2])
            pos += 2
            continue
        if marker in (0xD8, 0x00) or pos + 4 > n:
            return None
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        end = pos + 2 + length
        if length < 2 or end > n:
            return None
        seg = data[pos:end]
        if 0xE0 <= marker <= 0xEF:
            keep: bytes | None = None
            if marker == 0xE0:
                keep = _jfif(seg)
                if keep is not None and len(out) == 1:
                    exif_at = 2
            elif marker == 0xEE:
                keep = seg if seg[4:9] == b"Adobe" else None
            elif marker == 0xE2 and keep_icc and seg[4:16] == b"ICC_PROFILE\x00":
                keep = seg
            if keep is not None:
                out.append(keep)
        elif marker != 0xFE:  # COM dropped; tables, frame and scan headers kept
            out.append(seg)
        pos = end
        if marker == 0xDA:  # SOS: entropy-coded data follows, up to the next marker
            scan = pos
            while True:
                ff = data.find(b"\xff", pos)
                if ff < 0 or ff + 1 >= n:
                    return None  # no marker after the scan: truncated
                nxt = data[ff + 1]
                if nxt == 0x00 or 0xD0 <= nxt <= 0xD7:  # stuffed byte, restart marker
                    pos = ff + 2
                    continue
                if nxt == 0xFF:  # fill byte: the marker comes later
                    pos = ff + 1
                    continue
                pos = ff
                break
            out.append(data[scan:pos])
    if 2 <= orientation <= 8:
        out.insert(exif_at, _segment(0xE1, b"Exif\x00\x00" + minimal_exif(orientation)))
    return b"".join(out)


def png_chunks(data: bytes):
    """Yield ``(type, start, end)`` of each chunk of a PNG up to IEND, CRCs checked.

    Raises ``ValueError`` on a bad signature, a truncated chunk, a bad CRC or
    a missing IEND.
    """
    if data[:8] != _PNG_SIG:
        raise ValueError("not a PNG")
    pos, n = 8, len(data)
    while pos + 12 <= n:
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        ctype = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > n:
            raise ValueError("truncated chunk")
        (crc,) = struct.unpack(">I", data[end - 4 : end])
        if zlib.crc32(data[pos + 4 : end - 4]) != crc:
            raise ValueError(f"bad CRC in {ctype!r}")
        yield ctype, pos, end
        if ctype == b"IEND":
            return
        pos = end
    raise ValueError("no IEND")


def png_chunk(ctype: bytes, payload: bytes) -> bytes:
    """One PNG chunk: length, type, payload, CRC."""
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", zlib.crc32(ctype + payload))


def strip_png(data: bytes, *, keep_icc: bool, orientation: int = 1) -> bytes | None:
    """Return ``data`` with only what shapes the display, or ``None`` if it does not parse.

    Keeps the critical chunks, ``tRNS``, the colour and HDR chunks (``gAMA``
    ``cHRM`` ``sRGB`` ``cICP`` ``mDCV`` ``cLLI``), ``sBIT``, ``pHYs``, the APNG
    chunks, and ``iCCP`` when ``keep_icc``; an sRGB ``iCCP`` that is dropped
    becomes an ``sRGB`` chunk (13 bytes), so ``gAMA``/``cHRM`` beside it keep
    being overridden as before. An orientation 2-8 is kept as a minimal
    ``eXIf`` before the first ``IDAT``. Drops text, time, EXIF, background
    and private chunks and anything after ``IEND``. Chunk CRCs are verified; a
    bad CRC returns ``None``.
    """
    try:
        chunks = list(png_chunks(data))
    except ValueError:
        return None
    has_srgb = any(c == b"sRGB" for c, _, _ in chunks)
    out = [_PNG_SIG]
    wrote_exif = False
    for ctype, start, end in chunks:
        if ctype in (b"IDAT", b"fdAT", b"IEND") and not wrote_exif and 2 <= orientation <= 8:
            out.append(png_chunk(b"eXIf", minimal_exif(orientation)))
            wrote_exif = True
        if ctype in PNG_KEEP:
            out.append(data[start:end])
        elif ctype == b"iCCP":
            if keep_icc:
                out.append(data[start:end])
            elif not has_srgb:
                out.append(png_chunk(b"sRGB", b"\x00"))  # perceptual intent
                has_srgb = True
    return b"".join(out)


def strip_lossless(data: bytes, fmt: str, *, keep_icc: bool, orientation: int = 1) -> bytes | None:
    """``data`` with its metadata removed and its image data untouched, or ``None``.

    ``fmt`` is the sniffed format (``jpeg``, ``png``, ``webp``, ``gif``,
    ``tiff``, ``avif``, ``heif``, ``bmp``, ``jxl``). JPEG, PNG, WebP and GIF are
    rewritten without their metadata blocks, JPEG XL without its metadata boxes; TIFF, AVIF and HEIF, whose data is addressed by
    file offsets, keep their size and have their metadata blanked in place
    (:mod:`.containers`); BMP holds none and comes back unchanged. The
    result equals ``data`` when there was nothing to remove. ``None`` means
    the structure could not be parsed with certainty, so the metadata cannot
    be removed without re-encoding.
    """
    from . import containers

    try:
        if fmt == "jpeg":
            return strip_jpeg(data, keep_icc=keep_icc, orientation=orientation)
        if fmt == "png":
            return strip_png(data, keep_icc=keep_icc, orientation=orientation)
        if fmt == "webp":
            return containers.strip_webp(data, keep_icc=keep_icc, orientation=orientation)
        if fmt == "gif":
            return containers.strip_gif(data)
        if fmt == "tiff":
            return containers.blank_tiff(data, keep_icc=keep_icc)
        if fmt in ("avif", "heif"):  # the same ISO-BMFF item structure
            return containers.blank_avif(data)
        if fmt == "jxl":  # metadata boxes dropped, the codestream untouched
            from .jxl import strip_metadata

            return strip_metadata(data)
    except (IndexError, ValueError, struct.error):  # a hostile structure: not certain
        return None
    return data if fmt == "bmp" else None


def add_jpeg_metadata(data: bytes, *, exif: bytes | None = None, icc: bytes | None = None) -> bytes:
    """``data`` with an APP1 EXIF segment and APP2 ICC segments inserted after SOI/APP0.

    ``exif`` is a TIFF block with or without the ``Exif\\0\\0`` header
    (Pillow's ``Exif.tobytes()`` has it); ``icc`` is split into numbered
    chunks as the ICC spec asks. Nothing is inserted when both are empty.

    Raises
    ------
    ValueError
        ``data`` does not start with SOI, or an EXIF block is over 64 KiB.
    """
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG: no SOI marker")
    segments = []
    if exif:
        payload = exif if exif.startswith(b"Exif\x00\x00") else b"Exif\x00\x00" + exif
        if len(payload) > 65533:
            raise ValueError(f"EXIF block of {len(payload)} bytes does not fit one segment")
        segments.append(_segment(0xE1, payload))
    if icc:
        chunks = [icc[i : i + _ICC_CHUNK] for i in range(0, len(icc), _ICC_CHUNK)]
        for seq, chunk in enumerate(chunks, 1):
            segments.append(_segment(0xE2, b"ICC_PROFILE\x00" + bytes((seq, len(chunks))) + chunk))
    if not segments:
        return data
    pos = 2
    if data[2:4] == b"\xff\xe0":  # keep JFIF first, as readers expect
        pos = 4 + struct.unpack(">H", data[4:6])[0]
    return data[:pos] + b"".join(segments) + data[pos:]
