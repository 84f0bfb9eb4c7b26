"""GIF animation frames as a browser shows them.

Owns :func:`composite`: the frames of an animated GIF, each the whole canvas
as it is displayed after that frame, composited the way browsers and
libnsgif (libvips) do: the canvas starts transparent (the logical screen's
background colour is ignored), a frame's transparent index leaves what is
below it, and before the next frame its disposal method applies — 0 and 1
leave the canvas, 2 clears the frame's rectangle to *transparent*, 3 restores
the canvas as it was before the frame. Pillow's own compositing gets disposal
2 with a transparent index wrong (it paints the cleared area with a palette
colour), so only the LZW decoding of each frame is Pillow's: every frame is
handed to it alone, as a one-image GIF with a palette of distinct colours, and
the indices it returns are composited here. (libnsgif, in libvips, clears a
disposal-2 frame without a transparent index to the background colour
instead; :func:`composite` can do that too, to check that an output looks
the same in both.)
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import numpy as np
from PIL import Image

__all__ = ["Frame", "parse", "composite", "unambiguous"]

#: A palette of 256 distinct, non-gray colours: Pillow turns a GIF with a gray
#: palette into mode L (gray levels, not indices); this one keeps mode P.
_INDEX_PALETTE = bytes(v for i in range(256) for v in (i, 1, 2))


@dataclass
class Frame:
    """One image of a GIF: where it goes, its palette, and its coded data."""

    x: int
    y: int
    width: int
    height: int
    interlaced: bool
    palette: bytes  # RGB triples (local table, else the global one)
    lzw: bytes  # the minimum code size byte and the data sub-blocks, terminator included
    disposal: int = 0
    transparent: int | None = None
    gce: int | None = None  # offset of its graphic control block's packed byte


def _sub_blocks_end(data: bytes, pos: int) -> int:
    n = len(data)
    while pos < n:
        size = data[pos]
        pos += 1 + size
        if size == 0:
            return pos
    raise ValueError("GIF data ends inside a block")


def parse(data: bytes) -> tuple[int, int, list[Frame], tuple[int, int, int] | None]:
    """(canvas width, canvas height, frames, background colour) of a GIF; ``ValueError``
    when it does not parse. The background colour is the global table's entry the logical
    screen names, or ``None`` without a global table."""
    if len(data) < 13 or data[:6] not in (b"GIF87a", b"GIF89a"):
        raise ValueError("not a GIF")
    width, height, packed = struct.unpack("<HHB", data[6:11])
    bg_index = data[11]
    pos, n = 13, len(data)
    gct = b""
    if packed & 0x80:
        size = 3 << ((packed & 7) + 1)
        gct, pos = data[pos:pos + size], pos + size
    frames: list[Frame] = []
    disposal, transparent, gce = 0, None, None
    while pos < n:
        sep = data[pos]
        if sep == 0x3B:
            break
        if sep == 0x21:
            if pos + 2 > n:
                break
            label = data[pos + 1]
            if label == 0xF9 and pos + 7 < n and data[pos + 2] == 4:
                flags = data[pos + 3]
                disposal = (flags >> 2) & 7
                transparent = data[pos + 6] if flags & 1 else None
                gce = pos + 3
            pos = _sub_blocks_end(data, pos + 2)
        elif sep == 0x2C:
            if pos + 10 > n:
                raise ValueError("GIF image descriptor cut short")
            x, y, w, h, flags = struct.unpack("<HHHHB", data[pos + 1:pos + 10])
            pos += 10
            palette = gct
            if flags & 0x80:
                size = 3 << ((flags & 7) + 1)
                palette, pos = data[pos:pos + size], pos + size
            start = pos
            pos = _sub_blocks_end(data, pos + 1)
            frames.append(Frame(x, y, w, h, bool(flags & 0x40), palette, data[start:pos],
                                disposal, transparent, gce))
            disposal, transparent, gce = 0, None, None  # a graphic control block applies to one image
        else:
            break  # junk after the last block: browsers stop here too
    background = tuple(gct[3 * bg_index:3 * bg_index + 3]) if 3 * bg_index + 3 <= len(gct) else None
    return width, height, frames, background  # type: ignore[return-value]


def _indices(frame: Frame) -> np.ndarray:
    """The frame's colour indices, decoded by Pillow from a one-image GIF of its own."""
    if frame.width == 0 or frame.height == 0:
        return np.zeros((frame.height, frame.width), np.uint8)
    flags = 0x80 | 0x07 | (0x40 if frame.interlaced else 0)
    alone = (b"GIF89a" + struct.pack("<HHBBB", frame.width, frame.height, 0, 0, 0)
             + b"," + struct.pack("<HHHHB", 0, 0, frame.width, frame.height, flags)
             + _INDEX_PALETTE + frame.lzw + b";")
    with Image.open(io.BytesIO(alone), formats=["GIF"]) as im:
        im.load()
        if im.mode != "P":
            raise ValueError(f"GIF frame decoded as {im.mode}")
        return np.asarray(im)


def composite(data: bytes, count: int | None = None, *, libnsgif: bool = False,
              wanted: set[int] | None = None) -> list[Image.Image | None]:
    """Every frame of the GIF ``data`` as an RGBA image of the whole canvas, as displayed.

    ``count`` (the frames the caller counted) must match, else ``ValueError``;
    so does a frame whose data does not decode. ``libnsgif=True`` composites
    as libnsgif (libvips) does, which differs from browsers in one case: a
    frame with disposal 2 and no transparent index is cleared to the opaque
    background colour, not to transparent. An encoder's output is exact only
    when both agree with the source. With ``wanted`` (frame indices) only
    those frames are made (the others are ``None``): a long animation's
    sample costs one canvas, not one image per frame.
    """
    width, height, frames, background = parse(data)
    if count is not None and len(frames) != count:
        raise ValueError(f"{len(frames)} GIF frames decoded, {count} counted")
    canvas = np.zeros((height, width, 4), np.uint8)
    out: list[Image.Image] = []
    for frame in frames:
        before = canvas.copy() if frame.disposal == 3 else None
        idx = _indices(frame)
        pal = np.frombuffer(frame.palette, np.uint8).reshape(-1, 3) if frame.palette else \
            np.zeros((0, 3), np.uint8)
        table = np.zeros((256, 4), np.uint8)
        table[:, 3] = 255  # an index past the palette shows black, as Pillow and libnsgif do
        table[: min(256, len(pal)), :3] = pal[:256]
        x1, y1 = min(width, frame.x + frame.width), min(height, frame.y + frame.height)
        if x1 > frame.x and y1 > frame.y:
            sub = idx[: y1 - frame.y, : x1 - frame.x]
            area = canvas[frame.y:y1, frame.x:x1]
            draw = np.ones(sub.shape, bool) if frame.transparent is None else sub != frame.transparent
            area[draw] = table[sub[draw]]
        keep = wanted is None or len(out) in wanted
        out.append(Image.fromarray(canvas.copy(), "RGBA") if keep else None)
        if frame.disposal == 2 and x1 > frame.x and y1 > frame.y:
            fill = 0
            if libnsgif and frame.transparent is None and background is not None:
                fill = np.array([*background, 255], np.uint8)
            canvas[frame.y:y1, frame.x:x1] = fill
        elif before is not None:
            canvas = before
    return out


def unambiguous(data: bytes) -> bytes:
    """``data`` with every disposal-2 frame given a transparent index it does not use.

    Browsers clear a disposal-2 frame to transparent; libnsgif (libvips) does
    so only when the frame has a transparent index, else it paints the
    background colour. An unused index changes no pixel and makes both show
    the same. A frame that uses all 256 indices, or has no graphic control
    block, is left as it is (``composite(..., libnsgif=True)`` tells).
    """
    try:
        _, _, frames, _ = parse(data)
    except ValueError:
        return data
    out = bytearray(data)
    for frame in frames:
        if frame.disposal != 2 or frame.transparent is not None or frame.gce is None:
            continue
        try:
            used = np.unique(_indices(frame))
        except Exception:
            continue
        free = np.setdiff1d(np.arange(256), used)
        if free.size:
            out[frame.gce] |= 1
            out[frame.gce + 3] = int(free[0])
    return bytes(out)
