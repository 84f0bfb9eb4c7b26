"""A GIF writer for tests: each frame with its own palette, offset, disposal and transparency.

Written byte by byte (uncompressed-style LZW), so a test can build the GIFs
encoders never write: local palettes on every frame, disposal 2 with a
transparent index, frames smaller than the canvas, no NETSCAPE block.
"""

from __future__ import annotations

import struct

import numpy as np

__all__ = ["gif"]


def _lzw(indices: bytes, min_code: int) -> bytes:
    """Uncompressed-style GIF LZW: a clear code every few codes, so no table growth."""
    clear, end = 1 << min_code, (1 << min_code) + 1
    width = min_code + 1
    codes, bits, nbits, out = [], 0, 0, bytearray()
    for i, v in enumerate(indices):
        if i % ((1 << min_code) - 2) == 0:
            codes.append(clear)
        codes.append(v)
    codes.append(end)
    for code in codes:
        bits |= code << nbits
        nbits += width
        while nbits >= 8:
            out.append(bits & 0xFF)
            bits >>= 8
            nbits -= 8
    if nbits:
        out.append(bits & 0xFF)
    blocks = b"".join(bytes((len(out[i : i + 255]),)) + bytes(out[i : i + 255]) for i in range(0, len(out), 255))
    return bytes((min_code,)) + blocks + b"\x00"


def gif(width, height, frames, loop=None, comment=None) -> bytes:
    """``frames``: dicts with ``pixels`` (2-D uint8 indices), ``palette`` (list of RGB),
    ``x``, ``y``, ``delay`` (1/100 s), ``disposal``, ``transparent`` (index or None)."""
    gct = bytes(np.zeros(3 * 4, np.uint8))  # 4 black entries
    out = bytearray(b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80 | 1, 0, 0) + gct)
    if loop is not None:
        out += b"!\xff\x0bNETSCAPE2.0\x03\x01" + struct.pack("<H", loop) + b"\x00"
    if comment:
        out += b"!\xfe" + bytes((len(comment),)) + comment + b"\x00"
    for f in frames:
        tr = f.get("transparent")
        packed = (f.get("disposal", 0) << 2) | (1 if tr is not None else 0)
        out += b"!\xf9\x04" + struct.pack("<BHB", packed, f.get("delay", 0), tr or 0) + b"\x00"
        pix = np.asarray(f["pixels"], np.uint8)
        bits = max(1, (len(f["palette"]) - 1).bit_length())
        pal = list(f["palette"]) + [(0, 0, 0)] * ((1 << bits) - len(f["palette"]))
        out += b"," + struct.pack("<HHHHB", f.get("x", 0), f.get("y", 0), pix.shape[1], pix.shape[0],
                                  0x80 | (bits - 1))
        out += bytes(np.asarray(pal, np.uint8).reshape(-1))
        out += _lzw(pix.tobytes(), max(2, bits))
    return bytes(out + b";")
