"""Lossless metadata stripping of JPEG and PNG files, without re-encoding.

Owns the byte-level rewrite that drops metadata segments (EXIF, XMP,
comments, vendor APPn blocks, PNG text/time/EXIF chunks, data after the end
marker) while keeping every byte of image data. The pipeline offers it as a
candidate next to a re-encode: it never loses quality, so when it is about as
small it wins. Only used when no EXIF orientation must be honoured and no
non-sRGB ICC profile would be lost. Also the reverse for encoders that write
no metadata themselves: :func:`add_jpeg_metadata` inserts EXIF and ICC
segments exactly as Pillow's JPEG writer lays them out.
"""

from __future__ import annotations

import struct
import zlib

__all__ = ["strip_jpeg", "strip_png", "add_jpeg_metadata"]

_ICC_CHUNK = 65519  # 65535 - 2 (length) - 12 ("ICC_PROFILE\0") - 2 (sequence, count)

# JPEG markers that carry image data or decoding parameters and must stay.
_JPEG_KEEP_APP = {0xE0, 0xEE}  # APP0 (JFIF), APP14 (Adobe: colour transform, CMYK)
_PNG_KEEP = {
    b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"sBIT",
    b"acTL", b"fcTL", b"fdAT",
}  # fmt: skip


def strip_jpeg(data: bytes, *, keep_icc: bool) -> bytes | None:
    """Return ``data`` without metadata segments, or ``None`` if it is not parseable.

    Keeps SOI, tables, frame headers, APP0, APP14, the ICC APP2 segments when
    ``keep_icc``, and everything from the first SOS to the end of image (EOI);
    data after EOI is dropped.
    """
    if data[:2] != b"\xff\xd8":
        return None
    out = [b"\xff\xd8"]
    pos, n = 2, len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01,) or 0xD0 <= marker <= 0xD7:
            out.append(data[pos : pos + 2])
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if length < 2 or pos + 2 + length > n:
            return None
        seg = data[pos : pos + 2 + length]
        if marker == 0xDA:  # SOS: the rest is entropy-coded data up to EOI
            end = data.rfind(b"\xff\xd9")
            if end < pos:
                return None
            out.append(data[pos : end + 2])
            return b"".join(out)
        if 0xE0 <= marker <= 0xEF:
            keep = marker in _JPEG_KEEP_APP or (
                keep_icc and marker == 0xE2 and seg[4:16] == b"ICC_PROFILE\x00"
            )
            if keep:
                out.append(seg)
        elif marker != 0xFE:  # COM dropped; every other marker kept
            out.append(seg)
        pos += 2 + length
    return None


def strip_png(data: bytes, *, keep_icc: bool) -> bytes | None:
    """Return ``data`` with only the critical and colour chunks, or ``None``.

    Keeps IHDR, PLTE, IDAT, IEND, tRNS, gAMA, cHRM, sRGB, sBIT, the APNG
    chunks, and iCCP when ``keep_icc``; drops text, time, EXIF and private
    chunks and anything after IEND. Chunk CRCs are verified; a bad CRC
    returns ``None``.
    """
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    out = [data[:8]]
    pos, n = 8, len(data)
    while pos + 12 <= n:
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        ctype = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > n:
            return None
        (crc,) = struct.unpack(">I", data[end - 4 : end])
        if zlib.crc32(data[pos + 4 : end - 4]) != crc:
            return None
        if ctype in _PNG_KEEP or (keep_icc and ctype == b"iCCP"):
            out.append(data[pos:end])
        pos = end
        if ctype == b"IEND":
            return b"".join(out)
    return None


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload


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
