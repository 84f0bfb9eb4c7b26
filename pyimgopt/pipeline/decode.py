"""Decode and normalise: from a probed input to upright sRGB working frames.

Owns decoding (with JPEG DCT shrink-on-load through Pillow's ``draft``),
animation frames and their timing, EXIF auto-orientation (invalid values mean
no rotation), conversion of embedded ICC profiles to sRGB through LittleCMS,
CMYK/Lab/16-bit/float to 8-bit RGB or L without clipping, and alpha (kept,
or dropped when every pixel is opaque). Output frames are Pillow images in
mode L, LA, RGB or RGBA — or the untouched palette/bilevel image when the
caller asks to keep it for a lossless re-encode.
"""

from __future__ import annotations

import functools
import io
import warnings
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageCms

from ..errors import DecodeError, TooLargeError
from .probe import Probe

__all__ = ["Decoded", "read_orientation", "decode", "srgb_icc", "estimate_jpeg_quality"]

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
    durations: list[int] | None = None
    loop: int | None = None
    orientation: int = 1
    exif: bytes | None = None
    icc_converted: bool = False
    icc_nonsrgb: bool = False
    source_quality: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def mode(self) -> str:
        return self.frames[0].mode

    @property
    def size(self) -> tuple[int, int]:
        return self.frames[0].size


def read_orientation(im: Image.Image) -> int:
    """EXIF orientation 1-8 from the header; anything invalid or unreadable is 1."""
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


@functools.lru_cache(maxsize=32)
def _icc_info(icc: bytes) -> tuple[str, bool]:
    """(colour space, is sRGB) of an ICC profile; raises on a broken profile."""
    prof = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    space = (prof.profile.xcolor_space or "").strip().upper()
    desc = (ImageCms.getProfileDescription(prof) or "").lower()
    return space, ("srgb" in desc or "srgb" in (ImageCms.getProfileName(prof) or "").lower())


def _to_8bit_gray(im: Image.Image) -> Image.Image:
    arr = np.asarray(im)
    if im.mode == "F":
        arr = arr.astype(np.float64)
        peak = float(np.nanmax(arr)) if arr.size else 1.0
        arr = np.nan_to_num(arr) * (255.0 if peak <= 1.0 else 1.0)
        return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8))
    arr = arr.astype(np.int64)
    if im.mode.startswith("I;16") or int(arr.max(initial=0)) > 255:
        # 16-bit to 8-bit by scaling (x * 255 / 65535, rounded), never by clipping.
        arr = (np.clip(arr, 0, 65535) * 255 + 32767) // 65535
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _normalise(im: Image.Image, icc: bytes | None, notes: list[str]) -> tuple[Image.Image, bool]:
    """Return (image in L/LA/RGB/RGBA sRGB, whether an ICC conversion happened)."""
    mode = im.mode
    space, is_srgb = None, True
    if icc:
        try:
            space, is_srgb = _icc_info(icc)
        except Exception:
            notes.append("embedded ICC profile is unreadable; ignored")
            icc = None
    converted = False
    if mode in ("RGB", "RGBA", "RGBX", "RGBa") and icc and space == "RGB" and not is_srgb:
        base = im.convert("RGB")
        alpha = im.getchannel("A") if mode in ("RGBA", "RGBa") else None
        if mode == "RGBa":
            alpha = im.convert("RGBA").getchannel("A")
            base = im.convert("RGBA").convert("RGB")
        try:
            base = ImageCms.applyTransform(base, _transform(icc, "RGB", "RGB"))
            converted = True
        except Exception as exc:
            notes.append(f"ICC conversion failed ({exc}); colours left as stored")
        if alpha is not None:
            base.putalpha(alpha)
        return base, converted
    if mode == "CMYK":
        if icc and space == "CMYK":
            try:
                return ImageCms.applyTransform(im, _transform(icc, "CMYK", "RGB")), True
            except Exception as exc:
                notes.append(f"CMYK ICC conversion failed ({exc}); naive CMYK->RGB used")
        return im.convert("RGB"), False
    if mode == "LAB":
        lab = ImageCms.buildTransform(
            ImageCms.createProfile("LAB"), _srgb_profile(), "LAB", "RGB"
        )
        return ImageCms.applyTransform(im, lab), True
    if mode in ("L", "LA", "RGB", "RGBA"):
        return im, False
    if mode == "RGBX":
        return im.convert("RGB"), False
    if mode == "RGBa":
        return im.convert("RGBA"), False
    if mode == "La":
        return im.convert("LA"), False
    if mode == "1":
        return im.convert("L"), False
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in im.info
        if not has_alpha and im.palette is not None and im.palette.mode == "RGBA":
            has_alpha = True
        return im.convert("RGBA" if has_alpha else "RGB"), False
    if mode.startswith("I") or mode == "F":
        return _to_8bit_gray(im), False
    return im.convert("RGB"), False  # YCbCr, HSV and anything else Pillow can convert


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


def decode(
    pr: Probe,
    *,
    all_frames: bool,
    draft_size: tuple[int, int] | None,
    keep_palette: bool,
    keep_exif: bool,
    path: str | None = None,
) -> Decoded:
    """Decode ``pr`` into upright sRGB working frames.

    Parameters
    ----------
    all_frames:
        Decode every frame of an animation (otherwise the first only).
    draft_size:
        Smallest (width, height), in stored orientation, the decoder must keep;
        JPEG decodes at the largest DCT scale (1/2, 1/4, 1/8) that stays at or
        above it.
    keep_palette:
        Return palette/bilevel/gray frames unconverted (lossless re-encode of
        an image whose pixels do not change).
    keep_exif:
        Collect the EXIF block (orientation removed) for re-embedding.
    """
    im = pr.image
    notes: list[str] = []
    orientation = read_orientation(im)
    icc = im.info.get("icc_profile") or None
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
                im.draft(im.mode, draft_size)
            raw: list[Image.Image] = []
            durations: list[int] = []
            count = pr.frames if all_frames else 1
            for index in range(count):
                if index:
                    im.seek(index)
                im.load()
                frame = im
                if count > 1:
                    frame = im.convert("RGBA")
                    durations.append(int(im.info.get("duration") or 100))
                raw.append(frame)
            if count > 1:
                out.durations = durations
                out.loop = int(im.info.get("loop", 0) or 0)
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

    if icc:
        try:
            out.icc_nonsrgb = not _icc_info(icc)[1]
        except Exception:
            out.icc_nonsrgb = False
    frames: list[Image.Image] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for frame in raw:
            if keep_palette and frame.mode in ("P", "1", "L") and not out.icc_nonsrgb:
                norm = frame
            else:
                norm, conv = _normalise(frame, icc, notes)
                out.icc_converted |= conv
            frames.append(_orient(norm, orientation))
    for w in caught:
        notes.append(f"conversion warning: {w.message}")
    for f in frames:
        f.info = {}
    out.frames = _drop_opaque_alpha(frames)
    return out
