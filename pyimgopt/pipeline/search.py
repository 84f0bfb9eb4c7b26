"""Quality search: the lowest encoder quality whose output still meets an SSIM target.

Owns how ``Settings(target_ssim=...)`` and ``format="auto"`` find a quality
without encoding the whole image again and again: a large image is searched
on a small :func:`proxy` (a mosaic of tiles from the whole frame), the search
interpolates between probes (:func:`search_quality`: Illinois regula falsi,
at most ``_MAX_PROBES`` fast encodes) instead of bisecting, and the answer is
encoded once for real at full size and measured there (:func:`confirm_target`),
searched again on a few full-size encodes when it misses. :func:`plan_target` and :func:`confirm_target` are
separate so that ``format="auto"`` can rank formats on their plans before any
full-size encode (:mod:`.choose`). Scores come from :mod:`.quality`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from PIL import Image

from ..settings import Settings
from .decode import Decoded
from .encode import Encoded, encode
from .quality import MIN_QUALITY, Candidate, measure, reference

__all__ = ["PROXY_PIXELS", "proxy", "search_quality", "Plan", "plan_target", "confirm_target",
           "encode_to_target"]

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
_CONFIRM_STEPS = 5  # full-size re-encodes at most (then the cap), when the proxy's answer misses
_PROXY_TRUST = 0.01  # a full-size miss by more SSIM than this: the proxy's slope is no guide
_MAX_STEP = 10  # quality points one full-size re-encode may step up by
_BRACKET = 2  # a miss this close below a met quality ends the full-size search


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


def search_quality(at, lo: int, hi: int, target: float, start: int, *,
                   max_probes: int = _MAX_PROBES, tol: int = 1,
                   known: tuple[int, float] | None = None) -> int:
    """The lowest quality in [lo, hi] whose ``at(q)`` (an SSIM, rising with q) meets ``target``.

    Interpolates between the nearest probes on either side of the target
    (regula falsi on integers) instead of bisecting: about four probes instead
    of seven. At most ``max_probes`` calls of ``at``; stops once a miss is
    within ``tol`` below a hit. ``known``: a (quality, SSIM) below ``lo``
    already measured to miss. Returns ``hi`` when nothing probed meets the
    target.
    """
    # The cap is assumed to meet the target at SSIM 1 until probed: a virtual
    # point that lets the first misses interpolate towards it. Interpolation is
    # the Illinois variant of regula falsi: when one side moves twice in a
    # row, the other side's distance to the target is halved, so a curved
    # SSIM(q) cannot pin the search to one end.
    ok_q, ok_f = hi, 1.0 - target  # lowest quality known (or assumed) to meet the target
    bad_q, bad_f = lo - 1, None  # highest quality known to miss it (f = SSIM - target)
    if known is not None:
        bad_q, bad_f = known[0], known[1] - target
    q = min(hi, max(lo, start))
    last, hits = "", 0
    for _ in range(max_probes):
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
        if ok_q - bad_q <= tol:
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
    """``plan``'s quality encoded for real at full size and measured there. When it
    misses ``target``, the quality is searched again on full-size encodes between it
    and the cap (:func:`_full_size_search`: steps of at most ``_MAX_STEP``, then
    regula falsi inside the bracket, at most ``_CONFIRM_STEPS`` more encodes, then
    the cap), so a proxy that misjudges the image costs a few encodes, never a
    jump to the cap. When even the cap misses, the cap's encoding is returned with
    a note."""
    ref = reference(dec, s.background_rgb)
    q, cap = plan.quality, plan.cap

    def at(q: int) -> tuple[Encoded, float]:
        enc = _encode_at(dec, plan.fmt, s, q, False, source_format, source_lossless)
        return enc, measure(enc.data, ref, s.background_rgb, plan.fmt)

    enc, value = at(q)
    if value < target and q < cap:
        q, enc, value = _full_size_search(at, q, value, cap, target, plan.probes)
    notes = [] if value >= target else [f"{plan.fmt} misses target SSIM {target} even at q{q}"]
    return Candidate(enc, value, notes)


def _full_size_search(at, q: int, value: float, cap: int, target: float,
                      probes: dict[int, float]) -> tuple[int, Encoded, float]:
    """The lowest quality in (q, cap] found to meet ``target`` on full-size encodes
    (``at(q) -> (encoded, ssim)``), given that ``q`` scored ``value`` < target.

    :func:`search_quality` on full-size encodes between ``q`` and the cap,
    starting one proxy-slope step (at most ``_MAX_STEP``) above ``q`` when the
    miss is small, half way to the cap when it is more than ``_PROXY_TRUST``
    (the proxy misjudged the image, its slope is no guide), stopping
    when a miss is within ``_BRACKET`` below a hit, at most ``_CONFIRM_STEPS``
    encodes (plus one at the cap if none of them met the target). Returns
    (quality, its encoding, its SSIM).
    """
    seen: dict[int, tuple[Encoded, float]] = {}

    def score(nq: int) -> float:
        seen[nq] = at(nq)
        return seen[nq][1]

    if target - value > _PROXY_TRUST:  # the proxy misjudged the image: bisect first
        start = q + max(2, (cap - q) // 2)
    else:
        start = q + min(_MAX_STEP, max(2, _step_for(probes, q, target - value)))
    best = search_quality(score, q + 1, cap, target, start, max_probes=_CONFIRM_STEPS,
                          tol=_BRACKET, known=(q, value))
    if best not in seen:
        score(best)
    return best, *seen[best]


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
