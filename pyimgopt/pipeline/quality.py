"""Quality targets: find the smallest encoding that still looks right.

Owns how an encoding is judged against the resized source —
:func:`.perceptual.score` (the luma SSIM, held down by a chroma check so
colour damage cannot pass on luma alone) of the decoded output, an
animation's lossy candidates checked on a sample of frames, the last
included — for the search behind ``Settings(target_ssim=...)``
(:mod:`.search`), and which candidate formats ``format="auto"`` tries
(:func:`auto_formats`; the pick itself is :mod:`.choose`'s). The
reference and every decoded candidate are flattened onto the background the
same way and, for an image with transparency, also onto the opposite
background (black for a light one): the lower score counts, so an alpha
error cannot hide behind pixels the colour of the background.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..settings import BROWSER_FORMATS, Settings
from . import apnganim, gifanim, jxl, perceptual
from .decode import Decoded
from .encode import Encoded, encode, has_avif
from .frames import flatten_rgb, looks_like_graphic, opposite

__all__ = ["DEFAULT_AUTO_TARGET", "MIN_QUALITY", "Candidate", "Reference", "reference", "measure",
           "measure_frames", "sample_frames", "output_frames", "searchable", "sizable", "encode_to_size",
           "auto_formats"]

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


@dataclass
class Reference:
    """The source as a viewer sees it: composited on the background, and — when it has
    alpha — also on the opposite of it (black for a light background, else white)."""

    composites: list[np.ndarray]  # RGB uint8, one per background
    backgrounds: list[tuple[int, int, int]]


def reference(dec: Decoded, background: tuple[int, int, int], index: int = 0) -> Reference:
    """Frame ``index`` of ``dec`` as a :class:`Reference`.

    A score on one background alone cannot see alpha: white pixels over a
    soft alpha look the same whatever the alpha on white. Two backgrounds,
    far apart, make every alpha error show on at least one of them; only
    images with transparency pay for the second comparison.
    """
    frame = dec.frames[index]
    bgs = [background]
    if frame.has_transparency_data and frame.convert("RGBA").getchannel("A").getextrema()[0] < 255:
        bgs.append(opposite(background))
    return Reference([flatten_rgb(frame, bg) for bg in bgs], bgs)


def _holds_alpha(fmt: str | None) -> bool:
    return fmt not in ("jpeg",)  # JPEG is flattened on the background on purpose


def _score(got: Image.Image, ref: Reference | np.ndarray, background: tuple[int, int, int],
           fmt: str | None) -> float:
    if isinstance(ref, np.ndarray):
        ref = Reference([ref], [background])
    pairs = list(zip(ref.composites, ref.backgrounds))
    if not _holds_alpha(fmt):
        pairs = pairs[:1]
    worst = 1.0
    for want, bg in pairs:
        have = flatten_rgb(got, bg)
        if have.shape != want.shape:
            return 0.0
        worst = min(worst, perceptual.score(want, have))
    return worst


def measure(data: bytes, ref: Reference | np.ndarray,
            background: tuple[int, int, int] | str | None = (255, 255, 255),
            fmt: str | None = None) -> float:
    """:func:`.perceptual.score` of the decoded ``data`` against ``ref`` (0.0 if the sizes differ).

    With a :class:`Reference` of an image with alpha, the lowest score over its
    backgrounds (unless ``fmt`` cannot hold alpha: JPEG is judged on the
    background it was flattened on). A plain RGB array is compared on ``background``.
    """
    if isinstance(background, str) or background is None:  # measure(data, ref, fmt)
        fmt, background = background, (255, 255, 255)
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return _score(im, ref, background, fmt)


#: Frames of an animation compared by :func:`measure_frames`, evenly spaced.
ANIMATION_SAMPLE = 6


def sample_frames(n: int) -> list[int]:
    """Up to :data:`ANIMATION_SAMPLE` frame indices, evenly spaced, first and last included."""
    k = min(n, ANIMATION_SAMPLE)
    return sorted({round(i * (n - 1) / max(1, k - 1)) for i in range(k)})


def output_frames(data: bytes, wanted: set[int] | None = None) -> list[Image.Image | None] | None:
    """The frames of an encoded animation as displayed (GIF through :mod:`.gifanim`, APNG
    through :mod:`.apnganim`, WebP through libwebp's demuxer in Pillow); only the
    ``wanted`` indices are made (the others are ``None``). ``None`` when it does not parse."""
    if data[:6] in (b"GIF87a", b"GIF89a") or data[:8] == b"\x89PNG\r\n\x1a\n":
        try:
            return (gifanim if data[:3] == b"GIF" else apnganim).composite(data, wanted=wanted)
        except ValueError:
            return None
    with Image.open(io.BytesIO(data)) as im:
        out: list[Image.Image | None] = []
        for index in range(getattr(im, "n_frames", 1)):
            if wanted is None or index in wanted:
                im.seek(index)
                out.append(im.convert("RGBA"))
            else:
                out.append(None)
        return out


def measure_frames(data: bytes, dec: Decoded, background: tuple[int, int, int],
                   fmt: str | None = None) -> float:
    """Lowest :func:`.perceptual.score` over up to ``ANIMATION_SAMPLE`` evenly spaced frames.

    Both sides are whole composited frames (GIF outputs composited as browsers
    do, :mod:`.gifanim`), judged as :func:`measure` judges one; a frame count
    that differs reads as 0.0. A sample, first and last frames included, not
    every frame, keeps the cost bounded for long animations.
    """
    n = len(dec.frames)
    picks = sample_frames(n)
    got = output_frames(data, set(picks))
    if got is None or len(got) != n:
        return 0.0
    worst = 1.0
    for index in picks:
        ref = reference(dec, background, index)
        if min(ref.composites[0].shape[:2]) >= _MIN_SIDE:
            worst = min(worst, _score(got[index], ref, background, fmt))
        elif got[index].size != dec.frames[index].size:
            return 0.0
    return worst


def searchable(dec: Decoded, fmt: str, lossless: bool) -> bool:
    """Whether a quality search applies: a lossy format, one frame, big enough to measure."""
    w, h = dec.size
    return fmt in ("jpeg", "webp", "avif", "jxl") and not lossless and len(dec.frames) == 1 and min(w, h) >= _MIN_SIDE


def sizable(dec: Decoded, fmt: str, lossless: bool) -> bool:
    """Whether a *size* search applies: a lossy format that holds these frames — a still
    image of any size (JPEG, WebP, AVIF, JPEG XL) or an animation (WebP, AVIF). Unlike
    :func:`searchable` no score is needed: only real encodes and their sizes."""
    if lossless or fmt not in ("jpeg", "webp", "avif", "jxl"):
        return False
    return len(dec.frames) == 1 or fmt in ("webp", "avif")


def encode_to_size(
    dec: Decoded,
    fmt: str,
    s: Settings,
    limit: int,
    *,
    source_format: str,
    source_lossless: bool,
) -> Candidate:
    """Encode ``dec`` as ``fmt`` at the highest quality whose output is at most ``limit`` bytes.

    The quality is searched in [``MIN_QUALITY``, cap] by bisection on real
    encodes (sizes of the fast probe encoder differ), where the cap is the
    quality a run without a size target would write (``s.quality`` or the
    format's default, and for JPEG from JPEG the source's own): a size target
    is a ceiling, never a reason to raise the quality. When even
    ``MIN_QUALITY`` does not fit, that smallest encoding is returned (the
    caller sees it is too large). The chosen encoding's score is measured
    (``ssim``), so ``target_ssim`` and ``format="auto"`` can judge it: an
    animation's on sampled frames (:func:`measure_frames`); an image with a
    side under the SSIM window has none (``None``).
    """

    def at(q: int | None) -> Encoded:
        return encode(dec, fmt, s if q is None else s.replace(quality=q), source_format=source_format,
                      source_lossless=source_lossless)

    first = at(None)  # the quality a run without a size target writes: the cap
    cap = first.quality
    best = first
    if len(first.data) > limit and cap is not None and cap > MIN_QUALITY:
        low = at(MIN_QUALITY)
        best = low
        if len(low.data) <= limit:
            lo, hi = MIN_QUALITY, cap  # lo fits, hi does not
            while hi - lo > 1:
                mid = (lo + hi) // 2
                enc = at(mid)
                if len(enc.data) <= limit:
                    lo, best = mid, enc
                else:
                    hi = mid
    notes = [] if len(best.data) <= limit else [
        f"{fmt} does not fit {limit} bytes even at q{best.quality} ({len(best.data)} bytes)"]
    if min(dec.size) < _MIN_SIDE:
        score = None
    elif len(dec.frames) > 1:
        score = measure_frames(best.data, dec, s.background_rgb, fmt)
    else:
        score = measure(best.data, reference(dec, s.background_rgb), fmt=fmt)
    return Candidate(best, score, notes)


def auto_formats(dec: Decoded, source_format: str, in_place: bool,
                 allowed: tuple[str, ...] = BROWSER_FORMATS) -> list[str]:
    """The candidate formats ``format="auto"`` tries for this image, among ``allowed``.

    In place the source format is kept whatever ``allowed`` says. JPEG XL is
    tried only when allowed and its codec is installed. Formats that cannot
    win for this content are not tried: JPEG when WebP or AVIF may be
    chosen (at an equal SSIM target it won 0 of 40 broad-corpus images
    against them), PNG for a photo (many colours, not a graphic: lossless
    PNG won 0 of 33 and never beats lossless WebP there) unless WebP is not
    allowed.
    """
    if in_place:
        return [source_format]
    out = [f for f in _auto_formats(dec, source_format) if f in allowed
           and (f != "jxl" or jxl.available())]
    modern = [f for f in out if f in ("webp", "avif")]
    if modern and "jpeg" in out and len(dec.frames) == 1:
        out.remove("jpeg")
    if "png" in out and "webp" in out and len(dec.frames) == 1 and not _palette_like(dec, source_format):
        out.remove("png")
    return out


def _palette_like(dec: Decoded, source_format: str) -> bool:
    """Few colours (a palette holds them exactly), or a graphic from a lossless source (a
    lossy palette may win: it did once in 69 broad-corpus files, a 2 MP cloud
    graphic). A graphic from a JPEG (a smooth wallpaper) never gained from PNG."""
    if source_format in ("jpeg", "heif", "avif"):  # decoded lossy pixels: never worth it
        return False  # (a gray JPEG has <= 256 values and cost 1.6 s of PNG each)
    frame = dec.frames[0]
    if frame.getcolors(256) is not None:
        return True
    return source_format in ("png", "gif", "bmp", "tiff") and looks_like_graphic(frame)


def _auto_formats(dec: Decoded, source_format: str) -> list[str]:
    mode = dec.mode
    has_alpha = mode in ("RGBA", "LA", "PA") or (mode == "P" and dec.frames[0].has_transparency_data)
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
