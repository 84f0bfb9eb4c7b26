"""Encode: working frames to the bytes of one output format.

Owns the dispatch from an output format to its encoder — JPEG in
:mod:`.jpeg`, PNG in :mod:`.png`, JPEG XL in :mod:`.jxl` — and the smaller
formats written here: WebP (lossy or lossless, animated; a graphic also tried
as lossless WebP), AVIF (when Pillow has it, animated; 4:4:4 for graphics;
lossless as RGB through libvips, verified by decoding), and the formats
``keep`` may preserve (GIF — called lossless only when it decodes to exactly
the frames given —, TIFF with deflate, BMP with alpha); animation timing
comes from :func:`.animation.save_params`. A non-sRGB profile whose original
values the frames keep (``Decoded.icc``) is always written with them; other
metadata only when asked: EXIF without orientation and the sRGB profile the
pixels are in.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, features

from ..errors import EncodeError, UnsupportedFormatError
from ..files import EXTENSIONS
from ..settings import Settings
from . import animation, boost, gifanim, jxl
from .decode import Decoded, srgb_icc
from .frames import flatten_rgb, looks_like_graphic, save
from .jpeg import encode_jpeg
from .png import encode_png

__all__ = ["Encoded", "output_format", "encode", "EXTENSIONS", "ANIMATED_FORMATS", "has_avif",
           "flatten_rgb", "looks_like_graphic"]

ANIMATED_FORMATS = frozenset({"gif", "png", "webp", "avif"})
_DEFAULT_QUALITY = {"webp": 80, "avif": 60}


@dataclass
class Encoded:
    data: bytes
    format: str
    quality: int | None
    lossless: bool
    notes: list[str] = field(default_factory=list)


def has_avif() -> bool:
    """True when this Pillow build can write AVIF."""
    return bool(features.check("avif"))


def output_format(setting: str, input_format: str) -> str:
    """The output format name for ``Settings.format`` and a sniffed input format."""
    return input_format.lower() if setting == "keep" else setting


def encode(
    dec: Decoded,
    out_fmt: str,
    s: Settings,
    *,
    source_format: str,
    source_lossless: bool,
    fast: bool = False,
) -> Encoded:
    """Encode ``dec.frames`` as ``out_fmt`` under settings ``s``.

    ``fast`` trades bytes for speed (baseline JPEG without Huffman
    optimisation — identical pixels —, WebP method 2, AVIF speed 10): the
    quality search probes with it and encodes the final answer without it.

    Raises
    ------
    UnsupportedFormatError
        AVIF asked for but this Pillow cannot write it, JPEG XL without
        ``pillow-jxl-plugin`` (the message names it), or several frames for a
        format that cannot animate.
    EncodeError
        The encoder refused the image.
    """
    frames = dec.frames
    if len(frames) > 1 and out_fmt not in ANIMATED_FORMATS:
        raise UnsupportedFormatError(f"{out_fmt.upper()} cannot hold an animation", stage="encode")
    if out_fmt == "avif" and not has_avif():
        raise UnsupportedFormatError("this Pillow build cannot write AVIF", stage="encode")
    meta: dict = {}
    if dec.icc and out_fmt in ("png", "webp", "tiff"):
        meta["icc_profile"] = dec.icc  # the original values kept: their profile must travel too
    if s.keep_metadata:
        if dec.exif and out_fmt in ("jpeg", "png", "webp", "avif", "tiff"):
            meta["exif"] = dec.exif
        if ("icc_profile" not in meta and out_fmt in ("jpeg", "png", "webp", "avif", "tiff")
                and frames[0].mode not in ("L", "LA", "1")):
            meta["icc_profile"] = srgb_icc()
    anim, notes = animation.save_params(dec, out_fmt)  # exact timing, or a note saying why not
    quality: int | None = None
    lossless = False
    try:
        if out_fmt == "jpeg":
            data, quality = encode_jpeg(frames[0], s, source_quality=dec.source_quality,
                                        source_format=source_format, meta=meta, notes=notes,
                                        fast=fast)
        elif out_fmt == "png":
            data, lossless = encode_png(frames, s, anim=anim, meta=meta, notes=notes)
        elif out_fmt == "webp":
            lossless = s.lossless if s.lossless is not None else (
                source_format == "webp" and source_lossless
            )
            quality = None if lossless else (s.quality or _DEFAULT_QUALITY["webp"])
            conv = [f.convert("RGBA" if f.mode in ("LA", "RGBA", "P", "PA") else "RGB") for f in frames]
            try_lossless = (not lossless and not fast and s.lossless is None and len(frames) == 1
                            and looks_like_graphic(frames[0]))
            data = save(
                conv,
                "webp",
                lossless=lossless,
                quality=min(100, s.effort * 11 + 1) if lossless else quality,
                # method 6 costs 20x method 4 on alpha images (exhaustive alpha
                # filtering) for ~1 % fewer bytes: it is kept for effort >= 8.
                method=2 if fast else min(6, max(0, s.effort - 2)),
                **anim,
                **meta,
            )
            if try_lossless:  # a graphic is often smaller, and exact, as lossless WebP
                exact = save(conv, "webp", lossless=True, quality=min(100, s.effort * 11 + 1),
                              method=min(6, max(0, s.effort - 2)), **meta)
                if len(exact) <= len(data):
                    data, lossless, quality = exact, True, None
                    notes.append("lossless WebP (graphic, smaller than lossy)")
        elif out_fmt == "avif":
            lossless = bool(s.lossless)
            quality = None if lossless else (s.quality or _DEFAULT_QUALITY["avif"])
            conv = [f.convert("RGBA" if f.mode in ("LA", "RGBA", "P", "PA") else "RGB") for f in frames]
            if lossless:
                data = _avif_lossless(frames, meta, s.effort)
            else:
                params = dict(quality=quality, speed=10 if fast else max(0, min(10, 12 - s.effort)))
                threads = os.environ.get("PYIMGOPT_CODEC_THREADS")
                if threads and threads.isdigit():
                    params["max_threads"] = max(1, int(threads))
                sub = s.chroma_subsampling
                if sub == "auto":  # as for JPEG: hard colour edges bleed at 4:2:0
                    sub = "4:4:4" if quality >= 90 or looks_like_graphic(conv[0]) else "4:2:0"
                params["subsampling"] = sub
                data = save(conv, "avif", **params, **anim, **meta)
        elif out_fmt == "jxl":
            lossless = s.lossless if s.lossless is not None else (
                source_format == "jxl" and source_lossless)
            quality = None if lossless else (s.quality or jxl.DEFAULT_QUALITY)
            data = jxl.encode(frames[0], quality=quality, lossless=lossless, effort=s.effort,
                              exif=meta.get("exif"), fast=fast)
        elif out_fmt == "gif":
            gif_params: dict = dict(optimize=True, **anim)
            if len(frames) > 1:
                # whole composited frames: each one replaces the last (transparent areas too)
                gif_params["disposal"] = 2
            binary = [_one_bit_alpha(f) for f in frames]
            data = save(binary, "gif", **gif_params, **_gif_transparency(binary[0]))
            if len(frames) > 1:  # shown the same by browsers and by libnsgif (libvips)
                data = gifanim.unambiguous(data)
            # Frames are re-quantised from RGBA: lossless only if every frame shown is the same.
            lossless = _gif_exact(data, frames)
        elif out_fmt == "tiff":
            lossless = True
            # a fresh image: Pillow's TIFF writer copies every tag of a TiffImageFile it is
            # given (XMP, IPTC, Photoshop, Make, Artist, a GPS IFD pointer); only what the
            # writer derives from the pixels, plus ``meta``, may be written
            data = save([_fresh(frames[0])], "tiff", compression="tiff_adobe_deflate", **meta)
        elif out_fmt == "bmp":
            lossless = True
            im = frames[0]
            if im.mode in ("RGBA", "LA") or (im.mode == "P" and im.has_transparency_data):
                data = _bmp_rgba(im.convert("RGBA"))
            else:
                data = save([im if im.mode in ("1", "L", "P", "RGB") else im.convert("RGB")], "bmp")
        else:
            raise UnsupportedFormatError(f"unknown output format {out_fmt!r}", stage="encode")
    except (UnsupportedFormatError, EncodeError, MemoryError):
        raise
    except Exception as exc:
        raise EncodeError(f"{out_fmt.upper()} encoder failed: {exc}", stage="encode") from None
    return Encoded(data=data, format=out_fmt, quality=quality, lossless=lossless, notes=notes)


def _fresh(im: Image.Image) -> Image.Image:
    """A plain copy of ``im`` (not the plugin's class): no tags, no ``info`` a writer could copy."""
    out = im.copy()
    out.info = {}
    return out


def _one_bit_alpha(im: Image.Image) -> Image.Image:
    """GIF holds 1-bit transparency: alpha thresholded at 128 (Pillow's writer would make
    only alpha 0 transparent, so a resized edge's faint pixels would turn opaque)."""
    if im.mode == "P" and im.palette is not None and im.palette.mode == "RGBA":
        alpha = im.getpalette("RGBA")[3::4]
        if all(a in (0, 255) for a in alpha):
            return im
        im = im.convert("RGBA")
    if im.mode not in ("RGBA", "LA"):
        return im
    arr = np.array(im)
    arr[..., -1] = np.where(arr[..., -1] >= 128, 255, 0)
    return Image.fromarray(arr, im.mode)


def _gif_exact(data: bytes, frames: list[Image.Image]) -> bool:
    """Whether the GIF ``data`` shows exactly ``frames`` (RGBA; fully transparent colour ignored),
    its frames composited as a browser does (:mod:`.gifanim`), not by Pillow."""

    def rgba(im: Image.Image) -> np.ndarray:
        arr = np.array(im.convert("RGBA"))
        arr[arr[..., 3] == 0] = 0
        return arr

    want = [rgba(f) for f in frames]
    for libnsgif in (False, True):  # as browsers show it, and as libvips does
        try:
            back = gifanim.composite(data, libnsgif=libnsgif)
        except Exception:
            return False
        if len(back) != len(want) or not all(np.array_equal(rgba(b), w) for b, w in zip(back, want)):
            return False
    return True


def _avif_lossless(frames: list[Image.Image], meta: dict, effort: int) -> bytes:
    """Truly lossless AVIF (identity matrix, 4:4:4, through libvips), checked by decoding it.

    Pillow's AVIF writer always converts to YUV (BT.601), so even quality 100
    changes pixels; libvips' ``heifsave(lossless=True)`` stores RGB. The
    result is decoded again here and compared with the frame, value for
    value, alpha included: lossless is never claimed unverified.

    Raises
    ------
    UnsupportedFormatError
        An animation (libvips writes still AVIF only) or no pyvips.
    EncodeError
        The decoded pixels differ from the source.
    """
    if len(frames) > 1:
        raise UnsupportedFormatError(
            "lossless AVIF animations cannot be written (libvips writes still AVIF only); "
            "use lossless=False, or WebP/PNG for a lossless animation", stage="encode")
    im = frames[0]
    if im.mode not in ("L", "LA", "RGB", "RGBA"):
        im = im.convert("RGBA" if im.has_transparency_data else "RGB")
    data = boost.avif_lossless(im, effort=effort, icc=meta.get("icc_profile"), exif=meta.get("exif"))
    if data is None:
        raise UnsupportedFormatError(
            "lossless AVIF needs pyvips (libvips with an AV1 encoder): Pillow's AVIF writer "
            "always converts to YUV and cannot store exact pixels; install pyvips, or use "
            "lossless WebP or PNG", stage="encode")
    with Image.open(io.BytesIO(data)) as back:
        back.load()
        got = np.asarray(back.convert(im.mode))
    want = np.asarray(im)
    if got.shape != want.shape or not np.array_equal(got, want):
        err = "a different size" if got.shape != want.shape else (
            f"max error {int(np.abs(got.astype(np.int16) - want).max())}")
        raise EncodeError(f"lossless AVIF check failed: the decoded image has {err}", stage="encode")
    return data


def _gif_transparency(im: Image.Image) -> dict:
    """``transparency=index`` for a palette frame whose palette says an entry is clear.

    Decoded frames carry transparency in the palette's alpha (not in Pillow's
    ``info``), and Pillow's GIF writer reads only ``transparency``.
    """
    if im.mode != "P" or im.palette is None or im.palette.mode != "RGBA":
        return {}
    alpha = im.getpalette("RGBA")[3::4]
    clear = [i for i, a in enumerate(alpha) if a == 0]
    return {"transparency": clear[0]} if clear else {}


def _bmp_rgba(im: Image.Image) -> bytes:
    """A 32-bit BMP with a BITMAPV4HEADER whose alpha mask makes the alpha count.

    Pillow writes RGBA as a plain 32-bit BMP whose fourth byte readers
    (Pillow included) ignore; the V4 header's masks say it is alpha.
    """
    import struct

    w, h = im.size
    bgra = np.asarray(im)[::-1, :, [2, 1, 0, 3]]
    pix = np.ascontiguousarray(bgra).tobytes()
    info = struct.pack("<IiiHHIIiiII", 108, w, h, 1, 32, 3, len(pix), 2835, 2835, 0, 0)
    info += struct.pack("<IIII", 0x00FF0000, 0x0000FF00, 0x000000FF, 0xFF000000)
    info += b"BGRs" + bytes(36) + bytes(12)  # LCS_sRGB ("sRGB" little-endian), no endpoints/gamma
    offset = 14 + len(info)
    return b"BM" + struct.pack("<IHHI", offset + len(pix), 0, 0, offset) + info + pix
