"""Probe: what an input is, from its bytes, before any pixel is decoded.

Owns format sniffing (magic bytes, never the file name), opening the input
with Pillow restricted to the formats pyimgopt reads, and the limits that must
hold before a pixel buffer may exist: pixel count, frame count and the total
pixels of an animation. A decompression bomb is a ``too_large`` error here,
never an allocation.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image

from ..errors import DecodeError, TooLargeError, UnsupportedFormatError
from ..formats import sniff
from ..settings import Settings
from . import heif, jxl

__all__ = ["Probe", "sniff", "probe", "count_gif_frames", "webp_is_lossless", "INPUT_FORMATS"]

#: Pillow plugin names pyimgopt reads. Restricting ``Image.open`` to these
#: keeps every other decoder (EPS via Ghostscript, PSD, ...) out of reach of
#: hostile input. HEIF and JPEG XL are read by :mod:`.heif` and :mod:`.jxl`
#: after their own header checks, never through ``Image.open`` (the JPEG XL
#: plugin decodes every pixel when a file is opened).
INPUT_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP", "AVIF")

_KNOWN_UNSUPPORTED = (
    (b"<svg", "SVG"),
    (b"<?xml", "XML/SVG"),
    (b"%PDF", "PDF"),
    (b"8BPS", "PSD"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"%!PS", "PostScript"),
)


def _describe_unknown(head: bytes) -> str:
    stripped = head.lstrip()
    for magic, name in _KNOWN_UNSUPPORTED:
        if stripped.startswith(magic) or head.startswith(magic):
            return f"{name} is not a format pyimgopt reads"
    if head[4:8] == b"ftyp":
        return "ISO-BMFF file that is neither AVIF nor HEIF; pyimgopt does not read it"
    return "not a recognised image format (JPEG, PNG, WebP, GIF, TIFF, BMP, AVIF, HEIF, JPEG XL)"


def count_gif_frames(data: bytes, limit: int) -> int:
    """Count the image descriptors of a GIF by walking its blocks.

    Stops as soon as the count passes ``limit`` (so a frame bomb costs
    nothing) or at the first malformed block (returns what was counted).
    """
    n = len(data)
    if n < 13:
        return 0
    pos = 13
    packed = data[10]
    if packed & 0x80:
        pos += 3 * (2 ** ((packed & 7) + 1))
    frames = 0
    while pos < n:
        sep = data[pos]
        if sep == 0x3B:  # trailer
            break
        if sep == 0x21:  # extension: label, then sub-blocks
            pos += 2
        elif sep == 0x2C:  # image descriptor
            frames += 1
            if frames > limit:
                return frames
            if pos + 10 > n:
                break
            lpacked = data[pos + 9]
            pos += 10
            if lpacked & 0x80:
                pos += 3 * (2 ** ((lpacked & 7) + 1))
            pos += 1  # LZW minimum code size
        else:
            break
        while pos < n:  # sub-blocks
            size = data[pos]
            pos += 1 + size
            if size == 0:
                break
    return frames


def _riff_chunks(data: bytes, pos: int, end: int):
    while pos + 8 <= end:
        fourcc = data[pos : pos + 4]
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        body = pos + 8
        if body + size > end:
            size = end - body  # truncated: what is there
        yield fourcc, body, size
        pos = body + size + (size & 1)


def webp_is_lossless(data: bytes) -> bool:
    """True when every image bitstream of a WebP file is lossless (``VP8L``).

    Walks the RIFF chunks (and the frames of an animation) from the header
    on, so a large ICC or EXIF chunk before the image data changes nothing.
    A lossy ``VP8 `` bitstream anywhere (with or without ``ALPH``) makes it
    lossy; no bitstream at all is not lossless.
    """
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return False
    end = min(len(data), 8 + int.from_bytes(data[4:8], "little"))
    kinds: set[bytes] = set()
    for fourcc, body, size in _riff_chunks(data, 12, end):
        if fourcc in (b"VP8L", b"VP8 "):
            kinds.add(fourcc)
        elif fourcc == b"ANMF" and size >= 16:
            for sub, _, _ in _riff_chunks(data, body + 16, body + size):
                if sub in (b"VP8L", b"VP8 "):
                    kinds.add(sub)
    return kinds == {b"VP8L"}


@dataclass
class Probe:
    """What the header says. ``image`` is Pillow's lazily opened image; ``data`` the input bytes.

    HEIF and JPEG XL are parsed by :mod:`.heif` / :mod:`.jxl` instead: their
    ``image`` is ``None`` (they are decoded by those modules, upright), their
    ``header`` the codec's parsed header, ``width``/``height`` as displayed
    and ``mode`` empty when the header does not say.
    """

    format: str
    width: int
    height: int
    frames: int
    mode: str
    image: Image.Image | None
    data: bytes = b""
    header: object | None = None

    @property
    def animated(self) -> bool:
        return self.frames > 1


def probe(data: bytes, settings: Settings, path: str | None = None) -> Probe:
    """Identify ``data`` and enforce the header limits of ``settings``.

    Raises
    ------
    DecodeError
        Empty input, or a known format whose header is corrupt.
    UnsupportedFormatError
        Anything that is not one of the formats pyimgopt reads.
    TooLargeError
        Over ``max_pixels`` or ``max_frames`` (or total animation pixels).
    """
    if not data:
        raise DecodeError("input is empty (0 bytes)", path=path, stage="probe")
    fmt = sniff(data[:64])
    if fmt is None:
        raise UnsupportedFormatError(_describe_unknown(data[:64]), path=path, stage="probe")
    if fmt in ("HEIF", "JXL"):
        return _probe_own(fmt, data, settings, path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=[fmt])
    except Image.DecompressionBombError as exc:
        raise TooLargeError(
            f"image dimensions are over the decoder's safety limit: {exc}",
            path=path,
            stage="probe",
        ) from None
    except Exception as exc:  # Pillow raises many types on corrupt headers
        detail = (
            "the decoder cannot parse it (bad checksum or malformed header)"
            if isinstance(exc, Image.UnidentifiedImageError)
            else str(exc)
        )
        raise DecodeError(
            f"corrupt {fmt} header: {detail}", path=path, stage="probe"
        ) from None
    width, height = im.size
    if width < 1 or height < 1:
        raise DecodeError(f"{fmt} header declares an empty image", path=path, stage="probe")
    pixels = width * height
    if pixels > settings.max_pixels:
        raise TooLargeError(
            f"{width}x{height} = {pixels:,} pixels is over max_pixels={settings.max_pixels:,}",
            path=path,
            stage="probe",
        )
    if fmt == "GIF":
        frames = max(1, count_gif_frames(data, settings.max_frames))
    else:
        try:
            frames = int(getattr(im, "n_frames", 1) or 1)
        except Exception as exc:
            raise DecodeError(
                f"corrupt {fmt} frame table: {exc}", path=path, stage="probe"
            ) from None
    if im.format == "MPO":  # camera JPEG with an MPF preview: the primary image is the photo
        frames = 1
    if frames > settings.max_frames:
        count = f"more than {settings.max_frames}" if fmt == "GIF" else str(frames)
        raise TooLargeError(
            f"{count} frames is over max_frames={settings.max_frames}",
            path=path,
            stage="probe",
        )
    if frames * pixels > settings.max_pixels:
        raise TooLargeError(
            f"{frames} frames of {width}x{height} = {frames * pixels:,} pixels in all is over "
            f"max_pixels={settings.max_pixels:,}",
            path=path,
            stage="probe",
        )
    return Probe(format=fmt, width=width, height=height, frames=frames, mode=im.mode, image=im,
                 data=data)


def _probe_own(fmt: str, data: bytes, settings: Settings, path: str | None) -> Probe:
    """HEIF / JPEG XL: the header parsed here, limits checked before the codec decodes."""
    codec = heif if fmt == "HEIF" else jxl
    codec.require("probe", path)  # a clear unsupported_format naming the wheel when missing
    try:
        header = codec.parse_header(data)
    except TooLargeError as exc:
        exc.path = path
        raise
    except ValueError as exc:
        name = "HEIF" if fmt == "HEIF" else "JPEG XL"
        raise DecodeError(f"corrupt {name} header: {exc}", path=path, stage="probe") from None
    if isinstance(header, jxl.JxlHeader):
        jxl.check_limits(header, settings.max_pixels, path)
        if header.animated:
            raise UnsupportedFormatError(
                "animated JPEG XL is not read (its decoder composites every frame and returns "
                "only the last)", path=path, stage="probe")
        return Probe(format=fmt, width=header.width, height=header.height, frames=1, mode="",
                     image=None, data=data, header=header)
    heif.check_limits(header, settings.max_pixels, settings.max_frames, path)
    header.first_frame, header.max_pixels = settings.first_frame, settings.max_pixels
    try:
        header.chosen(settings.first_frame)
    except ValueError as exc:
        raise DecodeError(f"corrupt HEIF header: {exc}", path=path, stage="probe") from None
    width, height = heif.displayed_size(data, header, path=path)
    if width * height > settings.max_pixels:
        raise TooLargeError(f"{width}x{height} = {width * height:,} pixels is over "
                            f"max_pixels={settings.max_pixels:,}", path=path, stage="probe")
    return Probe(format=fmt, width=width, height=height, frames=1, mode="", image=None,
                 data=data, header=header)
