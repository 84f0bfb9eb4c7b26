"""Quality targets: find the smallest encoding that still looks right.

Owns the perceptual search behind ``Settings(target_ssim=...)`` — an
interpolating search on the encoder quality (on a small proxy of a large
image, confirmed once at full size), each step encoded, decoded and compared
to the resized source with :func:`.perceptual.score` (the luma SSIM, held down by a chroma
check so colour damage cannot pass on luma alone) — and the choice behind ``format="auto"``:
each candidate format at the target, smallest wins (an animation's lossy
candidates are checked on a sample of frames, the last included). The
reference and every decoded candidate are flattened onto the background the
same way and, for an image with transparency, also onto the opposite
background (black for a light one): the lower score counts, so an alpha
error cannot hide behind pixels the colour of the background.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from ..settings import BROWSER_FORMATS, Settings
from . import apnganim, gifanim, jxl, perceptual
from .decode import Decoded
from .encode import Encoded, encode, has_avif
from .frames import flatten_rgb, looks_like_graphic, opposite

__all__ = ["DEFAULT_AUTO_TARGET", "Candidate", "Reference", "reference", "measure",
           "measure_frames", "sample_frames", "output_frames", "proxy", "search_quality", "Plan",
           "plan_target", "confirm_target", "encode_to_target", "auto_formats"]

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


#: Above this many pixels the quality search runs on a proxy (:func:`proxy`):
#: a mosaic of tiles from the whole image, then one full-size encode confirms.
PROXY_PIXELS = 200_000
_PROXY_GRID = 4  # tiles per side of the mosaic
#: Tile side, px: a multiple of every codec's block (JPEG 8/16, WebP 16, AVIF 64);
#: 64 px tiles (a 256 px mosaic) below ``_PROXY_BIG`` pixels, 128 px above.
_PROXY_TILE = 128
_PROXY_BIG = 1_500_000
#: Where the search starts, per format (the answer for typical photos at 0.985).
_START = {"jpeg": 80, "webp": 80, "avif": 60, "jxl": 80}
_MAX_PROBES = 6
_CONFIRM_STEPS = 3  # full-size re-encodes at most, when the proxy's answer misses at full size


def proxy(dec: Decoded) -> Decoded | None:
    """A small stand-in for a large still image, or ``None`` when it is small enough.

    ``_PROXY_GRID``² tiles of 64 or ``_PROXY_TILE`` px, evenly spaced over the whole
    frame (so flat sky and busy detail count as they do in the image), pasted
    into one mosaic on the codecs' block grid. SSIM is a mean over windows and
    bytes a sum over blocks, so the mosaic's quality-to-SSIM curve tracks the
    image's; the answer is confirmed at full size all the same.
    """
    frame = dec.frames[0]
    w, h = frame.size
    if len(dec.frames) != 1 or w * h <= PROXY_PIXELS or min(w, h) < _PROXY_GRID * _PROXY_TILE // 4:
        return None
    n, t = _PROXY_GRID, _PROXY_TILE if w * h >= _PROXY_BIG else _PROXY_TILE // 2
    tw, th = min(t, w // n), min(t, h // n)
    mosaic = Image.new(frame.mode, (tw * n, th * n))
    for j in range(n):
        for i in range(n):
            x = min(w - tw, max(0, round((i + 0.5) * w / n - tw / 2)))
            y = min(h - th, max(0, round((j + 0.5) * h / n - th / 2)))
            mosaic.paste(frame.crop((x, y, x + tw, y + th)), (i * tw, j * th))
    if frame.mode == "P":
        mosaic.putpalette(frame.getpalette(rawmode="RGBA") or [], rawmode="RGBA")
        if "transparency" in frame.info:  # a tRNS index: the mosaic is seen as the frame is
            mosaic.info["transparency"] = frame.info["transparency"]
    return replace(dec, frames=[mosaic], notes=[])


def search_quality(at, lo: int, hi: int, target: float, start: int) -> int:
    """The lowest quality in [lo, hi] whose ``at(q)`` (an SSIM, rising with q) meets ``target``.

    Interpolates between the nearest probes on either side of the target
    (regula falsi on integers) instead of bisecting: about four probes instead
    of seven. Returns ``hi`` when nothing probed meets the target.
    """
    # The cap is assumed to meet the target at SSIM 1 until probed: a virtual
    # point that lets the first misses interpolate towards it. Interpolation is
    # the Illinois variant of regula falsi: when one side moves twice in a
    # row, the other side's distance to the target is halved, so a curved
    # SSIM(q) cannot pin the search to one end.
    ok_q, ok_f = hi, 1.0 - target  # lowest quality known (or assumed) to meet the target
    bad_q, bad_f = lo - 1, None  # highest quality known to miss it (f = SSIM - target)
    q = min(hi, max(lo, start))
    last, hits = "", 0
    for _ in range(_MAX_PROBES):
        f = at(q) - target
        side = "ok" if f >= 0 else "bad"
        if side == "ok":
            ok_q, ok_f, hits = q, f, hits + 1
            if last == "ok" and bad_f is not None:
                bad_f /= 2
        else:
            bad_q, bad_f = q, f
            if last == "bad":
                ok_f /= 2
        last = side
        if ok_q - bad_q <= 1:
            break
        if bad_f is not None:
            guess = bad_q + -bad_f * (ok_q - bad_q) / (ok_f - bad_f)
            q = min(ok_q - 1, max(bad_q + 1, round(guess)))
        else:  # only met so far: step down, further each time
            q = max(bad_q + 1, ok_q - 10 * 2 ** (hits - 1))
    return ok_q


@dataclass
class Plan:
    """A quality chosen by :func:`plan_target`, before the full-size confirmation."""

    fmt: str
    quality: int
    cap: int
    probes: dict[int, float]
    proxy_bytes: int | None  # the proxy encoded for real at ``quality`` (ranking formats)
    fast_bytes: int | None = None  # the fast probe at ``quality``, when it was probed


def _encode_at(d: Decoded, fmt: str, s: Settings, q: int, fast: bool, source_format: str,
               source_lossless: bool) -> Encoded:
    return encode(d, fmt, s.replace(quality=q), source_format=source_format,
                  source_lossless=source_lossless, fast=fast)


def plan_target(dec: Decoded, fmt: str, s: Settings, target: float, *, source_format: str,
                source_lossless: bool, small: Decoded | None, rank: bool = False) -> Plan:
    """The quality to try at full size: searched with the fast encoder on ``small`` (a
    :func:`proxy`) or, without one, on ``dec`` itself (:func:`search_quality`).

    The cap is ``s.quality`` (or 100) and, for JPEG from JPEG, the source's own
    quality. With ``rank`` and a proxy, the proxy is also encoded for real at
    the answer, so that formats can be compared before any full-size encode.
    """
    bg = s.background_rgb
    probe_dec = small if small is not None else dec
    probe_ref = reference(probe_dec, bg)
    cap = s.quality if s.quality is not None else 100
    if fmt == "jpeg" and source_format == "jpeg" and dec.source_quality:
        cap = min(cap, dec.source_quality)
    probes: dict[int, float] = {}
    sizes: dict[int, int] = {}

    def probe_at(q: int) -> float:
        enc = _encode_at(probe_dec, fmt, s, q, True, source_format, source_lossless)
        probes[q], sizes[q] = measure(enc.data, probe_ref, bg, fmt), len(enc.data)
        return probes[q]

    q = search_quality(probe_at, min(MIN_QUALITY, cap), cap, target, _START.get(fmt, 80))
    size = None
    if rank and small is not None:
        size = len(_encode_at(small, fmt, s, q, False, source_format, source_lossless).data)
    return Plan(fmt, q, cap, probes, size, sizes.get(q))


def confirm_target(dec: Decoded, plan: Plan, s: Settings, target: float, *, source_format: str,
                   source_lossless: bool) -> Candidate:
    """``plan``'s quality encoded for real at full size and measured there; while it
    misses ``target`` the quality steps up (at most ``_CONFIRM_STEPS`` times, then
    to the cap). When even the cap misses, the cap's encoding is returned with a note."""
    ref = reference(dec, s.background_rgb)
    q, cap = plan.quality, plan.cap

    def at(q: int) -> tuple[Encoded, float]:
        enc = _encode_at(dec, plan.fmt, s, q, False, source_format, source_lossless)
        return enc, measure(enc.data, ref, s.background_rgb, plan.fmt)

    enc, value = at(q)
    steps = 0
    while value < target and q < cap:
        steps += 1
        q = cap if steps > _CONFIRM_STEPS else min(cap, q + max(2, _step_for(plan.probes, q, target - value)))
        enc, value = at(q)
    notes = [] if value >= target else [f"{plan.fmt} misses target SSIM {target} even at q{q}"]
    return Candidate(enc, value, notes)


def encode_to_target(
    dec: Decoded,
    fmt: str,
    s: Settings,
    target: float,
    *,
    source_format: str,
    source_lossless: bool,
    small: Decoded | None | bool = True,
) -> Candidate:
    """Encode ``dec`` as ``fmt`` at the lowest quality whose SSIM meets ``target``.

    The quality is searched with the fast encoder (:func:`plan_target`) on the
    image itself when it is small, else on its :func:`proxy` (``small``: a
    proxy already made, ``True`` to make one here, ``None`` for none), then
    encoded once for real at full size and measured there
    (:func:`confirm_target`): the SSIM reported is always the full-size one,
    and the search never goes below what the caller allowed.
    """
    if small is True:
        small = proxy(dec)
    plan = plan_target(dec, fmt, s, target, source_format=source_format,
                       source_lossless=source_lossless, small=small or None)
    return confirm_target(dec, plan, s, target, source_format=source_format,
                          source_lossless=source_lossless)


def _step_for(probes: dict[int, float], q: int, short: float) -> int:
    """Quality steps expected to make up ``short`` SSIM, from the probes' slope near ``q``."""
    above = sorted(p for p in probes if p > q)
    below = sorted(p for p in probes if p <= q)
    if above and below:
        a, b = below[-1], above[0]
        slope = (probes[b] - probes[a]) / (b - a)
        if slope > 0:
            return math.ceil(short / slope)
    return 3


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
