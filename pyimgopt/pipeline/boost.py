"""Optional best-in-class encoders: oxipng, libimagequant, mozjpeg (lossless pass and encoder).

Owns access to the optional PyPI packages ``pyoxipng`` (PNG filter search and
better deflate), ``imagequant`` (palette quantisation with dithering),
``mozjpeg-lossless-optimization`` (re-optimising a JPEG's entropy coding
without touching its pixels) and ``pyvips`` + ``pyvips-binary`` (whose libvips
is built with mozjpeg: trellis quantisation and scan optimisation). Each is
imported once; when one is missing or named in ``PYIMGOPT_DISABLE`` the
pipeline falls back to Pillow and says so in the result's notes, once per
result.

Threads: with ``PYIMGOPT_CODEC_THREADS=N`` (pool sidecars set 1) each codec
uses N threads, so the pool, not each codec, owns the parallelism. oxipng's
rayon pool reads ``RAYON_NUM_THREADS`` when it first runs (not at import), and
libvips reads ``VIPS_CONCURRENCY`` at import; both are set from
``PYIMGOPT_CODEC_THREADS`` here, before first use, unless already set.
libvips also runs with its operation cache off (nothing is reused between
images, and a cache would only hold memory).
"""

from __future__ import annotations

import functools
import importlib
import os

from PIL import Image

from . import isolate
from .strip import add_jpeg_metadata

__all__ = ["available", "native_error", "png_optimize", "png_options", "jpeg_lossless", "jpeg_encode",
           "jpeg_encoder_quality", "jpeg_table_8", "quantize", "missing_note", "refused_note",
           "avif_lossless"]

_MODULES = {
    "oxipng": "oxipng",
    "imagequant": "imagequant",
    "mozjpeg": "mozjpeg_lossless_optimization",
    "vips": "pyvips",
    "heif": "pillow_heif",  # HEIC/HEIF codec (pipeline/heif.py); no Pillow fallback
    "jxl": "pillow_jxl",  # JPEG XL codec (pipeline/jxl.py); no Pillow fallback
}
_PACKAGES = {"oxipng": "pyoxipng", "imagequant": "imagequant",
             "mozjpeg": "mozjpeg-lossless-optimization", "vips": "pyvips",
             "heif": "pillow-heif", "jxl": "pillow-jxl-plugin"}
#: The environment variable each codec's own thread pool reads.
_THREAD_ENV = {"oxipng": "RAYON_NUM_THREADS", "vips": "VIPS_CONCURRENCY"}
#: Set PYIMGOPT_DISABLE=oxipng,mozjpeg,vips to force the Pillow fallbacks (tests, debugging).
_DISABLE_ENV = "PYIMGOPT_DISABLE"
_THREADS_ENV = "PYIMGOPT_CODEC_THREADS"


def _codec_threads() -> int | None:
    value = os.environ.get(_THREADS_ENV, "")
    return max(1, int(value)) if value.isdigit() else None


@functools.lru_cache(maxsize=None)
def _module(name: str):
    disabled = {x.strip() for x in os.environ.get(_DISABLE_ENV, "").split(",") if x.strip()}
    if name in disabled:
        return None
    threads = _codec_threads()
    if threads is not None and name in _THREAD_ENV:
        os.environ.setdefault(_THREAD_ENV[name], str(threads))
    try:
        mod = importlib.import_module(_MODULES[name])
        if name == "vips":
            mod.cache_set_max(0)
            if threads is not None:
                mod.concurrency_set(threads)
        return mod
    except Exception:  # ImportError, or a broken binary wheel: fall back, never crash
        return None


def native_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a codec failing on its input: any ``Exception``, or a Rust panic.

    pyo3 raises a Rust panic (oxipng, the JPEG XL plugin) as ``PanicException``,
    which derives from ``BaseException``, so ``except Exception`` lets it
    through; it is a per-file failure all the same.
    """
    return isinstance(exc, Exception) or type(exc).__name__ == "PanicException"


def available(name: str) -> bool:
    """Whether the optional codec ``name`` (oxipng, imagequant, mozjpeg, vips, heif, jxl) is usable."""
    return _module(name) is not None


def missing_note(name: str) -> str:
    """The note a result carries when the optional encoder ``name`` was not used.

    The first call per encoder and process also logs a warning
    (``encoder_fallback``), so a pool says it once per sidecar, not per file.
    """
    _log_fallback_once(name)
    if name == "vips":
        return "pyvips not installed: Pillow JPEG encoder used (no trellis quantisation)"
    return f"{_PACKAGES[name]} not installed: Pillow fallback used"


@functools.lru_cache(maxsize=None)
def _log_fallback_once(name: str) -> None:
    import logging

    from ..logs import event, get_logger

    event(get_logger("encoders"), "encoder_fallback", logging.WARNING, encoder=name,
          reason=f"{_PACKAGES[name]} missing or disabled (PYIMGOPT_DISABLE): Pillow used")


# oxipng presets measured on the corpus PNGs (bench/README.md): the deflate
# level, not the filter search, sets the time, and level 2's filter set (with
# its fast evaluation) beats levels 3-4, whose sets lack Sub (-58 % on a large
# wallpaper at level 2). Level 4 was both 4x slower and 20 % larger here.
_ALL_FILTERS = ("NoOp", "Sub", "Up", "Average", "Paeth", "MinSum", "Entropy", "Bigrams",
                "BigEnt", "Brute")


def png_options(effort: int) -> dict:
    """oxipng keyword options for ``effort`` 1-9 (effort 0 does not use oxipng).

    The pipeline's PNG output uses this preset at effort 1-5 only; from 6 on
    :mod:`.pngplan` plans per image (libdeflate 10-12, a sampled or searched
    filter). The rows for 6-9 serve the 16-bit libvips route (:mod:`.deep`)
    and the benches that call :func:`png_optimize` without a plan.

    ====== ======================================== ==========================
    effort oxipng preset                            note
    ====== ======================================== ==========================
    1-3    level 1, libdeflate 5                    fastest; ~Pillow bytes
    4-5    level 2 filters, libdeflate 5            -20 % bytes, ~4x Pillow opt
    6      level 2 filters, libdeflate 6
    7      level 2 filters, libdeflate 8
    8      level 2, libdeflate 11 (oxipng default)
    9      all ten filters, libdeflate 12           strongest; ~2.5x level 2
    ====== ======================================== ==========================
    """
    ox = _module("oxipng")
    if ox is None:
        return {}
    if effort <= 3:
        return {"level": 1, "deflate": ox.Deflaters.libdeflater(5)}
    if effort <= 7:
        return {"level": 2, "deflate": ox.Deflaters.libdeflater({4: 5, 5: 5, 6: 6, 7: 8}[effort])}
    if effort == 8:
        return {"level": 2}
    return {"level": 2, "filter": [getattr(ox.RowFilter, f) for f in _ALL_FILTERS],
            "deflate": ox.Deflaters.libdeflater(12)}


def png_optimize(data: bytes, effort: int, *, filters: tuple[str, ...] | None = None,
                 level: int | None = None, fast: bool = True,
                 optimize_alpha: bool = False) -> bytes | None:
    """oxipng over a PNG (lossless); ``None`` when missing or refused.

    Without ``filters``/``level``: the preset of :func:`png_options`. With
    them: those oxipng row filters (names of ``oxipng.RowFilter``) and
    libdeflate ``level``; ``fast`` is oxipng's fast evaluation (each filter
    tried with a quick compression, only the winner compressed at ``level``;
    with one filter and ``fast`` off there is no trial at all). ``optimize_alpha`` lets oxipng change the
    colour of fully transparent pixels (never a visible one).
    """
    ox = _module("oxipng")
    if ox is None:
        return None
    if filters:
        opts = {"level": 2, "filter": [getattr(ox.RowFilter, f) for f in filters],
                "deflate": ox.Deflaters.libdeflater(level or 10), "fast_evaluation": fast}
    else:
        opts = png_options(effort)
    try:
        return ox.optimize_from_memory(data, optimize_alpha=optimize_alpha, **opts)
    except BaseException as exc:
        if not native_error(exc):
            raise
        return None


def jpeg_lossless(data: bytes, *, keep_markers: bool, trusted: bool = False) -> bytes | None:
    """mozjpeg's lossless re-optimisation (same pixels); ``None`` when unavailable.

    ``keep_markers`` copies every APPn/COM segment; otherwise only the ICC
    profile is kept (colour meaning must not change). Unless ``trusted``
    (a JPEG Pillow just wrote), the call runs in a child process
    (:func:`.isolate.call`): on a corrupt JPEG mozjpeg's libjpeg calls
    ``exit()``, which must end that child, not this process.

    Raises
    ------
    isolate.NativeFailure
        mozjpeg refused the JPEG, or its libjpeg ended the child (the message
        is libjpeg's).
    """
    mz = _module("mozjpeg")
    if mz is None:
        return None
    markers = mz.COPY_MARKERS.ALL if keep_markers else mz.COPY_MARKERS.ICC
    if not trusted:
        return isolate.call(_MODULES["mozjpeg"], "optimize", data, copy=int(markers))
    try:
        return mz.optimize(data, copy=markers)
    except Exception as exc:
        raise isolate.NativeFailure(str(exc)) from None


def refused_note(what: str, exc: Exception) -> str:
    """The note a result carries when an optional codec refused an input it was given."""
    return f"{what} refused this file and was not applied ({exc})"


def quantize(im: Image.Image, *, dither: float = 1.0, max_quality: int = 90) -> Image.Image | None:
    """A palette version of ``im`` (alpha kept) from libimagequant, or ``None``."""
    iq = _module("imagequant")
    if iq is None:
        return None
    try:
        # The raw-bytes entry point: the PIL one uses an API Pillow deprecates.
        rgba = im.convert("RGBA")
        indices, palette = iq.quantize_raw_rgba_bytes(
            rgba.tobytes(), rgba.width, rgba.height, dithering_level=dither, max_colors=256,
            min_quality=0, max_quality=max_quality)
        out = Image.frombytes("P", rgba.size, bytes(indices))
        out.putpalette(bytes(palette), rawmode="RGBA")
        return out
    except Exception:
        return None



#: mozjpeg quantisation table 8 (Peterson, Ahumada and Watson). Measured on the
#: 14 RGB corpus JPEGs against Pillow q80 (optimize, progressive) at equal mean
#: luma SSIM, by interpolation: table 8 about 10 % fewer bytes, table 2 (MS-SSIM
#: tuned) 7 %, table 0 (Annex K, Pillow's) 4.6 %, table 3 (ImageMagick's,
#: mozjpeg's default) under 1 %: trellis quantisation alone costs SSIM.
JPEG_QUANT_TABLE = 8
#: Table 8's quality scale is not libjpeg's Annex K scale. With trellis
#: quantisation mozjpeg q74 gave mean SSIM 0.98236 (q73: 0.98150) against
#: Pillow q80's 0.98182 on the test corpus, so a requested quality q <= 80
#: is encoded as mozjpeg q - 6; without trellis (the default since the
#: broad-corpus step prices) the same table needs q - 12 (q68: mean luma
#: SSIM 0.9855 against Pillow q80's 0.9821 on the tuning half of the broad
#: JPEGs; q66 already dropped below it). Measured at q80 only; above 80 the
#: gap closes linearly so that q100 stays q100.
JPEG_QUALITY_OFFSET = -6
JPEG_QUALITY_OFFSET_NO_TRELLIS = -12
#: mozjpeg's table 8 at quality 50 (scale 100 %), natural order, for luma and
#: chroma alike: what Pillow's encoder is given as ``qtables`` (scaled as
#: libjpeg scales Annex K) when libvips is missing, so both paths quantise alike.
JPEG_TABLE_8 = (
    14, 10, 11, 14, 19, 25, 34, 45, 10, 11, 11, 12, 15, 20, 26, 33,
    11, 11, 15, 18, 21, 25, 31, 38, 14, 12, 18, 24, 28, 33, 39, 47,
    19, 15, 21, 28, 36, 43, 51, 59, 25, 20, 25, 33, 43, 54, 64, 74,
    34, 26, 31, 39, 51, 64, 77, 91, 45, 33, 38, 47, 59, 74, 91, 108)


def jpeg_encoder_quality(quality: int, *, trellis: bool = True) -> int:
    """The table-8 quality that matches Pillow's ``quality`` in luma SSIM."""
    offset = JPEG_QUALITY_OFFSET if trellis else JPEG_QUALITY_OFFSET_NO_TRELLIS
    if quality <= 80:
        return max(1, quality + offset)
    return min(100, round(80 + offset + (quality - 80) * (20 - offset) / 20))


def jpeg_table_8(quality: int) -> list[int]:
    """Table 8 scaled for Pillow's ``qtables`` at Pillow-scale ``quality`` (no trellis),
    as libjpeg's ``jpeg_quality_scaling`` scales a base table (entries 1-255)."""
    q = jpeg_encoder_quality(quality, trellis=False)
    scale = 5000 // q if q < 50 else 200 - 2 * q
    return [min(255, max(1, (v * scale + 50) // 100)) for v in JPEG_TABLE_8]


def jpeg_encode(im: Image.Image, *, quality: int, subsampling: str, progressive: bool = True,
                exif: bytes | None = None, icc: bytes | None = None,
                fast: bool = False, optimize_scans: bool = True,
                trellis: bool = True) -> bytes | None:
    """JPEG bytes from libvips' mozjpeg encoder; ``None`` when unavailable or unsuitable.

    ``im`` is an ``L`` or ``RGB`` image, ``quality`` on Pillow's scale
    (mapped by :func:`jpeg_encoder_quality`, which depends on ``trellis``),
    ``subsampling`` ``4:4:4`` or ``4:2:0`` (libvips has no 4:2:2: ``None``,
    so the caller uses Pillow). Quantisation table 8 and optimised Huffman
    coding always; ``trellis`` adds trellis quantisation (with overshoot
    deringing: +262 % time over the default effort, about 3.6x, for ~1 %
    fewer bytes at equal SSIM on the broad corpus). ``progressive`` writes progressive scans,
    searched by mozjpeg when ``optimize_scans``. ``fast`` (quality search
    probes) skips the progressive scans and Huffman optimisation, which do
    not change the pixels. Only ``exif`` and ``icc`` are written, verbatim as
    given (as Pillow would).
    """
    vips = _module("vips")
    if vips is None or im.mode not in ("L", "RGB") or subsampling not in ("4:4:4", "4:2:0"):
        return None
    try:
        bands = 1 if im.mode == "L" else 3
        img = vips.Image.new_from_memory(im.tobytes(), im.width, im.height, bands, "uchar")
        img = img.copy(interpretation="b-w" if bands == 1 else "srgb")
        full = progressive and not fast
        data = img.jpegsave_buffer(
            Q=jpeg_encoder_quality(quality, trellis=trellis), quant_table=JPEG_QUANT_TABLE,
            trellis_quant=trellis, overshoot_deringing=trellis, optimize_coding=not fast, interlace=full,
            optimize_scans=full and optimize_scans, subsample_mode="off" if subsampling == "4:4:4" else "on",
            keep=vips.ForeignKeep.NONE)
        # Metadata is spliced in afterwards rather than handed to libvips: it
        # rewrites EXIF (adds Orientation and resolution tags) and, measured
        # with 8.18, drops an attached sRGB profile. This way the bytes are the
        # ones Pillow's writer would have stored.
        return add_jpeg_metadata(bytes(data), exif=exif, icc=icc)
    except Exception:
        return None


def avif_lossless(im: Image.Image, *, effort: int = 6, icc: bytes | None = None,
                  exif: bytes | None = None) -> bytes | None:
    """Lossless AVIF bytes from libvips (RGB stored with the identity matrix, 4:4:4), or ``None``.

    ``im`` is an ``L``, ``LA``, ``RGB`` or ``RGBA`` image. ``None`` when
    pyvips is missing or disabled, or its libvips cannot write AV1. ``effort``
    is pyimgopt's (AVIF speed ``12 - effort``, libvips effort ``effort - 3``).
    Only ``icc`` and ``exif`` are written; the caller verifies the pixels.
    """
    vips = _module("vips")
    if vips is None or im.mode not in ("L", "LA", "RGB", "RGBA"):
        return None
    try:
        bands = len(im.getbands())
        img = vips.Image.new_from_memory(im.tobytes(), im.width, im.height, bands, "uchar")
        img = img.copy(interpretation="b-w" if bands <= 2 else "srgb")
        if icc:
            img.set_type(vips.GValue.blob_type, "icc-profile-data", icc)
        if exif:
            img.set_type(vips.GValue.blob_type, "exif-data",
                         exif if exif.startswith(b"Exif\x00\x00") else b"Exif\x00\x00" + exif)
        keep = vips.ForeignKeep.ICC * bool(icc) | vips.ForeignKeep.EXIF * bool(exif)
        data = img.heifsave_buffer(compression="av1", lossless=True, effort=max(0, min(9, effort - 3)),
                                   keep=keep or vips.ForeignKeep.NONE)
        return bytes(data)
    except Exception:
        return None
