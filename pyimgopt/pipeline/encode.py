"""Encode: working frames to the bytes of one output format.

Owns the output formats and their encoder settings: JPEG (mozjpeg through
libvips when present — trellis quantisation, table 8, scan optimisation —
else Pillow plus mozjpeg's lossless pass; progressive or baseline, whichever
is smaller; chroma subsampling by content; never a higher quality than the
source JPEG's own tables), PNG (lossless, with a lossless palette or gray
reduction when the pixels allow it, then oxipng by effort), WebP (lossy or
lossless, animated), AVIF (when Pillow has it, animated; 4:4:4 for graphics;
lossless as RGB through libvips, verified by decoding), JPEG XL (lossy or
lossless, through :mod:`.jxl` when ``pillow-jxl-plugin`` is present), and the
formats ``keep`` may preserve (GIF — called lossless only when it decodes to
exactly the frames given —, TIFF with deflate, BMP with alpha); animation
timing comes from :func:`.animation.save_params`. A non-sRGB profile whose
original values the frames keep (``Decoded.icc``) is always written with
them; other metadata only when asked: EXIF without orientation and the sRGB
profile the pixels are in.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, features

from ..errors import EncodeError, UnsupportedFormatError
from ..settings import Settings
from . import animation, boost, jxl
from .decode import Decoded, srgb_icc

__all__ = ["Encoded", "output_format", "encode", "EXTENSIONS", "ANIMATED_FORMATS", "has_avif"]

EXTENSIONS = {
    "jpeg": ".jpg",
    "png": ".png",
    "webp": ".webp",
    "avif": ".avif",
    "gif": ".gif",
    "tiff": ".tiff",
    "bmp": ".bmp",
    "jxl": ".jxl",
}
ANIMATED_FORMATS = frozenset({"gif", "png", "webp", "avif"})
_PIL_NAMES = {k: k.upper() for k in EXTENSIONS if k != "jxl"}  # JPEG XL: pipeline/jxl.py
_DEFAULT_QUALITY = {"jpeg": 80, "webp": 80, "avif": 60}
_SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}
_SMALL_PIXELS = 250_000  # below this, try baseline and progressive JPEG and keep the smaller


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


def _flatten(im: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    if im.mode in ("RGBA", "LA"):
        base = Image.new("RGB", im.size, background)
        base.paste(im.convert("RGB"), mask=im.getchannel("A"))
        if im.mode == "LA":
            return base.convert("L")
        return base
    if im.mode in ("L", "RGB"):
        return im
    return im.convert("RGB")


def _reduce_lossless(im: Image.Image) -> Image.Image:
    """Gray and palette reductions that keep every pixel value exactly."""
    if im.mode in ("RGB", "RGBA"):
        arr = np.asarray(im)
        if np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 1], arr[..., 2]):
            im = Image.fromarray(
                np.ascontiguousarray(arr[..., [0, 3]] if im.mode == "RGBA" else arr[..., 0])
            )
    if im.mode not in ("RGB", "RGBA", "LA"):
        return im
    if im.getcolors(256) is None:
        return im
    arr = np.asarray(im)
    bands = arr.shape[2]
    if im.mode == "LA":  # palette entries are RGBA
        arr = np.stack([arr[..., 0]] * 3 + [arr[..., 1]], axis=-1)
        bands = 4
    flat = arr.reshape(-1, bands)
    packed = np.zeros(flat.shape[0], dtype=np.uint32)
    for band in range(bands):  # one uint32 key per pixel: far faster than unique(axis=0)
        packed = (packed << np.uint32(8)) | flat[:, band]
    keys, index = np.unique(packed, return_inverse=True)
    shifts = np.array([8 * (bands - 1 - b) for b in range(bands)], dtype=np.uint32)
    colours = ((keys[:, None] >> shifts) & np.uint32(255)).astype(np.uint8)
    if bands == 4:  # opaque-last order lets the tRNS chunk stop early
        order = np.argsort(colours[:, 3] == 255, kind="stable")
        colours = colours[order]
        remap = np.empty_like(order)
        remap[order] = np.arange(order.size)
        index = remap[index.reshape(-1)]
    pal = Image.frombytes("P", im.size, index.astype(np.uint8).reshape(-1).tobytes())
    pal.putpalette(colours.astype(np.uint8).tobytes(), rawmode="RGBA" if bands == 4 else "RGB")
    return pal


def _jpeg_quality(s: Settings, dec: Decoded, source_format: str, out_fmt: str) -> int:
    q = s.quality if s.quality is not None else _DEFAULT_QUALITY["jpeg"]
    if source_format == "jpeg" and out_fmt == "jpeg" and dec.source_quality:
        q = min(q, dec.source_quality)
    return q


def _save(frames: list[Image.Image], fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    first = frames[0]
    if len(frames) > 1:
        params.update(save_all=True, append_images=frames[1:])
    first.save(buf, _PIL_NAMES[fmt], **params)
    return buf.getvalue()


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
            quality = _jpeg_quality(s, dec, source_format, out_fmt)
            im = _flatten(frames[0], s.background_rgb)
            sub = s.chroma_subsampling
            if sub == "auto":  # graphics and text keep full colour resolution
                sub = "4:4:4" if quality >= 90 or looks_like_graphic(im) else "4:2:0"
            data = _jpeg(im, quality, sub, meta, notes, fast, s.effort)
        elif out_fmt == "png":
            lossless = True
            reduced = [f if f.mode in ("P", "1") else _reduce_lossless(f) for f in frames]
            if len(reduced) > 1 and len({f.mode for f in reduced}) > 1:
                reduced = frames  # APNG frames must share one mode
            data = _png(reduced, s, anim, meta, notes)
            # A palette is a visible change: asked for (lossy_png), or allowed by an
            # SSIM target the caller set (and then kept only when it meets it).
            may_lose = s.lossy_png or (s.target_ssim is not None and s.lossless is not True)
            if may_lose and len(frames) == 1 and reduced[0].mode not in ("P", "1"):
                pal = boost.quantize(frames[0])
                if pal is None:
                    notes.append(boost.missing_note("imagequant"))
                else:
                    lossy = _png([pal], s, {}, meta, notes)
                    if len(lossy) < len(data) and (
                            s.target_ssim is None or _ssim_rgb(frames[0], pal, s) >= s.target_ssim):
                        data, lossless = lossy, False
                        notes.append("lossy palette (libimagequant)")
        elif out_fmt == "webp":
            lossless = s.lossless if s.lossless is not None else (
                source_format == "webp" and source_lossless
            )
            quality = None if lossless else (s.quality or _DEFAULT_QUALITY["webp"])
            conv = [f.convert("RGBA" if f.mode in ("LA", "RGBA", "P", "PA") else "RGB") for f in frames]
            try_lossless = (not lossless and not fast and s.lossless is None and len(frames) == 1
                            and looks_like_graphic(frames[0]))
            data = _save(
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
                exact = _save(conv, "webp", lossless=True, quality=min(100, s.effort * 11 + 1),
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
                data = _save(conv, "avif", **params, **anim, **meta)
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
            data = _save(frames, "gif", **gif_params, **_gif_transparency(frames[0]))
            # Frames are re-quantised from RGBA: lossless only if every frame shown is the same.
            lossless = _gif_exact(data, frames)
        elif out_fmt == "tiff":
            lossless = True
            data = _save(frames[:1], "tiff", compression="tiff_adobe_deflate", **meta)
        elif out_fmt == "bmp":
            lossless = True
            im = frames[0]
            if im.mode in ("RGBA", "LA") or (im.mode == "P" and im.has_transparency_data):
                data = _bmp_rgba(im.convert("RGBA"))
            else:
                data = _save([im if im.mode in ("1", "L", "P", "RGB") else im.convert("RGB")], "bmp")
        else:
            raise UnsupportedFormatError(f"unknown output format {out_fmt!r}", stage="encode")
    except (UnsupportedFormatError, EncodeError, MemoryError):
        raise
    except Exception as exc:
        raise EncodeError(f"{out_fmt.upper()} encoder failed: {exc}", stage="encode") from None
    return Encoded(data=data, format=out_fmt, quality=quality, lossless=lossless, notes=notes)


#: Below this effort JPEG skips mozjpeg — its trellis (4-8x the encode time for
#: ~9 % fewer bytes at equal SSIM) and its lossless pass (~4x a libjpeg-turbo
#: encode for ~1-2 %) — and writes libjpeg-turbo's progressive JPEG through Pillow.
JPEG_MOZJPEG_EFFORT = 5
#: From this effort mozjpeg also searches the progressive scan script.
JPEG_SCAN_SEARCH_EFFORT = 8


def _jpeg(im: Image.Image, quality: int, sub: str, meta: dict, notes: list[str], fast: bool,
          effort: int) -> bytes:
    """JPEG through mozjpeg (libvips) when present, else Pillow plus mozjpeg's lossless pass.

    ``effort`` below :data:`JPEG_MOZJPEG_EFFORT` takes the Pillow path, without
    the lossless pass, on purpose (speed first, as sharp and pyvips by default).

    The quality search probes with ``fast`` on the same encoder as the final
    encode, so its SSIM readings hold for the answer (mozjpeg's trellis moves
    pixels; only Huffman tables and scans differ between fast and final).
    """
    small = im.width * im.height <= _SMALL_PIXELS
    exif, icc = meta.get("exif"), meta.get("icc_profile")
    trellis = effort >= JPEG_MOZJPEG_EFFORT
    data = None
    if trellis:
        data = boost.jpeg_encode(im, quality=quality, subsampling=sub, exif=exif, icc=icc, fast=fast,
                                 optimize_scans=effort >= JPEG_SCAN_SEARCH_EFFORT)
    if data is not None:
        if small and not fast:
            base = boost.jpeg_encode(im, quality=quality, subsampling=sub, progressive=False,
                                     exif=exif, icc=icc)
            data = min(data, base or data, key=len)
        return data
    if trellis and not fast and not boost.available("vips"):
        notes.append(boost.missing_note("vips"))
    params = dict(quality=quality, optimize=not fast, subsampling=_SUBSAMPLING[sub], **meta)
    data = _save([im], "jpeg", progressive=not fast, **params)
    if not fast and small:
        base = _save([im], "jpeg", progressive=False, **params)
        data = min(data, base, key=len)
    if not fast and trellis:  # mozjpeg's lossless pass: same pixels, fewer bytes
        moz = boost.jpeg_lossless(data, keep_markers=bool(meta))
        if moz is None:
            notes.append(boost.missing_note("mozjpeg"))
        elif len(moz) < len(data):
            data = moz
    return data


def _gif_exact(data: bytes, frames: list[Image.Image]) -> bool:
    """Whether the GIF ``data`` shows exactly ``frames`` (RGBA; fully transparent colour ignored)."""

    def rgba(im: Image.Image) -> np.ndarray:
        arr = np.array(im.convert("RGBA"))
        arr[arr[..., 3] == 0] = 0
        return arr

    try:
        with Image.open(io.BytesIO(data)) as back:
            if getattr(back, "n_frames", 1) != len(frames):
                return False
            for index, frame in enumerate(frames):
                back.seek(index)
                if not np.array_equal(rgba(back), rgba(frame)):
                    return False
    except Exception:
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


def looks_like_graphic(im: Image.Image) -> bool:
    """Few distinct colours on a coarse sample: a screenshot, chart or logo, not a photo.

    Such images keep 4:4:4 chroma in JPEG (text and hard edges bleed at 4:2:0)
    and are tried as lossless WebP.
    """
    if im.width * im.height < 64:
        return False
    sample = im.convert("RGB").resize((min(160, im.width), min(160, im.height)),
                                      Image.Resampling.NEAREST)
    return sample.getcolors(600) is not None


def _png(frames: list[Image.Image], s: Settings, anim: dict, meta: dict, notes: list[str]) -> bytes:
    """Lossless PNG: oxipng (level by ``s.effort``) on stored zlib; Pillow's optimiser without it.

    oxipng re-filters and re-deflates anyway, so the PNG it is given is stored
    uncompressed (``compress_level=0``): a zlib pass first would be wasted time.
    """
    if len(frames) == 1 and s.effort >= 1:
        opt = boost.png_optimize(_save(frames, "png", compress_level=0, **meta), s.effort)
        if opt is not None:
            return opt
        if not boost.available("oxipng"):
            notes.append(boost.missing_note("oxipng"))
    level = 9 if s.effort >= 4 else max(1, s.effort + 3)
    return _save(frames, "png", optimize=s.effort >= 4, compress_level=level, **anim, **meta)


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


def flatten_rgb(im: Image.Image, background: tuple[int, int, int]) -> np.ndarray:
    """``im`` as an RGB array, any transparency composited onto ``background``."""
    if im.has_transparency_data:  # alpha band, tRNS, or an RGBA palette
        rgba = im.convert("RGBA")
        base = Image.new("RGB", im.size, background)
        base.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
        return np.asarray(base)
    return np.asarray(im.convert("RGB"))


def _ssim_rgb(a: Image.Image, b: Image.Image, s: Settings) -> float:
    from . import perceptual

    bg = s.background_rgb
    return perceptual.score(flatten_rgb(a, bg), flatten_rgb(b, bg))
