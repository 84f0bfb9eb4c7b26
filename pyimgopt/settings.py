"""Settings for one optimisation: a frozen, validated dataclass.

:class:`Settings` is the plain options struct the pipeline runs on. Every
field is checked when the object is built, and a bad value raises
:class:`~pyimgopt.errors.InvalidSettingsError` whose message names the field,
what was expected and what was received. Settings round-trip through plain
dicts (:meth:`Settings.to_dict` / :meth:`Settings.from_dict`), so they can
travel in a msgpack message unchanged.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, fields
from typing import Any

from .errors import InvalidSettingsError

__all__ = ["Settings", "OUTPUT_FORMATS", "FITS", "FILTERS", "SUBSAMPLINGS", "AUTO_FORMATS",
           "BROWSER_FORMATS", "SIZE_UNITS", "parse_size", "LIMIT_FIELDS"]

#: Values accepted by ``Settings.format``. ``keep`` re-encodes in the input's
#: own format (GIF, TIFF and BMP inputs included).
OUTPUT_FORMATS = ("keep", "auto", "jpeg", "png", "webp", "avif", "jxl")
#: Formats ``format="auto"`` may be allowed to choose (``formats_allowed``).
AUTO_FORMATS = ("jpeg", "png", "webp", "avif", "gif", "jxl")
#: The default ``formats_allowed``: what every current browser displays.
#: JPEG XL is left out: Chrome, Edge and Firefox (by default) do not show it.
BROWSER_FORMATS = ("jpeg", "png", "webp", "avif", "gif")
FITS = ("inside", "cover", "contain", "fill")
FILTERS = ("lanczos3", "bicubic", "bilinear", "box", "nearest")
SUBSAMPLINGS = ("auto", "4:4:4", "4:2:2", "4:2:0")

_FORMAT_ALIASES = {"jpg": "jpeg", "tif": "tiff", "jpegxl": "jxl"}

#: Size suffixes :func:`parse_size` accepts (case-insensitive): SI units are
#: powers of 1000 (``KB`` = 1000 bytes, as disks and networks count), IEC
#: units powers of 1024 (``KiB`` = 1024 bytes). A bare number is bytes.
SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3,
}
_SIZE_RE = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([A-Za-z]*)\s*")

#: Fields that only bound what a file may cost (checked before decoding): they
#: never change an output, so the optimisation manifest leaves them out of its key.
LIMIT_FIELDS = ("max_pixels", "max_frames", "max_input_bytes")


def parse_size(value: Any, name: str = "target_size") -> int:
    """Bytes from ``200KB``, ``1.5MB``, ``300KiB``, ``250000`` or an int.

    ``KB``/``MB``/``GB`` (and ``K``/``M``/``G``) are powers of 1000; ``KiB``,
    ``MiB``, ``GiB`` powers of 1024; case does not matter. The result is
    rounded down to whole bytes and must be at least 1.

    Raises
    ------
    InvalidSettingsError
        Naming ``name``, what was expected and what was received.
    """
    expected = "a size in bytes such as 200KB (1 KB = 1000 B), 300KiB (1 KiB = 1024 B) or 250000"
    if isinstance(value, bool):
        raise _fail(name, expected, value)
    if isinstance(value, int):
        n = value
    elif isinstance(value, str):
        m = _SIZE_RE.fullmatch(value)
        unit = m.group(2).lower() if m else None
        if m is None or unit not in SIZE_UNITS:
            raise _fail(name, expected, value)
        n = int(float(m.group(1)) * SIZE_UNITS[unit])
    else:
        raise _fail(name, expected, value)
    if n < 1:
        raise _fail(name, "a size of at least 1 byte", value)
    return n


def _fail(name: str, expected: str, value: Any) -> InvalidSettingsError:
    return InvalidSettingsError(
        f"Expected {expected} for {name} but received {value!r}", stage="settings"
    )


def _check_int(name: str, value: Any, lo: int, hi: int | None, *, optional: bool) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(name, "an integer" + (" or None" if optional else ""), value)
    if value < lo or (hi is not None and value > hi):
        span = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
        raise _fail(name, f"an integer {span}", value)


@dataclass(frozen=True)
class Settings:
    """What to do to one image. All fields have safe defaults.

    Attributes
    ----------
    format:
        Output format: ``keep`` (default, the input's own format), ``auto``
        (try JPEG, WebP, AVIF — and PNG or lossless WebP where the image needs
        lossless or has few colours — at the SSIM target and keep the
        smallest; only formats in ``formats_allowed``), ``jpeg``, ``png``,
        ``webp``, ``avif`` or ``jxl`` (JPEG XL; with ``lossless=True`` a JPEG
        input is recompressed without decoding, and can be rebuilt from the
        JPEG XL byte for byte).
    quality:
        Encoder quality 1-100 for lossy formats; ``None`` picks the format's
        default (JPEG 80, WebP 80, AVIF 60). A JPEG is never re-encoded at a
        higher quality than its own quantisation tables imply.
    target_ssim:
        Perceptual target (0 < t <= 1, e.g. 0.985): search the encoder quality
        for the smallest output whose score against the resized source meets
        it — the luma SSIM, held down by a colour-difference floor so colour
        damage cannot pass on luma alone (:mod:`pyimgopt.pipeline.perceptual`);
        ``quality`` then caps the search. ``format="auto"`` uses 0.985 when
        this is ``None``.
    lossless:
        Encode WebP/AVIF/JPEG XL losslessly, never re-encode a JPEG kept as
        JPEG, never a lossy PNG palette; with ``format="auto"`` only exact
        encodings are tried. A JPEG output is refused
        (``unsupported_format``) except a JPEG kept as JPEG without a resize.
        ``None`` means lossless only when the
        input is lossless WebP (or lossless JPEG XL) kept in its format.
        Lossless AVIF is RGB with the identity matrix, written through libvips
        and checked by decoding it; without pyvips, or for an animation, it is
        refused (``unsupported_format``).
    lossy_png:
        Allow a lossy palette PNG (libimagequant, dithered, alpha kept) when it
        is smaller — and, with ``target_ssim``, only when it meets the target.
        A ``target_ssim`` alone also allows the palette when it meets the
        target (a perceptual target is consent to that much loss);
        ``lossless=True`` never.
    max_width, max_height:
        Bounding box in pixels; ``None`` means unbounded on that axis.
    fit:
        ``inside`` (keep aspect, fit within the box), ``cover`` (fill the box,
        crop the overflow, centred), ``contain`` (fit within, pad to the box)
        or ``fill`` (stretch to the box).
    enlarge:
        Allow upscaling when the image is smaller than the box.
    filter:
        Resampling filter for resizing.
    chroma_subsampling:
        JPEG and AVIF chroma subsampling; ``auto`` is 4:2:0 for photos, 4:4:4
        for graphics and text (few colours) and at quality >= 90. libvips'
        mozjpeg writes 4:4:4 and 4:2:0; 4:2:2 JPEG uses Pillow's encoder.
        WebP is always 4:2:0.
    keep_metadata:
        Keep EXIF (orientation reset) and an sRGB ICC profile. Default strips
        metadata (GPS, camera, XMP, comments, ...) from every output, a copied
        one included, and keeps only what changes how the image is shown
        (see the README's "What the defaults do").
    first_frame:
        For animated inputs whose output format cannot animate, take the first
        frame instead of failing with ``unsupported_format``.
    allow_larger:
        Write the re-encoded result even when it is not smaller than the input.
    background:
        RGB colour (``#rrggbb``) used to flatten alpha into JPEG and to pad
        ``contain`` boxes of formats without alpha.
    max_pixels, max_frames, max_input_bytes:
        Limits checked from the header before any pixel buffer exists. For
        animations ``max_pixels`` also bounds the sum over all frames.
    formats_allowed:
        The formats ``format="auto"`` may choose among (any of
        ``jpeg png webp avif gif jxl``); default: the formats every browser
        shows (``jpeg png webp avif gif``). Add ``jxl`` to let auto choose
        JPEG XL (for archives, or apps that decode it themselves).
    target_size:
        Largest output in bytes (an int, or a string parsed by :func:`parse_size`:
        ``"200KB"`` is 200,000 bytes, ``"200KiB"`` 204,800). The encoder quality
        is searched for the largest that fits (``quality`` caps it; never below
        quality 20); when even that does not fit, the image is downscaled, but
        only as far as ``min_scale`` allows. With ``format="auto"`` every allowed
        format is tried and the fitting candidate that looks closest to the
        source (highest score) wins. With ``target_ssim`` both must hold: the
        smallest output meeting the SSIM target must also fit. A file that
        cannot fit fails alone with ``target_unreachable`` and the smallest
        size reached.
    min_scale:
        With ``target_size``: the smallest scale (0 < s <= 1, of the size the
        other settings give) the image may be shrunk to so that it fits;
        ``None`` (default) never shrinks it for the size.
    mark:
        Write a small marker into each optimised PNG, JPEG or GIF (a
        ``tEXt`` chunk / ``COM`` segment / comment extension of about 50
        bytes: ``pyimgopt1``, the settings key and the content hash), so a
        re-run recognises it as already optimised with these settings even
        after a copy to another machine (see the README's manifest section).
        A file whose saving is smaller than the marker is not marked.
    effort:
        Encoder effort 0-9, one speed/size knob: PNG oxipng preset (6: level-2
        filter search with libdeflate 6, 8: oxipng level 2, 9: every filter
        with libdeflate 12), JPEG through mozjpeg's trellis from 5 (libjpeg-turbo
        below), WebP method ``effort - 2``, AVIF speed ``12 - effort``,
        JPEG XL effort ``effort + 1`` (libjxl's 1-9; 6 is libjxl's default 7;
        at most 7 for a lossy image under 8 px on a side).
    """

    format: str = "keep"
    quality: int | None = None
    target_ssim: float | None = None
    lossless: bool | None = None
    lossy_png: bool = False
    max_width: int | None = None
    max_height: int | None = None
    fit: str = "inside"
    enlarge: bool = False
    filter: str = "lanczos3"
    chroma_subsampling: str = "auto"
    keep_metadata: bool = False
    first_frame: bool = False
    allow_larger: bool = False
    background: str = "#ffffff"
    max_pixels: int = 100_000_000
    max_frames: int = 1000
    max_input_bytes: int = 256 * 1024 * 1024
    effort: int = 6
    formats_allowed: tuple[str, ...] = BROWSER_FORMATS
    target_size: int | None = None
    min_scale: float | None = None
    mark: bool = False

    def __post_init__(self) -> None:
        fmt = self.format
        if isinstance(fmt, str):
            fmt = _FORMAT_ALIASES.get(fmt.lower(), fmt.lower())
            object.__setattr__(self, "format", fmt)
        if fmt not in OUTPUT_FORMATS:
            raise _fail("format", f"one of {', '.join(OUTPUT_FORMATS)}", self.format)
        _check_int("quality", self.quality, 1, 100, optional=True)
        t = self.target_ssim
        if t is not None and (
            isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 < float(t) <= 1.0
        ):
            raise _fail("target_ssim", "a number in (0, 1] or None", t)
        if t is not None:
            object.__setattr__(self, "target_ssim", float(t))
        _check_int("max_width", self.max_width, 1, 1_000_000, optional=True)
        _check_int("max_height", self.max_height, 1, 1_000_000, optional=True)
        for name, choices in (
            ("fit", FITS),
            ("filter", FILTERS),
            ("chroma_subsampling", SUBSAMPLINGS),
        ):
            if getattr(self, name) not in choices:
                raise _fail(name, f"one of {', '.join(choices)}", getattr(self, name))
        if self.target_size is not None:
            object.__setattr__(self, "target_size", parse_size(self.target_size))
        ms = self.min_scale
        if ms is not None:
            if isinstance(ms, bool) or not isinstance(ms, (int, float)) or not 0.0 < float(ms) <= 1.0:
                raise _fail("min_scale", "a number in (0, 1] or None", ms)
            if self.target_size is None:
                raise _fail("min_scale", "None unless target_size is set (it bounds the "
                            "downscale a size target may make)", ms)
            object.__setattr__(self, "min_scale", float(ms))
        for name in ("enlarge", "keep_metadata", "first_frame", "allow_larger", "lossy_png", "mark"):
            if not isinstance(getattr(self, name), bool):
                raise _fail(name, "a bool", getattr(self, name))
        if self.lossless is not None and not isinstance(self.lossless, bool):
            raise _fail("lossless", "a bool or None", self.lossless)
        if self.fit in ("cover", "contain", "fill") and (
            self.max_width is None and self.max_height is None
        ):
            raise _fail(
                "fit", "'inside' when neither max_width nor max_height is set", self.fit
            )
        bg = self.background
        if not (
            isinstance(bg, str)
            and len(bg) == 7
            and bg[0] == "#"
            and all(c in "0123456789abcdefABCDEF" for c in bg[1:])
        ):
            raise _fail("background", "a colour '#rrggbb'", bg)
        _check_int("max_pixels", self.max_pixels, 1, None, optional=False)
        _check_int("max_frames", self.max_frames, 1, None, optional=False)
        _check_int("max_input_bytes", self.max_input_bytes, 1, None, optional=False)
        _check_int("effort", self.effort, 0, 9, optional=False)
        allowed = self.formats_allowed
        if isinstance(allowed, (str, bytes)) or not isinstance(allowed, (list, tuple, frozenset, set)):
            raise _fail("formats_allowed", f"a list of names among {', '.join(AUTO_FORMATS)}",
                        allowed)
        names = []
        for name in allowed:
            key = _FORMAT_ALIASES.get(name.lower(), name.lower()) if isinstance(name, str) else name
            if key not in AUTO_FORMATS:
                raise _fail("formats_allowed", f"names among {', '.join(AUTO_FORMATS)}", name)
            if key not in names:
                names.append(key)
        if not names:
            raise _fail("formats_allowed", "at least one format", allowed)
        # canonical order, so equal sets compare (and round-trip) equal
        object.__setattr__(self, "formats_allowed", tuple(f for f in AUTO_FORMATS if f in names))

    @property
    def background_rgb(self) -> tuple[int, int, int]:
        """The background colour as an (r, g, b) tuple."""
        h = self.background
        return (int(h[1:3], 16), int(h[3:5], 16), int(h[5:7], 16))

    def needs_resize_box(self) -> bool:
        """True when a bounding box is set."""
        return self.max_width is not None or self.max_height is not None

    def replace(self, **changes: Any) -> "Settings":
        """Return a copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a dict of plain values (``formats_allowed`` as a list)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["formats_allowed"] = list(self.formats_allowed)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Settings":
        """Build settings from :meth:`to_dict` output; unknown keys are an error."""
        if not isinstance(data, dict):
            raise _fail("settings", "a dict", data)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidSettingsError(
                f"Unknown setting(s) {', '.join(map(str, unknown))}; "
                f"expected some of {', '.join(sorted(known))}",
                stage="settings",
            )
        return cls(**data)
