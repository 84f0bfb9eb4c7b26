"""Optional best-in-class encoders: oxipng, libimagequant, mozjpeg's lossless pass.

Owns access to the optional PyPI packages ``pyoxipng`` (PNG filter search and
better deflate), ``imagequant`` (palette quantisation with dithering) and
``mozjpeg-lossless-optimization`` (re-optimising a JPEG's entropy coding
without touching its pixels). Each is imported once; when one is missing the
pipeline falls back to Pillow and says so in the result's notes, once per
result. Codec threads are limited to one (``PYIMGOPT_CODEC_THREADS``) so a
pool of sidecars, not each codec, owns the parallelism.
"""

from __future__ import annotations

import functools
import importlib
import os

from PIL import Image

__all__ = ["available", "png_optimize", "jpeg_lossless", "quantize", "missing_note"]

_MODULES = {
    "oxipng": "oxipng",
    "imagequant": "imagequant",
    "mozjpeg": "mozjpeg_lossless_optimization",
}
#: Set PYIMGOPT_DISABLE=oxipng,mozjpeg to force the Pillow fallbacks (tests, debugging).
_DISABLE_ENV = "PYIMGOPT_DISABLE"


@functools.lru_cache(maxsize=None)
def _module(name: str):
    disabled = {x.strip() for x in os.environ.get(_DISABLE_ENV, "").split(",") if x.strip()}
    if name in disabled:
        return None
    try:
        return importlib.import_module(_MODULES[name])
    except Exception:  # ImportError, or a broken binary wheel: fall back, never crash
        return None


def available(name: str) -> bool:
    """Whether the optional encoder ``name`` (oxipng, imagequant, mozjpeg) is usable."""
    return _module(name) is not None


def missing_note(name: str) -> str:
    pkg = {"oxipng": "pyoxipng", "imagequant": "imagequant",
           "mozjpeg": "mozjpeg-lossless-optimization"}[name]
    return f"{pkg} not installed: Pillow fallback used"


def png_optimize(data: bytes, effort: int) -> bytes | None:
    """oxipng over a PNG (lossless); ``None`` when oxipng is missing or refuses it.

    Effort 0-3 → oxipng level 1 (fast), 4-7 → level 2 (default), 8-9 → level 4.
    """
    ox = _module("oxipng")
    if ox is None:
        return None
    level = 1 if effort <= 3 else 2 if effort <= 7 else 4
    try:
        return ox.optimize_from_memory(data, level=level)
    except Exception:
        return None


def jpeg_lossless(data: bytes, *, keep_markers: bool) -> bytes | None:
    """mozjpeg's lossless re-optimisation (same pixels); ``None`` when unavailable.

    ``keep_markers`` copies every APPn/COM segment; otherwise only the ICC
    profile is kept (colour meaning must not change).
    """
    mz = _module("mozjpeg")
    if mz is None:
        return None
    markers = mz.COPY_MARKERS.ALL if keep_markers else mz.COPY_MARKERS.ICC
    try:
        return mz.optimize(data, copy=markers)
    except Exception:
        return None


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

