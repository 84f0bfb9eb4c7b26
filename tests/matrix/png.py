"""A tiny PNG writer (zlib + struct) for what Pillow cannot write.

Every colour type and legal bit depth, tRNS for palette/gray/RGB, Adam7
interlacing, and any ancillary chunk given as ``(type, payload)``. Samples
come in as NumPy arrays at the image's own bit depth (0..2**depth-1); the
writer packs sub-byte rows MSB first and uses filter 0 on some rows and
Paeth/Sub/Up/Average on others, so a decoder's unfiltering is exercised too.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

__all__ = ["chunk", "write_png", "LEGAL_DEPTHS", "CHANNELS", "text_chunk", "ztxt_chunk",
           "itxt_chunk", "iccp_chunk", "chunks_of"]

#: Colour type -> legal bit depths (PNG spec table 11.1).
LEGAL_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}

_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
          (0, 1, 1, 2))  # (x0, y0, dx, dy)


def chunk(ctype: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(
        ">I", zlib.crc32(ctype + payload) & 0xFFFFFFFF)


def text_chunk(key: str, value: str) -> tuple[bytes, bytes]:
    return b"tEXt", key.encode("latin-1") + b"\0" + value.encode("latin-1")


def ztxt_chunk(key: str, value: str) -> tuple[bytes, bytes]:
    return b"zTXt", key.encode("latin-1") + b"\0\0" + zlib.compress(value.encode("latin-1"))


def itxt_chunk(key: str, value: str, compressed: bool = True) -> tuple[bytes, bytes]:
    body = value.encode("utf-8")
    if compressed:
        body = zlib.compress(body)
    return b"iTXt", key.encode("latin-1") + b"\0" + bytes((int(compressed), 0)) + b"en\0\0" + body


def iccp_chunk(name: str, icc: bytes) -> tuple[bytes, bytes]:
    return b"iCCP", name.encode("latin-1") + b"\0\0" + zlib.compress(icc)


def _pack_row(row: np.ndarray, depth: int) -> bytes:
    """One row of samples (flattened, interleaved) at ``depth`` bits."""
    if depth == 16:
        return row.astype(">u2").tobytes()
    if depth == 8:
        return row.astype(np.uint8).tobytes()
    per = 8 // depth
    vals = row.astype(np.uint8)
    pad = (-len(vals)) % per
    if pad:
        vals = np.concatenate([vals, np.zeros(pad, np.uint8)])
    vals = vals.reshape(-1, per)
    out = np.zeros(len(vals), np.uint8)
    for i in range(per):
        out |= vals[:, i] << (8 - depth * (i + 1))
    return out.tobytes()


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def _filter_rows(rows: list[bytes], bpp: int) -> bytes:
    """Filter each row with type (row index % 5): exercises every filter."""
    out = bytearray()
    prev = bytes(len(rows[0])) if rows else b""
    for y, raw in enumerate(rows):
        ftype = y % 5
        line = bytearray(len(raw))
        for i, x in enumerate(raw):
            a = raw[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            pred = (0, a, b, (a + b) // 2, _paeth(a, b, c))[ftype]
            line[i] = (x - pred) & 0xFF
        out.append(ftype)
        out += line
        prev = raw
    return bytes(out)


def _scanlines(samples: np.ndarray, depth: int, channels: int) -> bytes:
    h = samples.shape[0]
    rows = [_pack_row(samples[y].reshape(-1), depth) for y in range(h)]
    if not rows or not rows[0]:
        return b""
    bpp = max(1, channels * depth // 8)
    return _filter_rows(rows, bpp)


def write_png(samples: np.ndarray, color_type: int, depth: int, *, palette: np.ndarray | None = None,
              trns: bytes | None = None, interlace: bool = False,
              before_plte: list[tuple[bytes, bytes]] = (), after_plte: list[tuple[bytes, bytes]] = (),
              after_idat: list[tuple[bytes, bytes]] = ()) -> bytes:
    """A PNG of ``samples`` (H x W or H x W x C at the image's bit depth).

    ``palette`` is N x 3 uint8 (colour type 3); ``trns`` the raw tRNS payload.
    ``before_plte`` chunks go right after IHDR (gAMA, cHRM, iCCP, sRGB, sBIT
    belong there), ``after_plte`` between PLTE and IDAT (tRNS goes first,
    then these: pHYs, text, eXIf), ``after_idat`` between IDAT and IEND.
    """
    assert depth in LEGAL_DEPTHS[color_type], (color_type, depth)
    if samples.ndim == 2:
        samples = samples[..., None]
    h, w, c = samples.shape
    assert c == CHANNELS[color_type]
    assert int(samples.max(initial=0)) < (1 << depth)
    if interlace:
        raw = b""
        for x0, y0, dx, dy in _ADAM7:
            sub = samples[y0::dy, x0::dx]
            if sub.shape[0] and sub.shape[1]:
                raw += _scanlines(sub, depth, c)
    else:
        raw = _scanlines(samples, depth, c)
    parts = [b"\x89PNG\r\n\x1a\n",
             chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, int(interlace)))]
    parts += [chunk(t, p) for t, p in before_plte]
    if palette is not None:
        parts.append(chunk(b"PLTE", np.asarray(palette, np.uint8).reshape(-1).tobytes()))
    if trns is not None:
        parts.append(chunk(b"tRNS", trns))
    parts += [chunk(t, p) for t, p in after_plte]
    data = zlib.compress(raw, 9)
    # Two IDAT chunks when there is enough data: decoders must join them.
    cut = len(data) // 2 if len(data) > 16 else len(data)
    parts.append(chunk(b"IDAT", data[:cut]))
    if cut < len(data):
        parts.append(chunk(b"IDAT", data[cut:]))
    parts += [chunk(t, p) for t, p in after_idat]
    parts.append(chunk(b"IEND", b""))
    return b"".join(parts)


def chunks_of(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, payload) of every chunk of a PNG, in order."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    out, pos = [], 8
    while pos + 8 <= len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        out.append((data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]))
        pos += 12 + n
    return out
