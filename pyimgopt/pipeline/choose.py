"""Choose: the candidates for one decoded image, and the pick among them.

Owns encoding one output format at a quality or at a perceptual target
(:func:`encode_one`), and ``format="auto"`` (:func:`best_auto`): every allowed
candidate at the target, the lossless ones beside the lossy ones where the
source is lossless, and the smallest that meets the target wins.
"""

from __future__ import annotations

from ..errors import EncodeError, UnsupportedFormatError
from ..settings import Settings
from . import jxl, privacy, quality, search
from .encode import Encoded, encode, looks_like_graphic

__all__ = ["encode_one", "best_auto"]

#: With a proxy, a lossy format whose proxy (encoded for real at its searched
#: quality) is more than this factor above the smallest one is not encoded at
#: full size: it cannot plausibly win (AVIF and WebP differ by 20-40 % on
#: photos; the proxy tracks the whole image's bytes within a few per cent).
RANK_SLACK = 1.15
#: The same for a small image (no proxy), ranked by its fast probe encodes at
#: the searched quality.
FAST_RANK_SLACK = 1.30
#: Lossless WebP is tried beside lossy WebP for a lossless source only for
#: graphics (already tried inside the WebP encode) or images up to this many
#: pixels: on larger photos it is several times the lossy bytes at the target.
LOSSLESS_TRY_PIXELS = 250_000
#: ``format="auto"`` encodes its AVIF candidate at an effort of at most 4 (AVIF
#: speed 8): on broad-corpus photos speed 8 wrote 2.7 % more bytes than speed 6
#: in 0.31x the time, and AVIF's searches were 43 % of auto's time. From
#: ``AUTO_AVIF_BIG`` pixels at most 3 (speed 9: another +5 % bytes, 0.31x the
#: time again), where one full-size AVIF encode otherwise costs 7x the
#: keep-format run of a JPEG.
AUTO_AVIF_EFFORT = 4
AUTO_AVIF_BIG = 2_000_000


def encode_one(dec, fmt: str, s: Settings, fmt_in: str, src_lossless: bool,
               small=True) -> quality.Candidate:
    """One format: at the size target when ``target_size`` is set (the highest
    quality that fits), else at the target when ``target_ssim`` is set, else at
    ``quality``.

    ``small`` is the image's :func:`.search.proxy` when the caller made it
    (``True``: made here when needed). A lossless encode reports SSIM 1 only
    when the frames hold every source value (``Decoded.exact``): rounded
    16-bit samples or colours converted to sRGB are not the source, whatever
    the encoder keeps.
    """
    lossless = bool(s.lossless) or (
        fmt in ("webp", "jxl") and s.lossless is None and fmt_in == fmt and src_lossless)
    if s.target_size is not None and quality.sizable(dec, fmt, lossless):
        return quality.encode_to_size(dec, fmt, s, s.target_size, source_format=fmt_in,
                                      source_lossless=src_lossless)
    if s.target_ssim is not None and quality.searchable(dec, fmt, lossless):
        return search.encode_to_target(
            dec, fmt, s, s.target_ssim, source_format=fmt_in, source_lossless=src_lossless,
            small=small)
    enc = encode(dec, fmt, s, source_format=fmt_in, source_lossless=src_lossless)
    ssim_value = 1.0 if enc.lossless and dec.exact else None
    if (s.target_ssim is not None or s.target_size is not None) and not enc.lossless:
        if quality.searchable(dec, fmt, False) or (fmt in ("png", "gif") and len(dec.frames) == 1):
            ssim_value = quality.measure(enc.data, quality.reference(dec, s.background_rgb), fmt)
        elif len(dec.frames) > 1:
            # a lossy animation (e.g. GIF -> WebP under auto): checked on sampled frames
            ssim_value = quality.measure_frames(enc.data, dec, s.background_rgb, fmt)
    return quality.Candidate(enc, ssim_value, [])


#: Formats that can hold the pixels exactly, for ``format="auto"`` with ``lossless=True``
#: (AVIF's lossless mode is left out: slow, and larger than lossless WebP here).
_LOSSLESS_AUTO = ("png", "webp", "jxl", "gif")


def best_auto(dec, s: Settings, fmt_in: str, src_lossless: bool,
              jpeg_probe=None, orientation: int = 1,
              gif_kept: tuple[bytes, list[str]] | None = None) -> quality.Candidate:
    """``format="auto"``: every candidate at the target; the smallest that meets it wins.

    Candidates are the formats of :func:`.quality.auto_formats`. A large still
    image is searched on one shared :func:`.search.proxy`; the lossy formats
    are ranked by their proxy's bytes (a small image: by its fast probe
    encodes) and only those within ``RANK_SLACK`` (``FAST_RANK_SLACK``) of
    the smallest are encoded for real at full size, where every candidate's
    SSIM is measured; with a proxy, PNG is ranked against them by the proxy
    written as PNG. With JPEG XL allowed, a JPEG whose pixels do not change is also
    tried as a lossless recompression (SSIM 1, the JPEG rebuilt from it
    checked). ``gif_kept`` is the frame-for-frame GIF
    (:func:`.animation.gif_lossless`), tried beside the re-quantised one.
    With ``lossless=True`` only encodings that keep every pixel are tried
    (PNG, lossless WebP and JPEG XL, an exact GIF; nothing is ranked), and
    the smallest wins. (In place, auto is ``keep`` with a target:
    :func:`.route.run`.)
    """
    sized = s.target_size is not None  # every format searched to fit, none ranked away
    target = s.target_ssim if s.target_ssim is not None or sized else quality.DEFAULT_AUTO_TARGET
    lossless = s.lossless is True
    st = s.replace(target_ssim=target, lossless=True if lossless else None)
    tried: list[quality.Candidate] = []
    formats = quality.auto_formats(dec, fmt_in, False, s.formats_allowed)
    if lossless:
        formats = [f for f in formats if f in _LOSSLESS_AUTO]
        if fmt_in == "gif" and "gif" in s.formats_allowed and "gif" not in formats:
            formats.append("gif")
    if not formats:
        why = " losslessly" if lossless else ""
        raise UnsupportedFormatError(
            f"none of formats_allowed ({', '.join(s.formats_allowed)}) can hold this image{why} "
            f"({len(dec.frames)} frames)", stage="encode")
    small = search.proxy(dec)
    skipped: list[str] = []
    lossy = [f for f in formats if quality.searchable(dec, f, _lossless_for(f, st, fmt_in, src_lossless))]
    plans = {}
    w, h = dec.size
    if len(lossy) > 1 and not sized:
        for fmt in lossy:
            plans[fmt] = search.plan_target(dec, fmt, _auto_settings(st, fmt, w * h), target,
                                             source_format=fmt_in, source_lossless=src_lossless,
                                             small=small, rank=True)
        # With a proxy: its real encodes; without: the fast probes at the answer, whose
        # ratios between formats are looser (AVIF speed 10, WebP method 2), so more slack.
        key, slack = ("proxy_bytes", RANK_SLACK) if small is not None else ("fast_bytes", FAST_RANK_SLACK)
        known = [getattr(p, key) for p in plans.values() if getattr(p, key)]
        best = min(known) if len(known) == len(plans) else None
        for fmt, plan in plans.items():
            if best is not None and getattr(plan, key) > slack * best:
                skipped.append(f"{fmt}~{getattr(plan, key)}")
        if small is not None and best is not None and "png" in formats:
            # PNG ranked the same way: the proxy written as PNG (a palette when it meets
            # the target), against the best lossy proxy
            png = encode(small, "png", st, source_format=fmt_in, source_lossless=src_lossless)
            if len(png.data) > RANK_SLACK * best:
                skipped.append(f"png~{len(png.data)}")
    graphic = len(dec.frames) == 1 and looks_like_graphic(dec.frames[0])
    for fmt in formats:
        if fmt == "gif" and gif_kept is not None:
            kept = Encoded(data=gif_kept[0], format="gif", quality=None, lossless=True)
            tried.append(quality.Candidate(kept, 1.0, list(gif_kept[1])))
            if lossless:
                continue
        sf = _auto_settings(st, fmt, w * h)
        if any(x.startswith(f"{fmt}~") for x in skipped):
            cand = None
        elif fmt in plans:
            cand = search.confirm_target(dec, plans[fmt], sf, target, source_format=fmt_in,
                                          source_lossless=src_lossless)
        else:
            cand = encode_one(dec, fmt, sf, fmt_in, src_lossless, small=small)
        if cand is not None and lossless and not cand.encoded.lossless:
            continue  # a GIF re-quantised, a palette: not exact
        if cand is not None:
            tried.append(cand)
        webp_tried_lossless = fmt == "webp" and graphic  # the WebP encode tries it for graphics
        if (fmt in ("webp", "jxl") and src_lossless and not lossless
                and (cand is None or not cand.encoded.lossless) and not webp_tried_lossless
                and (graphic or w * h <= LOSSLESS_TRY_PIXELS)):
            tried.append(encode_one(dec, fmt, st.replace(lossless=True), fmt_in, src_lossless))
        if fmt == "jxl" and jpeg_probe is not None:
            cand = _auto_jpeg_to_jxl(jpeg_probe, s, orientation)
            if cand is not None:
                tried.append(cand)
    if not tried:
        raise UnsupportedFormatError(
            f"no format in formats_allowed ({', '.join(s.formats_allowed)}) holds this image "
            "losslessly", stage="encode")
    if sized:
        best_cand = _best_fitting(tried, s.target_size, target)
    else:
        meeting = [c for c in tried if c.ssim is None or c.ssim >= target]
        pool = meeting or [max(tried, key=lambda c: c.ssim or 0.0)]
        best_cand = min(pool, key=lambda c: len(c.encoded.data))
    sizes = ", ".join(
        f"{c.encoded.format}{'-lossless' if c.encoded.lossless else ''}={len(c.encoded.data)}"
        for c in tried
    )
    if skipped:
        what = "proxy bytes" if small is not None else "fast probe bytes"
        sizes += f" (not encoded for real, {what}: {', '.join(skipped)})"
    best_cand.notes = [*best_cand.notes, f"auto candidates: {sizes}"]
    return best_cand


def _best_fitting(tried: list[quality.Candidate], limit: int,
                  target: float | None) -> quality.Candidate:
    """With ``target_size``: among the candidates that fit ``limit`` (and meet
    ``target`` when given) the one that looks closest to the source (highest
    score; the smaller on a tie) wins; when none does, the smallest (so the
    caller can report the best size reached)."""
    def fits(c: quality.Candidate) -> bool:
        return len(c.encoded.data) <= limit and (target is None or (c.ssim or 0.0) >= target)

    fitting = [c for c in tried if fits(c)]
    if fitting:
        return max(fitting, key=lambda c: (c.ssim if c.ssim is not None else 0.0, -len(c.encoded.data)))
    return min(tried, key=lambda c: len(c.encoded.data))


def _auto_settings(s: Settings, fmt: str, pixels: int) -> Settings:
    if fmt != "avif":
        return s
    return s.replace(effort=min(s.effort, AUTO_AVIF_EFFORT - (pixels >= AUTO_AVIF_BIG)))


def _lossless_for(fmt: str, s: Settings, fmt_in: str, src_lossless: bool) -> bool:
    return bool(s.lossless) or (
        fmt in ("webp", "jxl") and s.lossless is None and fmt_in == fmt and src_lossless)


def _auto_jpeg_to_jxl(pr, s: Settings, orientation: int) -> quality.Candidate | None:
    """The lossless JPEG XL recompression of a JPEG as an auto candidate, or ``None``."""
    base, which = privacy.jpeg_for_jxl(pr.data, s, pr, orientation)
    try:
        out = jxl.from_jpeg(base, effort=s.effort)
    except EncodeError:
        return None
    note = f"lossless JPEG recompression: {which} is rebuilt from the JPEG XL byte for byte (checked)"
    return quality.Candidate(Encoded(out, "jxl", None, True, [note]), 1.0, [])


