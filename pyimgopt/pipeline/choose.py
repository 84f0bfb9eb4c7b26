"""Choose: the candidates for one decoded image, and the pick among them.

Owns encoding one output format at a quality or at a perceptual target
(:func:`encode_one`), and ``format="auto"`` (:func:`best_auto`): every allowed
candidate at the target, the lossless ones beside the lossy ones where the
source is lossless, and the smallest that meets the target wins.
"""

from __future__ import annotations

from ..errors import EncodeError, UnsupportedFormatError
from ..settings import Settings
from . import jxl, privacy, quality
from .encode import Encoded, encode

__all__ = ["encode_one", "best_auto"]

def encode_one(dec, fmt: str, s: Settings, fmt_in: str, src_lossless: bool) -> quality.Candidate:
    """One format: at the target when ``target_ssim`` is set, else at ``quality``.

    A lossless encode reports SSIM 1 only when the frames hold every source
    value (``Decoded.exact``): rounded 16-bit samples or colours converted to
    sRGB are not the source, whatever the encoder keeps.
    """
    lossless = bool(s.lossless) or (
        fmt in ("webp", "jxl") and s.lossless is None and fmt_in == fmt and src_lossless)
    if s.target_ssim is not None and quality.searchable(dec, fmt, lossless):
        return quality.encode_to_target(
            dec, fmt, s, s.target_ssim, source_format=fmt_in, source_lossless=src_lossless
        )
    enc = encode(dec, fmt, s, source_format=fmt_in, source_lossless=src_lossless)
    ssim_value = 1.0 if enc.lossless and dec.exact else None
    if s.target_ssim is not None and not enc.lossless:
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

    With JPEG XL allowed, a JPEG whose pixels do not change is also tried as a
    lossless recompression (SSIM 1, the JPEG rebuilt from it checked).
    ``gif_kept`` is the frame-for-frame GIF (:func:`.animation.gif_lossless`),
    tried beside the re-quantised one. With ``lossless=True`` only encodings
    that keep every pixel are tried (PNG, lossless WebP and JPEG XL, an exact
    GIF), and the smallest wins. (In place, auto is ``keep`` with a target:
    :func:`.route.run`.)
    """
    target = s.target_ssim if s.target_ssim is not None else quality.DEFAULT_AUTO_TARGET
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
    for fmt in formats:
        if fmt == "gif" and gif_kept is not None:
            kept = Encoded(data=gif_kept[0], format="gif", quality=None, lossless=True)
            tried.append(quality.Candidate(kept, 1.0, list(gif_kept[1])))
            if lossless:
                continue
        cand = encode_one(dec, fmt, st, fmt_in, src_lossless)
        if lossless and not cand.encoded.lossless:
            continue  # a GIF re-quantised, a palette: not exact
        tried.append(cand)
        if fmt in ("webp", "jxl") and src_lossless and not lossless and not cand.encoded.lossless:
            tried.append(encode_one(dec, fmt, st.replace(lossless=True), fmt_in, src_lossless))
        if fmt == "jxl" and jpeg_probe is not None:
            cand = _auto_jpeg_to_jxl(jpeg_probe, s, orientation)
            if cand is not None:
                tried.append(cand)
    if not tried:
        raise UnsupportedFormatError(
            f"no format in formats_allowed ({', '.join(s.formats_allowed)}) holds this image "
            "losslessly", stage="encode")
    meeting = [c for c in tried if c.ssim is None or c.ssim >= target]
    pool = meeting or [max(tried, key=lambda c: c.ssim or 0.0)]
    best = min(pool, key=lambda c: len(c.encoded.data))
    sizes = ", ".join(
        f"{c.encoded.format}{'-lossless' if c.encoded.lossless else ''}={len(c.encoded.data)}"
        for c in tried
    )
    best.notes = [*best.notes, f"auto candidates: {sizes}"]
    return best


def _auto_jpeg_to_jxl(pr, s: Settings, orientation: int) -> quality.Candidate | None:
    """The lossless JPEG XL recompression of a JPEG as an auto candidate, or ``None``."""
    base, which = privacy.jpeg_for_jxl(pr.data, s, pr, orientation)
    try:
        out = jxl.from_jpeg(base, effort=s.effort)
    except EncodeError:
        return None
    note = f"lossless JPEG recompression: {which} is rebuilt from the JPEG XL byte for byte (checked)"
    return quality.Candidate(Encoded(out, "jxl", None, True, [note]), 1.0, [])


