"""APNG animation frames as the APNG specification (and browsers) composite them.

Owns :func:`composite`: every frame of an animated PNG as the whole canvas
after that frame. Each frame's region is decoded by Pillow alone (a one-image
PNG made of the file's ``IHDR`` fields with the frame's size, its ``PLTE``,
``tRNS`` and the frame's ``IDAT``/``fdAT`` data), then placed here:
``APNG_BLEND_OP_SOURCE`` replaces the region, ``APNG_BLEND_OP_OVER``
composites the frame over it with Porter-Duff *over* (alpha too:
``a + b * (1 - a)``), and before the next frame ``APNG_DISPOSE_OP_BACKGROUND``
clears the region to transparent and ``APNG_DISPOSE_OP_PREVIOUS`` restores
it. Pillow's own compositing blends the alpha channel like a colour (an
opaque pixel under a half-transparent one came out half transparent), so only
its decoding is used. The default image counts as the first frame only when
an ``fcTL`` comes before ``IDAT``, as the specification says.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

from .strip import png_chunks

__all__ = ["composite"]

_SIG = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return (struct.pack(">I", len(payload)) + kind + payload
            + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))


def _parse(data: bytes):
    """(IHDR payload, shared chunks, [(fcTL fields, coded data)]); ``ValueError`` on junk."""
    ihdr = b""
    shared: list[bytes] = []
    frames: list[tuple[tuple, bytes]] = []
    control: tuple | None = None
    coded = b""
    for kind, start, end in png_chunks(data):
        body = data[start + 8:end - 4]
        if kind == b"IHDR":
            ihdr = body
        elif kind in (b"PLTE", b"tRNS"):
            shared.append(data[start:end])
        elif kind == b"fcTL":
            if len(body) < 26:
                raise ValueError("fcTL cut short")
            if control is not None:
                frames.append((control, coded))
            control, coded = struct.unpack(">IIIIIHHBB", body[:26]), b""
        elif kind == b"IDAT" and control is not None:
            coded += body
        elif kind == b"fdAT" and control is not None:
            coded += body[4:]
    if control is not None:
        frames.append((control, coded))
    if len(ihdr) != 13 or not frames:
        raise ValueError("not an animated PNG")
    return ihdr, shared, frames


def _region(ihdr: bytes, shared: list[bytes], width: int, height: int, coded: bytes) -> np.ndarray:
    alone = (_SIG + _chunk(b"IHDR", struct.pack(">II", width, height) + ihdr[8:])
             + b"".join(shared) + _chunk(b"IDAT", coded) + _chunk(b"IEND", b""))
    with Image.open(io.BytesIO(alone), formats=["PNG"]) as im:
        im.load()
        return np.asarray(im.convert("RGBA"), dtype=np.float64)


def composite(data: bytes, wanted: set[int] | None = None) -> list[Image.Image | None]:
    """Every frame of the APNG ``data`` as an RGBA image of the whole canvas, as displayed.

    ``ValueError`` when the file is not an APNG or a frame does not decode.
    With ``wanted`` (frame indices) only those frames are made (others ``None``).
    """
    ihdr, shared, frames = _parse(data)
    width, height = struct.unpack(">II", ihdr[:8])
    canvas = np.zeros((height, width, 4), np.float64)
    out: list[Image.Image] = []
    for (_, w, h, x, y, _, _, dispose, blend), coded in frames:
        if w == 0 or h == 0 or x + w > width or y + h > height:
            raise ValueError("APNG frame outside the canvas")
        px = _region(ihdr, shared, w, h, coded)
        before = canvas[y:y + h, x:x + w].copy()
        area = canvas[y:y + h, x:x + w]
        if blend == 0:
            area[:] = px
        else:
            a, b = px[..., 3:] / 255.0, area[..., 3:] / 255.0
            alpha = a + b * (1.0 - a)
            safe = np.where(alpha > 0, alpha, 1.0)
            area[..., :3] = np.where(alpha > 0, (px[..., :3] * a + area[..., :3] * b * (1 - a)) / safe, 0)
            area[..., 3:] = alpha * 255.0
        area[:] = np.round(area)  # the canvas holds 8-bit values, as a browser's does
        keep = wanted is None or len(out) in wanted
        out.append(Image.fromarray(canvas.astype(np.uint8), "RGBA") if keep else None)
        if dispose == 1:
            canvas[y:y + h, x:x + w] = 0
        elif dispose == 2:
            canvas[y:y + h, x:x + w] = before
    return out
