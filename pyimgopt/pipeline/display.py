"""Display metadata carried from a source into a re-encode: colour chunks and physical size.

Owns what survives a re-encode although metadata is stripped, because it
changes how the image is shown rather than telling anything about who took
it: PNG's colour and HDR chunks (``gAMA`` ``cHRM`` ``sRGB`` ``cICP``
``mDCV`` ``cLLI``, and ``sBIT`` while bit depth and colour type are
unchanged) go into a PNG output when its pixels are still the source's
values (no ICC conversion happened); the physical density (PNG ``pHYs`` or
JFIF) goes into PNG and JPEG outputs, x and y swapped when EXIF orientation
turned the image. Like libvips and ImageMagick, a resize keeps the density
(pixels per inch), so the physical size follows the pixel size. Where the
output format cannot hold a source's non-sRGB ``gAMA``/``cHRM`` a note says
so. ICC profiles are the decoder's business (converted, or kept by it).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from .strip import png_chunk, png_chunks

__all__ = ["Display", "read_display", "carry"]

_COLOUR = (b"gAMA", b"cHRM", b"sRGB", b"cICP", b"mDCV", b"cLLI")
_SRGB_GAMMA = 45455  # 1/2.2 in PNG's units of 1/100000
_SRGB_CHRM = (31270, 32900, 64000, 33000, 30000, 60000, 15000, 6000)


@dataclass
class Display:
    """What shapes the display of a source, independent of its pixels."""

    colour: list[tuple[bytes, bytes]] = field(default_factory=list)  # PNG (type, payload)
    sbit: bytes | None = None
    ihdr_kind: bytes | None = None  # bit depth + colour type of the source PNG
    density: tuple[str, int, int] | None = None  # (unit, x, y); unit: aspect, inch, cm, metre
    icc: bool = False


def read_display(data: bytes, fmt: str) -> Display:
    """The display metadata of ``data`` (PNG chunks, JFIF density); empty if unreadable."""
    out = Display()
    if fmt == "png":
        try:
            for ctype, start, end in png_chunks(data):
                body = data[start + 8 : end - 4]
                if ctype == b"IHDR":
                    out.ihdr_kind = body[8:10]
                elif ctype in _COLOUR:
                    out.colour.append((ctype, body))
                elif ctype == b"sBIT":
                    out.sbit = body
                elif ctype == b"iCCP":
                    out.icc = True
                elif ctype == b"pHYs" and len(body) == 9:
                    x, y, unit = struct.unpack(">IIB", body)
                    if x and y:
                        out.density = ("metre" if unit == 1 else "aspect", x, y)
        except ValueError:
            return Display()
    elif fmt == "jpeg" and data[2:4] == b"\xff\xe0" and data[6:11] == b"JFIF\x00" and len(data) >= 20:
        unit, x, y = data[13], *struct.unpack(">HH", data[14:18])
        if x and y and unit in (0, 1, 2):
            out.density = (("aspect", "inch", "cm")[unit], x, y)
    return out


def _non_srgb_colour(src: Display) -> bool:
    chunks = dict(src.colour)
    if b"sRGB" in chunks or src.icc:
        return False
    gamma = chunks.get(b"gAMA")
    if gamma is not None and len(gamma) == 4 and abs(struct.unpack(">I", gamma)[0] - _SRGB_GAMMA) > 1000:
        return True
    chrm = chunks.get(b"cHRM")
    if chrm is not None and len(chrm) == 32:
        values = struct.unpack(">8I", chrm)
        return any(abs(a - b) > 1000 for a, b in zip(values, _SRGB_CHRM))
    return b"cICP" in chunks


def _png_phys(density: tuple[str, int, int]) -> bytes:
    unit, x, y = density
    if unit == "inch":
        return struct.pack(">IIB", round(x / 0.0254), round(y / 0.0254), 1)
    if unit == "cm":
        return struct.pack(">IIB", x * 100, y * 100, 1)
    return struct.pack(">IIB", x, y, 1 if unit == "metre" else 0)


def _carry_png(out: bytes, src: Display, colour: bool, density: tuple[str, int, int] | None) -> bytes:
    try:
        chunks = list(png_chunks(out))
    except ValueError:
        return out
    have = {c for c, _, _ in chunks}
    extra = []
    if colour:
        chunks_in = src.colour
        if src.icc:  # the source's iCCP (sRGB, or it would have been converted) ruled over gAMA/cHRM
            chunks_in = [(c, b) for c, b in src.colour if c in (b"cICP", b"mDCV", b"cLLI")]
            if b"iCCP" not in have:
                chunks_in.append((b"sRGB", b"\x00"))
        extra += [png_chunk(c, body) for c, body in chunks_in
                  if c not in have and not (c == b"sRGB" and b"iCCP" in have)]
        ihdr = chunks[0]
        if src.sbit is not None and b"sBIT" not in have and out[ihdr[1] + 16 : ihdr[1] + 18] == src.ihdr_kind:
            extra.append(png_chunk(b"sBIT", src.sbit))
    if density is not None and b"pHYs" not in have:
        extra.append(png_chunk(b"pHYs", _png_phys(density)))
    if not extra:
        return out
    at = chunks[0][2]  # right after IHDR: before PLTE and IDAT, as every one of them must be
    return out[:at] + b"".join(extra) + out[at:]


def _carry_jpeg(out: bytes, density: tuple[str, int, int]) -> bytes:
    unit, x, y = density
    if unit == "metre":  # JFIF counts per cm or per inch
        unit, x, y = ("cm", x // 100, y // 100) if x % 100 == y % 100 == 0 else (
            "inch", round(x * 0.0254), round(y * 0.0254))
    if not (0 < x < 65536 and 0 < y < 65536):
        return out
    fields = bytes((("aspect", "inch", "cm").index(unit),)) + struct.pack(">HH", x, y)
    if out[2:4] == b"\xff\xe0" and out[6:11] == b"JFIF\x00" and len(out) >= 20:
        return out[:13] + fields + out[18:]
    app0 = b"\xff\xe0\x00\x10JFIF\x00\x01\x01" + fields + b"\x00\x00"
    return out[:2] + app0 + out[2:]


def carry(out: bytes, out_fmt: str, src: Display, *, colour: bool, swap: bool) -> tuple[bytes, list[str]]:
    """``out`` with ``src``'s display metadata added where ``out_fmt`` can hold it.

    ``colour`` says the output pixels are still in the source's encoding (no
    ICC conversion). ``swap`` exchanges the x and y density (EXIF
    orientation 5-8 was applied). Chunks the encoder already wrote are not
    duplicated. Returns the bytes and notes.
    """
    notes: list[str] = []
    density = src.density
    if density is not None and density[0] == "aspect" and density[1] == density[2]:
        density = None  # square pixels, no physical size: what a missing field means anyway
    if density is not None and swap:
        density = (density[0], density[2], density[1])
    if out_fmt == "png":
        out = _carry_png(out, src, colour, density)
    else:
        if out_fmt == "jpeg" and density is not None and out[:2] == b"\xff\xd8":
            out = _carry_jpeg(out, density)
        if colour and _non_srgb_colour(src):
            notes.append(f"the source's gAMA/cHRM/cICP colour description cannot be stored in "
                         f"{out_fmt.upper()}: its pixel values are shown as sRGB")
    return out, notes
