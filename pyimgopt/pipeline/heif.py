"""HEIC/HEIF input: the ISOBMFF header walk, the limits, and decoding one image.

Owns what pyimgopt does with HEIF files through the optional ``pillow-heif``
wheel (libheif with libde265), reached lazily through :mod:`.boost`
(``PYIMGOPT_DISABLE=heif`` turns it off):

- :func:`parse_header` walks the ``meta`` box itself — ``pitm``, ``iinf``,
  ``iref``, ``ipco``/``ipma`` — before libheif sees the file: the item count
  is capped (:data:`MAX_ITEMS`), and the displayed images (not thumbnails,
  depth or other auxiliary images, not hidden grid tiles) are listed with
  their ``ispe`` sizes, so ``max_pixels`` holds before any decode.
- :func:`decode` decodes one image — the primary (what every viewer shows),
  or the first in file order when ``first_frame`` is asked — with libheif's
  transformations (``irot``/``imir``/``clap``: the normative orientation)
  applied, thumbnails, depth and auxiliary images never decoded, 10/12-bit
  samples rounded to 8 bits here (``v * 255 / (2**bits - 1)``), alpha kept,
  and the ICC profile and EXIF (orientation removed: it was applied)
  carried in ``info``.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from ..errors import DecodeError, TooLargeError, UnsupportedFormatError
from ..formats import HEIF_BRANDS, is_heif_brand  # noqa: F401  (re-exported)
from . import boost, nclx

__all__ = ["HeifHeader", "parse_header", "decode", "available", "require", "MAX_ITEMS",
           "is_heif_brand"]

#: Most items a HEIF file may declare: libheif's own security limit (1.23),
#: checked here first so the answer is ``too_large`` before libheif parses the
#: file. A 48 MP phone photo has about 200 (512x512 grid tiles, thumbnails,
#: depth, EXIF).
MAX_ITEMS = 1000
#: Item types that are coded images (anything else — Exif, mime, hvt1... — is data).
_IMAGE_TYPES = {b"hvc1", b"av01", b"grid", b"iden", b"iovl", b"jpeg", b"unci", b"j2k1",
                b"vvc1", b"avc1", b"tili"}
def available() -> bool:
    """Whether ``pillow-heif`` is installed and not disabled."""
    return boost.available("heif")


def require(stage: str, path: str | None = None):
    """The ``pillow_heif`` module, or ``unsupported_format`` naming the wheel to install."""
    mod = boost._module("heif")
    if mod is None:
        raise UnsupportedFormatError(
            "HEIC/HEIF needs the optional package pillow-heif (pip install pillow-heif), "
            "which is missing or disabled (PYIMGOPT_DISABLE)", path=path, stage=stage)
    # Never decode what is not shown: thumbnails, depth maps, auxiliary images.
    mod.options.THUMBNAILS = False
    mod.options.DEPTH_IMAGES = False
    mod.options.AUX_IMAGES = False
    threads = os.environ.get("PYIMGOPT_CODEC_THREADS", "")
    if threads.isdigit():
        mod.options.DECODE_THREADS = max(1, int(threads))
    return mod


@dataclass
class HeifHeader:
    """What the ``meta`` box says. ``images``: (item id, width, height) of each shown image."""

    items: int
    primary: int
    images: list[tuple[int, int, int]] = field(default_factory=list)
    #: Set by the probe from the settings: which image to decode, and the pixel limit.
    first_frame: bool = False
    max_pixels: int = 100_000_000
    #: Bits per sample of the chosen image (libheif's header, set by :func:`displayed_size`).
    bits: int = 8

    def chosen(self, first_frame: bool) -> tuple[int, int, int]:
        """The image pyimgopt decodes: the primary, or the first shown one with ``first_frame``."""
        if first_frame and self.images:
            return self.images[0]
        for image in self.images:
            if image[0] == self.primary:
                return image
        raise ValueError(f"the primary item {self.primary} is not a displayable image")


def _boxes(data: bytes, start: int, end: int):
    pos = start
    while pos + 8 <= end:
        size = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        head = 8
        if size == 1:
            if pos + 16 > end:
                raise ValueError("box header cut short")
            size, head = int.from_bytes(data[pos + 8:pos + 16], "big"), 16
        elif size == 0:
            size = end - pos
        if size < head or pos + size > end:
            raise ValueError(f"box {kind.decode('latin-1')!r} runs past its parent")
        yield kind, pos + head, pos + size
        pos += size


def _u(data: bytes, pos: int, n: int, end: int) -> int:
    if pos + n > end:
        raise ValueError("box cut short")
    return int.from_bytes(data[pos:pos + n], "big")


def _child(data: bytes, start: int, end: int, kind: bytes) -> tuple[int, int] | None:
    for k, s, e in _boxes(data, start, end):
        if k == kind:
            return s, e
    return None


def parse_header(data: bytes) -> HeifHeader:
    """Walk a HEIF file's ``meta`` box: item count, primary item, shown images and sizes.

    Raises
    ------
    ValueError
        A malformed or truncated box structure, no ``meta`` box, no primary item.
    TooLargeError
        More than :data:`MAX_ITEMS` items (checked before they are read).
    """
    meta = _child(data, 0, len(data), b"meta")
    if meta is None:
        raise ValueError("no 'meta' box (an image sequence without a still image, or truncated)")
    start, end = meta[0] + 4, meta[1]  # FullBox: version and flags
    primary = None
    types: dict[int, bytes] = {}
    hidden: set[int] = set()
    not_shown: set[int] = set()
    props: list[tuple[bytes, int, int]] = []
    assoc: dict[int, list[int]] = {}
    items = 0
    for kind, s, e in _boxes(data, start, end):
        if kind == b"pitm":
            primary = _u(data, s + 4, 2 if data[s] == 0 else 4, e)
        elif kind == b"iinf":
            wide = data[s] != 0
            items = _u(data, s + 4, 4 if wide else 2, e)
            if items > MAX_ITEMS:
                raise TooLargeError(f"{items:,} items in the HEIF file is over the limit of "
                                    f"{MAX_ITEMS:,}", stage="probe")
            seen = 0
            for k, s2, e2 in _boxes(data, s + 4 + (4 if wide else 2), e):
                if k != b"infe":
                    continue
                seen += 1
                if seen > MAX_ITEMS:
                    raise TooLargeError(f"more than {MAX_ITEMS:,} items in the HEIF file",
                                        stage="probe")
                version, flags = data[s2], _u(data, s2 + 1, 3, e2)
                if version < 2:
                    continue
                idw = 2 if version == 2 else 4
                item = _u(data, s2 + 4, idw, e2)
                types[item] = data[s2 + 4 + idw + 2:s2 + 4 + idw + 6]
                if flags & 1:
                    hidden.add(item)
            items = max(items, seen)
        elif kind == b"iref":
            idw = 2 if data[s] == 0 else 4
            for k, s2, e2 in _boxes(data, s + 4, e):
                if k in (b"thmb", b"auxl", b"dimg", b"base"):
                    source = _u(data, s2, idw, e2)
                    if k in (b"thmb", b"auxl"):  # a thumbnail / depth / alpha of another image
                        not_shown.add(source)
                    else:  # grid tiles and overlay inputs are parts of another image
                        count = _u(data, s2 + idw, 2, e2)
                        for i in range(count):
                            not_shown.add(_u(data, s2 + idw + 2 + i * idw, idw, e2))
        elif kind == b"iprp":
            ipco = _child(data, s, e, b"ipco")
            if ipco is not None:
                props = list(_boxes(data, *ipco))
            for k, s2, e2 in _boxes(data, s, e):
                if k != b"ipma":
                    continue
                version, flags = data[s2], _u(data, s2 + 1, 3, e2)
                pos = s2 + 4
                count = _u(data, pos, 4, e2)
                pos += 4
                if count > MAX_ITEMS:
                    raise TooLargeError(f"{count:,} property associations is over the limit",
                                        stage="probe")
                for _ in range(count):
                    idw = 2 if version < 1 else 4
                    item = _u(data, pos, idw, e2)
                    n = _u(data, pos + idw, 1, e2)
                    pos += idw + 1
                    width = 2 if flags & 1 else 1
                    mask = 0x7FFF if width == 2 else 0x7F
                    assoc[item] = [_u(data, pos + i * width, width, e2) & mask for i in range(n)]
                    pos += n * width
    if primary is None:
        raise ValueError("no primary item ('pitm')")
    images = []
    for item, kind in types.items():
        if kind not in _IMAGE_TYPES or item in not_shown or (item in hidden and item != primary):
            continue
        size = None
        for index in assoc.get(item, ()):
            if 1 <= index <= len(props) and props[index - 1][0] == b"ispe":
                _, ps, pe = props[index - 1]
                size = (_u(data, ps + 4, 4, pe), _u(data, ps + 8, 4, pe))
        if size is None:
            raise ValueError(f"image item {item} has no size ('ispe')")
        images.append((item, size[0], size[1]))
    return HeifHeader(items=items, primary=primary, images=images)


def check_limits(header: HeifHeader, max_pixels: int, max_frames: int, path: str | None) -> None:
    """``too_large`` when any shown image is over ``max_pixels`` or too many are shown."""
    if len(header.images) > max_frames:
        raise TooLargeError(f"{len(header.images)} images is over max_frames={max_frames}",
                            path=path, stage="probe")
    for _item, w, h in header.images:
        if w * h > max_pixels:
            raise TooLargeError(f"{w}x{h} = {w * h:,} pixels is over max_pixels={max_pixels:,}",
                                path=path, stage="probe")


def _to_8bit(img, bits: int) -> Image.Image:
    """A ``pillow_heif`` image's pixels as an 8-bit Pillow image (deep samples rounded)."""
    mode = img.mode.split(";")[0]
    bands = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}.get(mode)
    if bands is None:
        raise UnsupportedFormatError(f"HEIF image mode {img.mode} is not read", stage="decode")
    w, h = img.size
    if bits <= 8:
        arr = np.frombuffer(img.data, np.uint8).reshape(h, img.stride)[:, :w * bands]
    else:
        wide = np.frombuffer(img.data, np.uint16).reshape(h, img.stride // 2)[:, :w * bands]
        top = (1 << bits) - 1
        arr = ((np.minimum(wide, top).astype(np.uint32) * 255 + top // 2) // top).astype(np.uint8)
    arr = arr.reshape(h, w, bands)
    return Image.fromarray(np.ascontiguousarray(arr[..., 0] if bands == 1 else arr), mode)


def displayed_size(data: bytes, header: HeifHeader, *, path: str | None = None
                   ) -> tuple[int, int]:
    """The chosen image's size as shown (libheif's transformations applied), without decoding.

    Also sets ``header.bits``. Call only after :func:`parse_header` and
    :func:`check_limits` passed: libheif parses the whole ``meta`` box here
    (no pixel is decoded).
    """
    mod = require("probe", path)
    try:
        hf = mod.open_heif(io.BytesIO(data), convert_hdr_to_8bit=False, hdr_to_16bit=False)
        img = hf[0 if header.first_frame else hf.primary_index]
        header.bits = int(img.info.get("bit_depth") or 8)
        return img.size
    except Exception as exc:
        text = " ".join(str(exc).split())
        if "security limit" in text.lower():
            raise TooLargeError(f"HEIF over libheif's security limits: {text}", path=path,
                                stage="probe") from None
        raise DecodeError(f"corrupt HEIF header: {text}", path=path, stage="probe") from None


def decode(data: bytes, header: HeifHeader, *, path: str | None = None
           ) -> tuple[Image.Image, list[str]]:
    """Decode the chosen image of ``data`` (checked by :func:`parse_header`).

    The primary image, or the first shown one when ``header.first_frame``;
    refused when over ``header.max_pixels`` once libheif's sizes are known.

    Returns the upright image (mode L, LA, RGB or RGBA, ``info`` with
    ``icc_profile`` and ``exif`` when present) and notes for the result.
    """
    mod = require("decode", path)
    notes: list[str] = []
    first_frame, max_pixels = header.first_frame, header.max_pixels
    try:
        hf = mod.open_heif(io.BytesIO(data), convert_hdr_to_8bit=False, hdr_to_16bit=False)
        img = hf[0 if first_frame else hf.primary_index]
        w, h = img.size
        if w * h > max_pixels:
            raise TooLargeError(f"{w}x{h} = {w * h:,} pixels is over max_pixels={max_pixels:,}",
                                path=path, stage="decode")
        bits = int(img.info.get("bit_depth") or 8)
        im = _to_8bit(img, bits)
    except (TooLargeError, UnsupportedFormatError):
        raise
    except MemoryError:
        raise TooLargeError("not enough memory to decode", path=path, stage="decode") from None
    except Exception as exc:
        text = " ".join(str(exc).split())
        kind = "truncated" if "truncat" in text.lower() or "end of file" in text.lower() else "corrupt"
        raise DecodeError(f"{kind} HEIF data: {text}", path=path, stage="decode") from None
    if len(hf) > 1:
        which = "first" if first_frame else "primary"
        notes.append(f"HEIF holds {len(hf)} images: the {which} one was used")
    if bits > 8:
        notes.append(f"{bits}-bit HEIF samples rounded to 8 bits")
    info = {}
    if img.info.get("icc_profile"):
        info["icc_profile"] = bytes(img.info["icc_profile"])
    code = img.info.get("nclx_profile")
    if code and not info and isinstance(code, dict):
        primaries = int(code.get("color_primaries") or 2)
        transfer = int(code.get("transfer_characteristics") or 2)
        prof = nclx.profile(primaries, transfer)
        if prof is not None:  # converted to sRGB like any profiled image
            info["icc_profile"] = prof
        elif primaries not in (1, 2) or transfer in nclx.HDR_TRANSFERS:
            notes.append(f"HEIF colour ({nclx.describe(primaries, transfer)}) not converted: "
                         "shown as sRGB")
    exif = img.info.get("exif")
    if exif:
        try:
            ex = Image.Exif()
            ex.load(exif[6:] if exif.startswith(b"Exif\x00\x00") else exif)
            ex.pop(0x0112, None)  # libheif applied irot/imir: the orientation is in the pixels
            info["exif"] = ex.tobytes()
        except Exception:
            notes.append("EXIF block is unreadable; dropped")
    im.info = info
    return im, notes
