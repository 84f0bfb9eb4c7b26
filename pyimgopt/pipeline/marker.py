"""The in-file optimisation marker: a few bytes that say "optimised by pyimgopt, like this".

Owns writing, finding and checking the marker ``Settings(mark=True)`` puts
into PNG, JPEG and GIF outputs, so a file that travels (a copy, ``rsync``,
another machine without the manifest database) is still recognised as
already optimised with the same settings. The payload is 44 ASCII bytes::

    pyimgopt1 <settings key: 11 chars> <content hash: 22 chars>

(``1`` the marker's version; both values base64url: the first 8 bytes of
:func:`pyimgopt.manifest.settings_key` and the 128-bit content hash of the
file *without* the marker, so an edit made after optimising — pixels or
metadata — breaks the match). Where it goes:

- PNG: a ``tEXt`` chunk right after ``IHDR``, keyword ``pyimgopt``, text
  ``1 <key> <hash>`` (57 bytes with the chunk's framing);
- JPEG: a ``COM`` segment after ``SOI`` and the ``APPn`` segments (48 bytes);
- GIF: a comment extension after the global colour table (48 bytes).

Other formats are not marked (the manifest database covers them). Viewers
ignore all three; pyimgopt's own metadata strip removes them, so a forced
re-run never stacks markers.
"""

from __future__ import annotations

import base64
import re
import struct
import zlib

from ..manifest import raw_hash

__all__ = ["MARKED_FORMATS", "payload", "add", "find", "check"]

MARKED_FORMATS = ("png", "jpeg", "gif")
_PREFIX = b"pyimgopt1 "
_PAYLOAD = re.compile(rb"pyimgopt1 ([A-Za-z0-9_-]{11}) ([A-Za-z0-9_-]{22})")
_PNG_SIG = b"\x89PNG\r\n\x1a\n"


def _b64(raw: bytes) -> bytes:
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


def payload(key: str, data: bytes) -> bytes:
    """The 44-byte marker text for ``data`` (the file without a marker) under ``key``
    (:func:`pyimgopt.manifest.marker_key`)."""
    return _PREFIX + key.encode("ascii") + b" " + _b64(raw_hash(data))


def add(data: bytes, fmt: str, key: str) -> bytes | None:
    """``data`` with the marker inserted, or None when ``fmt`` is not marked or the
    file's structure is not the simple one expected (then it is left unmarked)."""
    text = payload(key, data)
    if fmt == "png" and data[:8] == _PNG_SIG and data[12:16] == b"IHDR" and len(data) >= 33:
        body = b"pyimgopt\x00" + text[len(b"pyimgopt"):]  # keyword, NUL, "1 <key> <hash>"
        chunk = struct.pack(">I", len(body)) + b"tEXt" + body
        chunk += struct.pack(">I", zlib.crc32(chunk[4:]) & 0xFFFFFFFF)
        return data[:33] + chunk + data[33:]
    if fmt == "jpeg":
        at = _jpeg_insert_at(data)
        if at is None:
            return None
        return data[:at] + b"\xff\xfe" + struct.pack(">H", len(text) + 2) + text + data[at:]
    if fmt == "gif" and data[:6] == b"GIF89a":  # GIF87a has no extension blocks
        at = _gif_blocks_start(data)
        if at is None:
            return None
        return data[:at] + b"\x21\xfe" + bytes([len(text)]) + text + b"\x00" + data[at:]
    return None


def find(data: bytes) -> tuple[int, int, bytes] | None:
    """``(start, end, payload)`` of the marker in ``data``, or None. Reads only the
    headers before the image data (PNG chunks before ``IDAT``, JPEG segments
    before ``SOS``, GIF blocks before the first image)."""
    try:
        if data[:8] == _PNG_SIG:
            return _find_png(data)
        if data[:2] == b"\xff\xd8":
            return _find_jpeg(data)
        if data[:6] in (b"GIF87a", b"GIF89a"):
            return _find_gif(data)
    except (IndexError, struct.error):
        return None
    return None


def check(data: bytes, key: str) -> bool:
    """True when ``data`` carries a marker made under ``key`` whose hash is that of
    ``data`` without the marker: the file is as pyimgopt wrote it."""
    found = find(data)
    if found is None:
        return False
    start, end, text = found
    m = _PAYLOAD.fullmatch(text)
    if m is None or m.group(1).decode("ascii") != key:
        return False
    return m.group(2) == _b64(raw_hash(data[:start] + data[end:]))


def _find_png(data: bytes) -> tuple[int, int, bytes] | None:
    pos = 8
    while pos + 8 <= len(data):
        length = struct.unpack(">I", data[pos:pos + 4])[0]
        kind = data[pos + 4:pos + 8]
        if kind in (b"IDAT", b"IEND"):
            return None
        end = pos + 12 + length
        if kind == b"tEXt" and data[pos + 8:pos + 17] == b"pyimgopt\x00":
            return pos, end, b"pyimgopt" + data[pos + 17:pos + 8 + length]
        pos = end
    return None


def _jpeg_segments(data: bytes):
    """(marker, start, end) of the segments from SOI up to SOS (exclusive)."""
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xDA, 0xD9) or 0xD0 <= marker <= 0xD8 or marker == 0x01:
            return
        end = pos + 2 + struct.unpack(">H", data[pos + 2:pos + 4])[0]
        yield marker, pos, end
        pos = end


def _jpeg_insert_at(data: bytes) -> int | None:
    if data[:2] != b"\xff\xd8":
        return None
    at = 2
    try:
        for marker, _start, end in _jpeg_segments(data):
            if not 0xE0 <= marker <= 0xEF:
                break
            at = end
    except struct.error:
        return None
    return at if at + 1 < len(data) and data[at] == 0xFF else None


def _find_jpeg(data: bytes) -> tuple[int, int, bytes] | None:
    for marker, start, end in _jpeg_segments(data):
        if marker == 0xFE and data[start + 4:start + 4 + len(_PREFIX)] == _PREFIX:
            return start, end, data[start + 4:end]
    return None


def _gif_blocks_start(data: bytes) -> int | None:
    if data[:6] not in (b"GIF87a", b"GIF89a") or len(data) < 14:
        return None
    packed = data[10]
    at = 13 + (3 * 2 ** ((packed & 7) + 1) if packed & 0x80 else 0)
    return at if at < len(data) else None


def _find_gif(data: bytes) -> tuple[int, int, bytes] | None:
    pos = _gif_blocks_start(data)
    while pos is not None and pos + 2 < len(data) and data[pos] == 0x21:
        label = data[pos + 1]
        p = pos + 2
        first = None
        while data[p] != 0:
            if first is None:
                first = data[p + 1:p + 1 + data[p]]
            p += data[p] + 1
        p += 1
        if label == 0xFE and first is not None and first.startswith(_PREFIX):
            return pos, p, first
        pos = p
    return None
