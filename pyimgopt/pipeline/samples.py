"""Samples: what a source's samples are, and turning deep or exotic ones into 8 bits.

Owns the facts about a source's samples that Pillow's mode hides — bits per
sample, unsigned/signed/float, the colour model (from the PNG header or the
TIFF tags) — and whether pyimgopt can write them back *exactly*
(:attr:`Samples.keepable`: unsigned 1-16-bit gray, gray+alpha, RGB(A) or
palette; 16 bits through libvips). Everything else (float, 32-bit, signed,
CMYK, Lab, YCbCr TIFFs) is never kept as TIFF by a re-encode: it is left as
it is or converted into another format. Also owns the mapping of such
samples to 8 bits for those conversions, each saying what it did:

- unsigned 16-bit: ``v * 255 / 65535``, rounded (never truncated or clipped);
- unsigned 32-bit: ``v * 255 / (2^32 - 1)``, rounded;
- signed n-bit: the type's range onto 0-255 (``-2^(n-1)`` black);
- float: the [0, 1] convention (``v * 255``); values above 1 (HDR) and
  below 0 are clipped, and the note says how many.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from .pngfile import png_header

__all__ = ["Samples", "of", "source_bits", "needs_vips", "round16", "to_8bit"]

#: Pillow modes of a TIFF whose samples a same-format re-encode keeps exactly
#: (8-bit through Pillow's writer, 16-bit gray/colour through libvips).
_KEEPABLE_MODES = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA", "I;16", "I;16B", "I;16L",
                             "I;16N"})
_TIFF_COLOUR = {0: "gray", 1: "gray", 2: "rgb", 3: "palette", 5: "cmyk", 6: "ycbcr", 8: "lab",
                9: "lab", 10: "lab"}


@dataclass(frozen=True)
class Samples:
    """Bits per sample (the largest), ``kind`` (uint, int, float) and colour model."""

    bits: int = 8
    kind: str = "uint"
    colour: str = "rgb"  # gray, rgb, palette, cmyk, ycbcr, lab, other
    mode: str = ""

    @property
    def keepable(self) -> bool:
        """Whether a lossless re-encode of the same format can keep every sample."""
        return (self.kind == "uint" and self.bits <= 16 and self.colour in ("gray", "rgb", "palette")
                and (self.mode in _KEEPABLE_MODES or not self.mode))

    def describe(self) -> str:
        """``"32-bit float gray"``, ``"8-bit CMYK"``...: for messages."""
        kind = {"uint": "", "int": "signed ", "float": "float "}[self.kind]
        colour = {"rgb": "RGB", "cmyk": "CMYK", "ycbcr": "YCbCr", "lab": "Lab"}.get(self.colour, self.colour)
        return f"{self.bits}-bit {kind}{colour}"


def _first(value, default: int) -> list[int]:
    values = value if isinstance(value, tuple) else (value,) if value is not None else (default,)
    return [v for v in values if isinstance(v, int)] or [default]


def of(pr) -> Samples:
    """The :class:`Samples` of a probed source (``pr``: :class:`~.probe.Probe`)."""
    if pr.format == "PNG":
        hdr = png_header(pr.data)
        if hdr is None:
            return Samples()
        colour = "palette" if hdr.color_type == 3 else "gray" if hdr.color_type in (0, 4) else "rgb"
        return Samples(hdr.depth, "uint", colour)
    if pr.format == "TIFF" and pr.image is not None:
        try:
            tags = pr.image.tag_v2  # type: ignore[attr-defined]
            bits = max(_first(tags.get(258), 1))
            fmt = max(_first(tags.get(339), 1))
            photometric = _first(tags.get(262), 1)[0]
        except Exception:
            return Samples(mode=pr.image.mode)
        colour = _TIFF_COLOUR.get(photometric, "other")
        if colour == "ycbcr" and pr.image.mode in ("RGB", "RGBA"):
            colour = "rgb"  # JPEG-in-TIFF: libtiff hands over RGB
        kind = {2: "int", 3: "float"}.get(fmt, "uint")
        return Samples(bits, kind, colour, pr.image.mode)
    header = getattr(pr, "header", None)
    return Samples(getattr(header, "bits", 8) or 8)


def source_bits(pr) -> int:
    """Bits per sample of the source as stored, as 16 for anything deeper than 8 (else 8)."""
    return 16 if of(pr).bits > 8 else 8


def needs_vips(pr) -> bool:
    """16-bit unsigned colour (or gray+alpha) PNG/TIFF: Pillow would truncate it to 8 bits."""
    smp = of(pr)
    if smp.bits != 16 or smp.kind != "uint":
        return False
    if pr.format == "PNG":
        hdr = png_header(pr.data)
        return hdr is not None and hdr.color_type in (2, 4, 6)
    return pr.format == "TIFF" and smp.colour in ("rgb", "gray") and pr.mode in ("RGB", "RGBA", "LA")


def round16(arr: np.ndarray) -> np.ndarray:
    """16-bit samples to 8 bits, rounded (``v * 255 / 65535``), never truncated."""
    return ((arr.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def to_8bit(im: Image.Image, smp: Samples, notes: list[str]) -> tuple[Image.Image, bool]:
    """A gray image of mode I/I;16/F (or signed L) as 8-bit ``L``; (image, exact).

    ``exact`` says every source value survived (16-bit values that are all
    multiples of 257, say). A note says what was done to the values.
    """
    arr = np.asarray(im)
    if im.mode == "F":
        arr = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=1.0, neginf=0.0)
        over, under = int((arr > 1.0).sum()), int((arr < 0.0).sum())
        note = "float samples mapped from [0, 1] to 8 bits"
        if over or under:
            note += f"; {over} values above 1.0 (HDR) and {under} below 0 clipped"
        notes.append(note)
        return Image.fromarray(np.clip(arr * 255.0 + 0.5, 0, 255).astype(np.uint8)), False
    if smp.kind == "int":  # Pillow reads signed samples as unsigned bytes (L) or int32 (I)
        n = smp.bits if smp.bits in (8, 16, 32) else 16
        signed = arr.astype(np.int64)
        if im.mode == "L":
            signed = arr.astype(np.uint8).view(np.int8).astype(np.int64)
        low, span = -(1 << (n - 1)), (1 << n) - 1
        out = ((np.clip(signed, low, -low - 1) - low) * 255 + span // 2) // span
        notes.append(f"signed {n}-bit samples mapped to 8 bits ({low}..{-low - 1} to 0..255)")
        return Image.fromarray(out.astype(np.uint8)), False
    if smp.bits > 16 or (im.mode == "I" and smp.bits == 32):  # Pillow's int32 holds uint32 bits
        wide = arr.astype(np.int64) & 0xFFFFFFFF
        out = (wide * 255 + 0x7FFFFFFF) // 0xFFFFFFFF
        notes.append("32-bit samples scaled to 8 bits (v * 255 / (2^32 - 1))")
        return Image.fromarray(out.astype(np.uint8)), False
    wide = arr.astype(np.int64)
    if im.mode.startswith("I;16") or smp.bits == 16 or int(wide.max(initial=0)) > 255:
        # 16-bit to 8-bit by scaling (x * 255 / 65535, rounded), never by clipping.
        wide = np.clip(wide, 0, 65535)
        exact = not bool((wide % 257).any())
        if not exact:
            notes.append("16-bit samples rounded to 8 bits (v * 255 / 65535)")
        return Image.fromarray(round16(wide)), exact
    return Image.fromarray(np.clip(wide, 0, 255).astype(np.uint8)), True
