"""Decode and normalise: from a probed input to upright sRGB working frames.

Owns decoding (with JPEG DCT shrink-on-load through Pillow's ``draft``, never
below :data:`.geometry.DCT_SHRINK_MARGIN` times the resize target, the
source's exact extent in the scaled pixels kept in ``Decoded.box`` for the
resize),
animation frames (an animated GIF's composited as browsers show them,
:mod:`.gifanim`; the decoder's frame durations only as a fallback for
:func:`.animation.apply_timing`), EXIF auto-orientation (invalid values mean
no rotation; a TIFF's orientation is applied by Pillow's reader itself),
conversion of embedded ICC profiles to sRGB (:mod:`.colour`: every mode,
palette and gray included; skipped when the caller keeps the profile with the
original values), CMYK/Lab/16-bit/float/32-bit/signed samples to 8-bit RGB or
L without clipping (:mod:`.samples`; 16-bit rounded: ``v * 255 / 65535``;
16-bit colour PNG and TIFF are read through libvips because Pillow truncates
them), and transparency carried as data in the pixels — an alpha band, or a
palette whose entries have alpha — never in Pillow's ``info`` side channel (a
``tRNS`` colour key becomes alpha; a low-bit gray key is scaled as the
samples are). Alpha is dropped only when every pixel is opaque. Output frames
are Pillow images in mode L, LA, RGB or RGBA — or the palette/bilevel/gray
image when the caller keeps it for a lossless re-encode — and
``Decoded.exact`` says whether they still hold every source value.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageCms

from ..errors import DecodeError, TooLargeError
from . import boost, geometry
from .colour import icc_info, is_srgb, profile_must_stay, srgb_icc, to_srgb
from .pngfile import png_header
from .probe import Probe
from . import apnganim, gifanim, nclx
from .samples import Samples, needs_vips, round16, source_bits, to_8bit
from .samples import of as samples_of

__all__ = ["Decoded", "read_orientation", "decode", "srgb_icc", "estimate_jpeg_quality",
           "source_bits", "icc_info"]

_ORIENT_OPS = {
    2: (Image.Transpose.FLIP_LEFT_RIGHT,),
    3: (Image.Transpose.ROTATE_180,),
    4: (Image.Transpose.FLIP_TOP_BOTTOM,),
    5: (Image.Transpose.TRANSPOSE,),
    6: (Image.Transpose.ROTATE_270,),
    7: (Image.Transpose.TRANSVERSE,),
    8: (Image.Transpose.ROTATE_90,),
}

# IJG standard luminance quantisation table (any order: only its sum is used).
_STD_LUMA_SUM = sum(
    (16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69,
     56, 14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81,
     104, 113, 92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99)
)  # fmt: skip


@dataclass
class Decoded:
    """Upright, sRGB frames plus what the encoder needs to know about the source."""

    frames: list[Image.Image]
    durations: list | None = None  # ms per frame (exact Fractions after animation.apply_timing)
    loop: int | None = None  # total plays, 0 = forever (set by animation.apply_timing)
    orientation: int = 1
    exif: bytes | None = None
    icc_converted: bool = False
    icc_nonsrgb: bool = False
    #: The source's non-sRGB profile, when the frames keep its original values
    #: (the encoder must embed it).
    icc: bytes | None = None
    source_quality: int | None = None
    notes: list[str] = field(default_factory=list)
    #: Every source value survives in the frames (no depth reduction, no colour
    #: conversion): only then may a lossless encode of them report SSIM 1.
    exact: bool = True
    #: A metadata strip of the source must keep its profile: not sRGB by its
    #: contents, or unreadable (:func:`.colour.profile_must_stay`).
    icc_must_stay: bool = False
    #: After a JPEG DCT-scaled decode: the region (x0, y0, x1, y1) of the upright
    #: frame the whole source covers. The frame holds ceil(W / s) by ceil(H / s)
    #: pixels for W / s by H / s of the source: its last stored column and row
    #: stand for the remainder only (after the EXIF turn, maybe the first). The
    #: resize maps exactly this region onto the output (:func:`.geometry.apply`);
    #: ``None`` is the whole frame.
    box: tuple[float, float, float, float] | None = None

    @property
    def mode(self) -> str:
        return self.frames[0].mode

    @property
    def size(self) -> tuple[int, int]:
        return self.frames[0].size


def read_orientation(im: Image.Image | None) -> int:
    """EXIF orientation 1-8 from the header; anything invalid or unreadable is 1.

    ``None`` (HEIF and JPEG XL, whose decoders apply the orientation) is 1.
    """
    if im is None:
        return 1
    try:
        value = im.getexif().get(0x0112)
    except Exception:
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def estimate_jpeg_quality(im: Image.Image) -> int | None:
    """Estimate the IJG quality (1-100) a JPEG was saved at from its luma table."""
    try:
        tables = im.quantization  # type: ignore[attr-defined]
        luma = tables[0] if 0 in tables else next(iter(tables.values()))
    except Exception:
        return None
    total = sum(int(v) for v in luma)
    if total <= 64:
        return 100
    scale = 100.0 * total / _STD_LUMA_SUM
    quality = (200.0 - scale) / 2.0 if scale <= 100.0 else 5000.0 / scale
    return int(min(100, max(1, round(quality))))


def _vips_frame(data: bytes, notes: list[str]) -> tuple[Image.Image, bool] | None:
    """The first image of ``data`` through libvips, rounded to 8 bits, tRNS as alpha, as
    stored (not oriented); and whether the 8-bit values are exact. ``None`` without libvips."""
    vips = boost._module("vips")
    if vips is None:
        return None
    im = vips.Image.new_from_buffer(data, "", access="sequential", fail=True)
    arr = im.numpy().reshape(im.height, im.width, im.bands)
    exact = True
    if arr.dtype == np.uint16:
        exact = not bool((arr % 257).any())
        if not exact:
            notes.append("16-bit samples rounded to 8 bits (v * 255 / 65535)")
        arr = round16(arr)
    elif arr.dtype != np.uint8:
        return None
    if arr.shape[2] == 1:
        arr = arr[..., 0]
    return Image.fromarray(np.ascontiguousarray(arr)), exact


def _low_gray_key(key: int, pr: Probe) -> int:
    """A PNG gray ``tRNS`` key on the 0-255 scale Pillow gives 1/2/4-bit gray samples."""
    hdr = png_header(pr.data) if pr.format == "PNG" else None
    if hdr is not None and hdr.color_type == 0 and hdr.depth < 8:
        return key * 255 // ((1 << hdr.depth) - 1)
    return key


def _explicit_transparency(im: Image.Image, info: dict, pr: Probe) -> Image.Image:
    """Move Pillow's ``info["transparency"]`` into the pixels (palette alpha or an alpha band)."""
    key = info.get("transparency")
    if key is None:
        return im
    if im.mode == "P":
        pal = im.getpalette("RGB") or []
        n = max(len(pal) // 3, 1)
        alpha = [255] * n
        if isinstance(key, (bytes, bytearray)):
            for i, a in enumerate(key[:n]):
                alpha[i] = a
        elif isinstance(key, int) and 0 <= key < n:
            alpha[key] = 0
        out = im.copy()
        rgba = bytearray()
        for i in range(n):
            rgba += bytes(pal[3 * i : 3 * i + 3]) + bytes((alpha[i],))
        out.putpalette(bytes(rgba), rawmode="RGBA")
        out.info = {}
        return out
    if im.mode in ("1", "L") and isinstance(key, int):
        gray = im.convert("L")
        value = 255 if (im.mode == "1" and key) else _low_gray_key(key, pr)
        mask = np.asarray(gray) != value
        return Image.fromarray(np.dstack([np.asarray(gray), mask.astype(np.uint8) * 255]), "LA")
    if im.mode.startswith("I") and isinstance(key, int):
        arr = np.asarray(im)
        gray = round16(np.clip(arr, 0, 65535)) if int(arr.max(initial=0)) > 255 or im.mode.startswith(
            "I;16") else arr.astype(np.uint8)
        mask = (arr != key).astype(np.uint8) * 255
        return Image.fromarray(np.dstack([gray, mask]), "LA")
    if im.mode == "RGB" and isinstance(key, tuple) and len(key) == 3:
        arr = np.asarray(im)
        mask = ~(arr == np.array(key, dtype=np.int64)).all(axis=-1)
        return Image.fromarray(np.dstack([arr, mask.astype(np.uint8) * 255]), "RGBA")
    return im


def _to_working(im: Image.Image, smp: Samples, notes: list[str]) -> tuple[Image.Image, bool]:
    """Any decoded mode to L, LA, RGB or RGBA (no colour management); (image, values exact)."""
    mode = im.mode
    if mode in ("L", "LA", "RGB", "RGBA") and smp.kind == "uint":
        return im, True
    if mode == "CMYK":
        return im.convert("RGB"), False
    if mode == "LAB":
        lab = ImageCms.buildTransform(
            ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB"
        )
        return ImageCms.applyTransform(im, lab), False
    if mode in ("RGBX",):
        return im.convert("RGB"), False
    if mode == "RGBa":
        return im.convert("RGBA"), False
    if mode == "La":
        return im.convert("LA"), False
    if mode == "1":
        return im.convert("L"), True
    if mode in ("P", "PA"):
        return im.convert("RGBA" if im.has_transparency_data else "RGB"), True
    if mode.startswith("I") or mode == "F" or (mode == "L" and smp.kind == "int"):
        return to_8bit(im, smp, notes)
    if mode in ("LA", "RGB", "RGBA"):  # signed or float samples Pillow read as bytes
        notes.append(f"{smp.describe()} samples read as unsigned 8-bit by Pillow")
        return im, False
    return im.convert("RGB"), False  # YCbCr, HSV and anything else Pillow can convert


def _normalise(im: Image.Image, icc: bytes | None, smp: Samples,
               notes: list[str]) -> tuple[Image.Image, bool, bool]:
    """Return (image in L/LA/RGB/RGBA sRGB, whether an ICC conversion happened, values exact)."""
    converted = False
    exact = True
    if icc and not is_srgb(icc):
        if im.mode.startswith("I") or im.mode == "F":
            im, exact = to_8bit(im, smp, notes)
        im, converted = to_srgb(im, icc, notes)
    elif icc:
        try:
            icc_info(icc)
        except Exception:
            notes.append("embedded ICC profile is unreadable; ignored")
    im, same = _to_working(im, smp, notes)
    return im, converted, exact and same and not converted


def _drop_opaque_alpha(frames: list[Image.Image]) -> list[Image.Image]:
    mode = frames[0].mode
    if mode not in ("RGBA", "LA"):
        return frames
    for f in frames:
        if f.mode != mode or f.getchannel("A").getextrema()[0] != 255:
            return frames
    target = "RGB" if mode == "RGBA" else "L"
    return [f.convert(target) for f in frames]


def _orient(im: Image.Image, orientation: int) -> Image.Image:
    for op in _ORIENT_OPS.get(orientation, ()):
        im = im.transpose(op)
    return im


def _avif_nclx_profile(data: bytes, notes: list[str]) -> bytes | None:
    """An AVIF without an ICC profile: its nclx colour as a profile (Display P3 from a phone,
    BT.2020...), so it is converted to sRGB as a colour-managed viewer shows it; ``None``
    for sRGB, or with a note for what is not converted (HDR transfers)."""
    code = nclx.avif_nclx(data)
    if code is None:
        return None
    prof = nclx.profile(*code)
    if prof is None and (code[0] not in (1, 2) or code[1] in nclx.HDR_TRANSFERS):
        notes.append(f"AVIF colour ({nclx.describe(*code)}) not converted: shown as sRGB")
    return prof


def _own_decode(pr: Probe, notes: list[str], path: str | None) -> Image.Image:
    """HEIF / JPEG XL through their own modules: one upright, loaded image."""
    from . import heif, jxl

    codec = heif if pr.format == "HEIF" else jxl
    im, more = codec.decode(pr.data, pr.header, path=path)  # type: ignore[attr-defined]
    notes.extend(more)
    return im


def decode(
    pr: Probe,
    *,
    all_frames: bool,
    draft_size: tuple[int, int] | None,
    keep_palette: bool,
    keep_exif: bool,
    keep_icc: bool = False,
    path: str | None = None,
) -> Decoded:
    """Decode ``pr`` into upright sRGB working frames.

    Parameters
    ----------
    all_frames:
        Decode every frame of an animation (otherwise the first only).
    draft_size:
        The (width, height), in stored orientation, the frames will be resized
        to; a JPEG decodes at the largest DCT scale (1/2, 1/4, 1/8) that keeps
        at least :data:`.geometry.DCT_SHRINK_MARGIN` times it in both
        dimensions (:func:`.geometry.dct_scale`), so that the final filter,
        not the DCT's block average, shapes the output. ``Decoded.span`` then
        holds the source's exact region in the upright frame's pixels.
    keep_palette:
        Return palette/bilevel/gray frames unconverted (lossless re-encode of
        an image whose pixels do not change).
    keep_exif:
        Collect the EXIF block (orientation removed) for re-embedding.
    keep_icc:
        Keep a non-sRGB profile with the original values (``Decoded.icc``)
        instead of converting to sRGB: for a lossless output of the same
        format whose pixels do not change.
    """
    notes: list[str] = []
    im = pr.image if pr.image is not None else _own_decode(pr, notes, path)
    orientation = read_orientation(im)
    icc = im.info.get("icc_profile") or None
    if icc is None and pr.format == "AVIF":
        icc = _avif_nclx_profile(pr.data, notes)
    out = Decoded(frames=[], orientation=orientation, notes=notes)
    if pr.format == "JPEG":
        out.source_quality = estimate_jpeg_quality(im)
    if keep_exif:
        try:
            exif = im.getexif()
            exif.pop(0x0112, None)
            out.exif = exif.tobytes() if len(exif) else None
        except Exception:
            notes.append("EXIF block is unreadable; dropped")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if pr.format == "JPEG" and draft_size is not None and im.mode in ("RGB", "L", "CMYK"):
                out.box = geometry.shrink_on_load(im, draft_size)
            raw: list[Image.Image] = []
            durations: list = []
            count = pr.frames if all_frames else 1
            vips16 = count == 1 and needs_vips(pr)
            deep = _vips_frame(pr.data, notes) if vips16 else None
            if vips16 and deep is None:
                notes.append("16-bit samples truncated to 8 bits by Pillow (pyvips unavailable)")
                out.exact = False
            elif deep is not None:
                out.exact = deep[1]
            if count > 1 and pr.format == "GIF":
                # composited as browsers do (Pillow shows disposal 2 with a transparent index
                # wrong); timing comes from the container (animation.apply_timing)
                raw = gifanim.composite(pr.data, count)
            elif count > 1 and pr.format == "PNG":
                # APNG: Pillow's "over" blend treats alpha as a colour (apnganim)
                raw = apnganim.composite(pr.data)
            for index in range(0 if raw else count):
                if index:
                    im.seek(index)
                im.load()
                frame = im
                if deep is not None:
                    frame = deep[0]
                elif count > 1:
                    frame = im.convert("RGBA")
                    # the decoder's own value: only a fallback for animation.apply_timing
                    durations.append(im.info.get("duration") or 0)
                else:
                    frame = _explicit_transparency(im, im.info, pr)
                raw.append(frame)
            if durations:
                out.durations = durations
        for w in caught:
            notes.append(f"decoder warning: {w.message}")
    except MemoryError:
        raise TooLargeError("not enough memory to decode", path=path, stage="decode") from None
    except Image.DecompressionBombError as exc:
        raise TooLargeError(str(exc), path=path, stage="decode") from None
    except Exception as exc:
        kind = "truncated" if "truncated" in str(exc).lower() else "corrupt"
        raise DecodeError(
            f"{kind} {pr.format} data: {exc}", path=path, stage="decode"
        ) from None

    out.icc_nonsrgb = bool(icc) and not is_srgb(icc)
    out.icc_must_stay = profile_must_stay(icc)
    keep_values = keep_icc and out.icc_nonsrgb
    if keep_values:
        out.icc = icc
    smp = samples_of(pr)
    # Pillow's TIFF reader turns the pixels upright itself (its size is as shown); libvips
    # and the other readers give them as stored
    turn = 1 if pr.format == "TIFF" and deep is None else orientation
    frames: list[Image.Image] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for frame in raw:
            if keep_palette and frame.mode in ("P", "1", "L") and (keep_values or not out.icc_nonsrgb) \
                    and smp.kind == "uint":
                norm, same = frame, True
            elif keep_values:
                norm, same = _to_working(frame, smp, notes)
            else:
                norm, conv, same = _normalise(frame, icc, smp, notes)
                out.icc_converted |= conv
            out.exact &= same
            frames.append(_orient(norm, turn))
    for w in caught:
        notes.append(f"conversion warning: {w.message}")
    for f in frames:
        f.info = {}
    if out.box is not None:
        out.box = geometry.turn_box(out.box, raw[0].size, turn)
    out.frames = _drop_opaque_alpha(frames)
    return out
