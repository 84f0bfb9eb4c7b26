"""Colour: what an embedded ICC profile means, and turning pixels into sRGB.

Owns the one decision "is this profile sRGB?" — made from the profile's
contents, not its name: LittleCMS converts a grid of colours through the
profile into sRGB, and a profile is sRGB when that changes no colour by more
than :data:`SRGB_TOLERANCE` levels (so primaries, white point and tone curve
all count; "Linear sRGB" or "sRGB-elle-V2-g10" are *not* sRGB, a calibrated
sRGB profile with another name is). Also owns the conversion of any decoded
mode (RGB, RGBA, palette, gray, gray+alpha, CMYK, Lab) to sRGB through
LittleCMS, relative colorimetric, alpha kept untouched.
"""

from __future__ import annotations

import functools
import io

import numpy as np
from PIL import Image, ImageCms

__all__ = ["srgb_icc", "icc_info", "is_srgb", "profile_must_stay", "to_srgb", "SRGB_TOLERANCE"]

#: Largest change (8-bit levels, any channel, any grid colour) a profile may
#: make on the way to sRGB and still count as sRGB: LittleCMS rounding between
#: equivalent v2/v4 encodings is 1; a gamma-2.2 curve in place of sRGB's is 6.
SRGB_TOLERANCE = 2


@functools.lru_cache(maxsize=1)
def srgb_icc() -> bytes:
    """Bytes of the sRGB profile pyimgopt embeds when metadata is kept."""
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@functools.lru_cache(maxsize=1)
def _srgb_profile() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


@functools.lru_cache(maxsize=32)
def _transform(icc: bytes, in_mode: str, out_mode: str):
    src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    return ImageCms.buildTransform(
        src, _srgb_profile(), in_mode, out_mode, ImageCms.Intent.RELATIVE_COLORIMETRIC
    )


@functools.lru_cache(maxsize=1)
def _grid() -> Image.Image:
    steps = np.arange(0, 256, 17, dtype=np.uint8)  # 16 levels per channel, 0 and 255 included
    r, g, b = np.meshgrid(steps, steps, steps, indexing="ij")
    return Image.fromarray(np.stack([r, g, b], axis=-1).reshape(64, 64, 3), "RGB")


@functools.lru_cache(maxsize=32)
def icc_info(icc: bytes) -> tuple[str, bool]:
    """(colour space, is sRGB by contents) of an ICC profile; raises on a broken profile.

    The space is the header's (``RGB``, ``GRAY``, ``CMYK``, ...). Only an RGB
    or gray profile can be sRGB: a gray profile is when its tone curve is
    sRGB's (gray levels come out as the same sRGB gray).
    """
    prof = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    space = (prof.profile.xcolor_space or "").strip().upper()
    if space == "RGB":
        grid = _grid()
        out = ImageCms.applyTransform(grid, _transform(icc, "RGB", "RGB"))
        diff = np.abs(np.asarray(out, np.int16) - np.asarray(grid, np.int16))
        return space, int(diff.max()) <= SRGB_TOLERANCE
    if space == "GRAY":
        ramp = Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16), "L")
        out = np.asarray(ImageCms.applyTransform(ramp, _transform(icc, "L", "RGB")), np.int16)
        diff = np.abs(out - np.asarray(ramp, np.int16)[..., None])
        return space, int(diff.max()) <= SRGB_TOLERANCE
    return space, False


def is_srgb(icc: bytes | None) -> bool:
    """True for no profile, an unreadable one (ignored), or one whose contents are sRGB."""
    if not icc:
        return True
    try:
        return icc_info(icc)[1]
    except Exception:
        return True


def profile_must_stay(icc: bytes | None) -> bool:
    """Whether a metadata strip must keep ``icc``: a profile that is not sRGB by its
    contents, or one that cannot be read (kept rather than change colours)."""
    if not icc:
        return False
    try:
        return not icc_info(icc)[1]
    except Exception:
        return True


def _split_alpha(im: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    if im.mode in ("RGBA", "LA"):
        return im.convert(im.mode[:-1]), im.getchannel("A")
    if im.mode in ("RGBa", "La", "PA") or (im.mode == "P" and im.has_transparency_data):
        rgba = im.convert("RGBA")
        return rgba.convert("RGB"), rgba.getchannel("A")
    return im, None


def to_srgb(im: Image.Image, icc: bytes, notes: list[str]) -> tuple[Image.Image, bool]:
    """``im`` (any mode) converted from profile ``icc`` to sRGB; (image, whether converted).

    RGB profiles convert RGB and palette images; gray profiles convert gray
    (and palette) images into sRGB RGB (a neutral result stays neutral, and
    the PNG encoder turns it back into gray losslessly); CMYK profiles convert
    CMYK. A profile that does not fit the pixels, or that LittleCMS refuses,
    leaves the colours as stored, with a note. Alpha is carried unchanged.
    """
    try:
        space, srgb = icc_info(icc)
    except Exception:
        notes.append("embedded ICC profile is unreadable; ignored")
        return im, False
    if srgb:
        return im, False
    if space == "CMYK":
        if im.mode != "CMYK":
            notes.append(f"CMYK ICC profile on a {im.mode} image; ignored")
            return im, False
        try:
            return ImageCms.applyTransform(im, _transform(icc, "CMYK", "RGB")), True
        except Exception as exc:
            notes.append(f"CMYK ICC conversion failed ({exc}); naive CMYK->RGB used")
            return im.convert("RGB"), False
    if space not in ("RGB", "GRAY"):
        notes.append(f"{space or 'unknown'} ICC profile not supported; colours left as stored")
        return im, False
    base, alpha = _split_alpha(im)
    gray_in = space == "GRAY"
    if gray_in and base.mode not in ("L",):
        if base.mode in ("1", "P") or base.mode.startswith("I") or base.mode == "F":
            base = base.convert("L")
        if base.mode != "L":
            notes.append(f"gray ICC profile on a {im.mode} image; ignored")
            return im, False
    if not gray_in and base.mode != "RGB":
        if base.mode in ("L", "1", "I;16", "I"):
            notes.append(f"RGB ICC profile on a {im.mode} image; ignored")
            return im, False
        base = base.convert("RGB")
    try:
        out = ImageCms.applyTransform(base, _transform(icc, "L" if gray_in else "RGB", "RGB"))
    except Exception as exc:
        notes.append(f"ICC conversion failed ({exc}); colours left as stored")
        return im, False
    if alpha is not None:
        out.putalpha(alpha)
    return out, True
