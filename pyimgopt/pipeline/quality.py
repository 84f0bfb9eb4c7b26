"""Quality targets: find the smallest encoding that still looks right.

Owns the perceptual search behind ``Settings(target_ssim=...)`` — bisection on
the encoder quality, each step encoded, decoded and compared to the resized
source with :func:`.perceptual.score` (the luma SSIM, held down by a chroma
check so colour damage cannot pass on luma alone) — and the choice behind ``format="auto"``:
each candidate format at the target, smallest wins (an animation's lossy
candidates are checked on a sample of frames). The reference and every
decoded candidate are flattened onto the background the same way, so alpha
images are compared as they would be seen.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..settings import BROWSER_FORMATS, Settings
from . import jxl, perceptual
from .decode import Decoded
from .encode import Encoded, encode, flatten_rgb, has_avif

__all__ = ["DEFAULT_AUTO_TARGET", "Candidate", "reference", "measure", "measure_frames",
           "encode_to_target", "auto_formats"]

#: The SSIM target ``format="auto"`` uses when ``target_ssim`` is not given.
DEFAULT_AUTO_TARGET = 0.985
#: Lowest encoder quality the search will try: below it artefacts are obvious
#: whatever SSIM says.
MIN_QUALITY = 20
_MIN_SIDE = 7  # the SSIM window; smaller images are not searched


@dataclass
class Candidate:
    encoded: Encoded
    ssim: float | None
    notes: list[str]


def reference(dec: Decoded, background: tuple[int, int, int]) -> np.ndarray:
    """The first frame as an RGB array, alpha flattened onto ``background``."""
    return flatten_rgb(dec.frames[0], background)


def measure(data: bytes, ref: np.ndarray, background: tuple[int, int, int]) -> float:
    """:func:`.perceptual.score` of the decoded ``data`` against ``ref`` (0.0 if the sizes differ)."""
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        got = flatten_rgb(im, background)
    if got.shape != ref.shape:
        return 0.0
    return perceptual.score(ref, got)


#: Frames of an animation compared by :func:`measure_frames`, evenly spaced.
ANIMATION_SAMPLE = 6


def measure_frames(data: bytes, dec: Decoded, background: tuple[int, int, int]) -> float:
    """Lowest :func:`.perceptual.score` over up to ``ANIMATION_SAMPLE`` evenly spaced frames.

    Both sides are whole composited frames (the decoder gives them so) flattened
    onto ``background``; a frame count that differs reads as 0.0. A sample, not
    every frame, keeps the cost bounded for long animations; the frames between
    are coded from the same palette and quality, so they rarely differ much.
    """
    n = len(dec.frames)
    picks = sorted({round(i * (n - 1) / max(1, ANIMATION_SAMPLE - 1)) for i in range(min(n, ANIMATION_SAMPLE))})
    worst = 1.0
    with Image.open(io.BytesIO(data)) as im:
        if getattr(im, "n_frames", 1) != n:
            return 0.0
        for index in picks:
            im.seek(index)
            got = flatten_rgb(im.convert("RGBA"), background)
            ref = flatten_rgb(dec.frames[index], background)
            if got.shape != ref.shape:
                return 0.0
            if min(ref.shape[:2]) >= _MIN_SIDE:
                worst = min(worst, perceptual.score(ref, got))
    return worst


def searchable(dec: Decoded, fmt: str, lossless: bool) -> bool:
    """Whether a quality search applies: a lossy format, one frame, big enough to measure."""
    w, h = dec.size
    return fmt in ("jpeg", "webp", "avif", "jxl") and not lossless and len(dec.frames) == 1 and min(w, h) >= _MIN_SIDE


def encode_to_target(
    dec: Decoded,
    fmt: str,
    s: Settings,
    target: float,
    *,
    source_format: str,
    source_lossless: bool,
) -> Candidate:
    """Encode ``dec`` as ``fmt`` at the lowest quality whose SSIM meets ``target``.

    Bisection over [``MIN_QUALITY``, cap], where the cap is ``s.quality`` (or
    100) and, for JPEG from JPEG, the source's own quality: about seven fast
    probe encodes, then one or two real ones.
    When even the cap misses the target, the cap's encoding is returned with a
    note: the search never goes below what the caller allowed.
    """
    ref = reference(dec, s.background_rgb)
    bg = s.background_rgb

    def at(q: int, fast: bool) -> tuple[Encoded, float]:
        enc = encode(dec, fmt, s.replace(quality=q), source_format=source_format,
                     source_lossless=source_lossless, fast=fast)
        return enc, measure(enc.data, ref, bg)

    cap = s.quality if s.quality is not None else 100
    if fmt == "jpeg" and source_format == "jpeg" and dec.source_quality:
        cap = min(cap, dec.source_quality)
    # Bisect with the fast encoder (for JPEG its pixels are exactly the final
    # ones; for WebP/AVIF close), then encode the answer once for real and
    # step up while the real encoding still misses the target.
    lo, hi = min(MIN_QUALITY, cap), cap
    if at(hi, True)[1] < target:
        lo = hi
    while lo < hi:
        mid = (lo + hi) // 2
        if at(mid, True)[1] >= target:
            hi = mid
        else:
            lo = mid + 1
    q = hi
    enc, value = at(q, False)
    while value < target and q < cap:
        q = min(cap, q + 2)
        enc, value = at(q, False)
    notes = [] if value >= target else [f"{fmt} misses target SSIM {target} even at q{q}"]
    return Candidate(enc, value, notes)


def auto_formats(dec: Decoded, source_format: str, in_place: bool,
                 allowed: tuple[str, ...] = BROWSER_FORMATS) -> list[str]:
    """The candidate formats ``format="auto"`` tries for this image, among ``allowed``.

    In place the source format is kept whatever ``allowed`` says. JPEG XL is
    tried only when allowed and its codec is installed.
    """
    if in_place:
        return [source_format]
    return [f for f in _auto_formats(dec, source_format) if f in allowed
            and (f != "jxl" or jxl.available())]


def _auto_formats(dec: Decoded, source_format: str) -> list[str]:
    mode = dec.mode
    has_alpha = mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in dec.frames[0].info)
    if len(dec.frames) > 1:
        out = ["webp"]
        if source_format in ("gif", "png"):
            out.append(source_format)
        return out
    out = [] if has_alpha else ["jpeg"]
    out.append("webp")
    if has_avif():
        out.append("avif")
    out.append("jxl")
    few_colours = dec.frames[0].getcolors(256) is not None
    if has_alpha or few_colours or source_format in ("png", "gif", "bmp", "tiff"):
        out.append("png")
    return out
