"""HEIC/HEIF and JPEG XL inputs for the matrix, made by other encoders than pyimgopt's.

HEIF files come from pillow-heif's encoder (x265: 8-bit, 10/12-bit, alpha,
an ``irot`` orientation with EXIF GPS and camera tags, a Display P3 profile,
an odd size that needs a ``clap`` crop); JPEG XL files from Debian's ``cjxl``
0.7 (libjxl-tools: a different libjxl than the plugin pyimgopt reads with):
lossless RGB, alpha, gray and 16-bit, lossy RGB and alpha, a codestream
orientation with EXIF, Display P3 lossless and lossy, 1x1, and a JPEG
recompressed with its reconstruction data. Each generator returns nothing
when its encoder is missing; :data:`MISSING` says why, so the matrix can skip
with the reason. Nothing here calls pyimgopt.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile

import numpy as np
from PIL import Image

from . import icc as icclib
from .inputs import Case, _stored_for, alpha_pattern, content, exif_block, patches, to_rgba
from .png import iccp_chunk, write_png

__all__ = ["heif_cases", "jxl_cases", "CJXL", "MISSING"]

CJXL = shutil.which("cjxl")
#: Why a format's cases are left out (format -> reason), filled by the generators.
MISSING: dict[str, str] = {}


def _pillow_heif():
    try:
        import pillow_heif
    except ImportError:
        return None
    return pillow_heif


def _heic(arr: np.ndarray, *, bits: int = 8, quality: int = 90, exif: bytes | None = None,
          icc: bytes | None = None) -> bytes:
    """One HEIC image from pillow-heif: ``arr`` uint8 (8-bit) or uint16 (written at ``bits``)."""
    ph = _pillow_heif()
    mode = {3: "RGB", 4: "RGBA"}[arr.shape[2]]
    if bits > 8:
        hf = ph.from_bytes(mode + ";16", (arr.shape[1], arr.shape[0]), arr.astype("<u2").tobytes())
    else:
        hf = ph.from_pillow(Image.fromarray(arr, mode))
    kw: dict = {"quality": quality}
    if exif:
        kw["exif"] = exif
    if icc:
        kw["icc_profile"] = icc
    ph.options.SAVE_HDR_TO_12_BIT = bits == 12
    try:
        buf = io.BytesIO()
        hf.save(buf, **kw)
    finally:
        ph.options.SAVE_HDR_TO_12_BIT = False
    return buf.getvalue()


def heif_cases() -> list:
    """HEIC inputs (lossy by nature: no ground truth; the oracle is heif-convert)."""
    if _pillow_heif() is None:
        MISSING["heif"] = "pillow-heif is not installed (it writes the HEIC inputs)"
        return []
    w, h = 48, 40
    rgb = content(w, h, seed=17)
    a01 = alpha_pattern(w, h, "partial")
    u8 = np.round(rgb * 255).astype(np.uint8)
    rgba8 = np.round(np.dstack([rgb, a01]) * 255).astype(np.uint8)
    u16 = np.round(rgb * 65535).astype(np.uint16)
    rgba16 = np.round(np.dstack([rgb, a01]) * 65535).astype(np.uint16)
    out = [
        Case("heif-8-rgb", "heif", _heic(u8), (w, h), lossy=True),
        Case("heif-8-alpha", "heif", _heic(rgba8), (w, h), lossy=True, alpha=True),
        Case("heif-10-rgb", "heif", _heic(u16, bits=10), (w, h), lossy=True, bits=16,
              tags=frozenset({"deep"})),
        Case("heif-12-alpha", "heif", _heic(rgba16, bits=12), (w, h), lossy=True, bits=16,
              alpha=True, tags=frozenset({"deep"})),
    ]
    # EXIF orientation 6: pillow-heif stores the pixels turned and writes ``irot``
    # (the normative transform); the EXIF tag stays, and must not turn the image again.
    out.append(Case("heif-irot-exif6-gps", "heif",
                     _heic(_stored_for(u8, 6),
                           exif=exif_block(orientation=6, gps=True, make="CameraMaker")),
                     (w, h), lossy=True, orientation=6, tags=frozenset({"orient", "gps"})))
    pw, ph = 96, 72
    pu8 = np.round(patches(pw, ph) * 255).astype(np.uint8)
    out.append(Case("heif-icc-p3", "heif", _heic(pu8, quality=95,
                                                  icc=icclib.profile("display-p3")),
                     (pw, ph), lossy=True, icc="display-p3", patches=True,
                     tags=frozenset({"icc", "wide"})))
    odd = np.round(content(13, 7, seed=19) * 255).astype(np.uint8)
    out.append(Case("heif-13x7", "heif", _heic(odd), (13, 7), lossy=True))
    return out


def _cjxl(png: bytes, *args: str) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "in.png"), os.path.join(tmp, "out.jxl")
        if png[:3] == b"\xff\xd8\xff":
            src = os.path.join(tmp, "in.jpg")
        with open(src, "wb") as f:
            f.write(png)
        subprocess.run([CJXL, "--quiet", "-e", "3", *args, src, dst], check=True,
                       capture_output=True, timeout=60)
        with open(dst, "rb") as f:
            return f.read()


def _with_exif_box(jxl: bytes, exif: bytes) -> bytes:
    """A JPEG XL container with an ``Exif`` box put before its codestream.

    cjxl 0.7 writes a container for a PNG's EXIF but leaves the box out; a
    camera pipeline would carry it, so it is added here (offset 0, then TIFF).
    """
    assert jxl[4:8] == b"JXL ", "expected a JPEG XL container"
    tiff = exif[6:] if exif.startswith(b"Exif\0\0") else exif
    box = (12 + len(tiff)).to_bytes(4, "big") + b"Exif" + bytes(4) + tiff
    at = jxl.find(b"jxlc") - 4
    return jxl[:at] + box + jxl[at:]


def _png(arr: np.ndarray, **params) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG", **params)
    return buf.getvalue()


def jxl_cases() -> list:
    """JPEG XL inputs from Debian's cjxl (lossless ones carry their ground truth)."""
    if CJXL is None:
        MISSING["jxl"] = "cjxl not found (apt-get install libjxl-tools): JPEG XL inputs left out"
        return []
    w, h = 48, 40
    rgb = content(w, h, seed=23)
    a01 = alpha_pattern(w, h, "partial")
    u8 = np.round(rgb * 255).astype(np.uint8)
    a8 = np.round(a01 * 255).astype(np.uint8)
    rgba8 = np.dstack([u8, a8])
    g8 = np.round((rgb @ [0.299, 0.587, 0.114]) * 255).astype(np.uint8)
    u16 = np.round(rgb * 65535).astype(np.uint16)
    lossless = ("-d", "0")
    out = [
        Case("jxl-lossless-rgb", "jxl", _cjxl(_png(u8), *lossless), (w, h),
              truth=to_rgba(u8 / 255.0)),
        Case("jxl-lossless-alpha", "jxl", _cjxl(_png(rgba8), *lossless), (w, h),
              truth=rgba8.astype(float), alpha=True),
        Case("jxl-lossless-gray", "jxl", _cjxl(_png(g8), *lossless), (w, h),
              truth=to_rgba(np.repeat(g8[..., None] / 255.0, 3, axis=-1))),
        Case("jxl-lossless-16", "jxl", _cjxl(write_png(u16, 2, 16), *lossless), (w, h),
              truth=to_rgba(u16 / 65535.0), bits=16, tags=frozenset({"16bit"})),
        Case("jxl-lossless-1x1", "jxl", _cjxl(_png(u8[:1, :1]), *lossless), (1, 1),
              truth=to_rgba(u8[:1, :1] / 255.0)),
        Case("jxl-lossy-rgb", "jxl", _cjxl(_png(u8), "-d", "1"), (w, h), lossy=True),
        Case("jxl-lossy-alpha", "jxl", _cjxl(_png(rgba8), "-d", "1"), (w, h), lossy=True,
              alpha=True),
    ]
    # cjxl moves the PNG's EXIF orientation into the codestream
    stored = _stored_for(u8, 6)
    exif = exif_block(orientation=6, gps=True, make="CameraMaker")
    data = _with_exif_box(_cjxl(_png(stored, exif=exif), *lossless), exif)
    out.append(Case("jxl-orient6-gps", "jxl", data,
                     (w, h), truth=to_rgba(u8 / 255.0), orientation=6,
                     tags=frozenset({"orient", "gps"})))
    pw, ph = 96, 72
    pu8 = np.round(patches(pw, ph) * 255).astype(np.uint8)
    p3png = write_png(pu8, 2, 8, before_plte=[iccp_chunk("p3", icclib.profile("display-p3"))])
    out.append(Case("jxl-icc-p3-lossless", "jxl", _cjxl(p3png, *lossless), (pw, ph),
                     truth=to_rgba(pu8 / 255.0), icc="display-p3", patches=True,
                     tags=frozenset({"icc", "wide"})))
    out.append(Case("jxl-icc-p3-lossy", "jxl", _cjxl(p3png, "-d", "1"), (pw, ph), lossy=True,
                     icc="display-p3", patches=True, tags=frozenset({"icc", "wide"})))
    # a JPEG (EXIF orientation 8) recompressed losslessly: the file rebuilds that JPEG
    jpeg = io.BytesIO()
    Image.fromarray(_stored_for(u8, 8)).save(jpeg, "JPEG", quality=90,
                                             exif=exif_block(orientation=8))
    out.append(Case("jxl-from-jpeg-orient8", "jxl",
                    _cjxl(jpeg.getvalue(), "--brotli_effort=0"), (w, h), lossy=True,
                     orientation=8, tags=frozenset({"orient", "jbrd"})))
    return out
