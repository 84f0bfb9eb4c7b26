"""Size targets: make the output fit ``Settings.target_size`` bytes, or say it cannot.

Owns the outer search behind ``target_size``: the route (:func:`.route.run`)
already encodes at the highest quality that fits (:func:`.quality.encode_to_size`,
and ``format="auto"`` picks the fitting candidate that scores best); when even
its smallest output is too large, this module shrinks the image — never below
``min_scale`` of the size the other settings give — to the largest scale
whose output fits (bisection on the scale, each step a full route). A file
that still cannot fit fails alone with :class:`~pyimgopt.errors.TargetUnreachableError`,
whose message gives the smallest size reached and how.
"""

from __future__ import annotations

from ..errors import PyimgoptError, TargetUnreachableError
from ..settings import Settings
from . import route

__all__ = ["run_sized", "SCALE_STEPS"]

#: Bisection steps on the scale: the answer is within (1 - min_scale) / 2**7 of
#: the largest scale that fits (under 1 % of the side for any min_scale).
SCALE_STEPS = 7


def _scaled(s: Settings, width: int, height: int, scale: float) -> Settings:
    """``s`` whose output (``width`` x ``height`` under ``s``) is shrunk by ``scale``: the
    box becomes the output's own size times ``scale``, the fit rule stays (the same
    crop, padding or stretch, smaller)."""
    fit = s.fit if s.max_width is not None or s.max_height is not None else "inside"
    return s.replace(max_width=max(1, round(width * scale)), max_height=max(1, round(height * scale)),
                     fit=fit)


def run_sized(data: bytes, s: Settings, path: str | None, clock: route.Clock, *,
              in_place: bool = False) -> tuple[bytes, dict]:
    """:func:`.route.run` under ``s.target_size``: the output fits, or the file fails.

    Raises :class:`TargetUnreachableError` (``target_unreachable``) when no
    output allowed by ``s`` fits (with ``target_ssim``: fits *and* meets it),
    with the smallest size reached in its message.
    """
    limit = s.target_size
    assert limit is not None
    out, info = route.run(data, s, path, clock, in_place=in_place)
    if _ok(out, info, s):
        return out, _noted(info, f"fits target size {limit} bytes ({len(out)} bytes)")
    best = (len(out), info, 1.0)
    if s.min_scale is not None and s.min_scale < 1.0 and info.get("width") and info.get("height"):
        width, height = info["width"], info["height"]
        lo, hi = s.min_scale, 1.0  # the answer lies in [lo, hi): hi does not fit
        found: tuple[bytes, dict, float] | None = None
        scale = lo
        for _ in range(SCALE_STEPS + 1):
            try:
                o, i = route.run(data, _scaled(s, width, height, scale), path, clock, in_place=in_place)
            except PyimgoptError:
                break  # the settings cannot make this size (e.g. a HEIF kept as it is)
            if len(o) < best[0]:
                best = (len(o), i, scale)
            if _ok(o, i, s):
                found = (o, i, scale)
                lo = scale
            elif scale == s.min_scale:
                break  # even the smallest scale allowed does not fit
            else:
                hi = scale
            scale = (lo + hi) / 2
        if found is not None:
            o, i, scale = found
            return o, _noted(i, f"fits target size {limit} bytes ({len(o)} bytes) after a downscale "
                                f"to {scale:.3f} ({i['width']}x{i['height']})")
    size, i, scale = best
    how = f"quality {i.get('quality')}" if i.get("quality") is not None else "its lossless encoding"
    where = "" if scale == 1.0 else f", scaled to {scale:.3f} ({i.get('width')}x{i.get('height')})"
    hint = "" if s.min_scale is not None else "; allow a downscale with min_scale"
    if s.target_ssim is not None and size <= limit:
        # it fits, but not at the look asked for: say what the look costs
        try:
            o, _ = route.run(data, s.replace(target_size=None, min_scale=None), path, clock,
                             in_place=in_place)
            cost = f"; the smallest output with SSIM >= {s.target_ssim} is {len(o)} bytes"
        except PyimgoptError:
            cost = ""
        raise TargetUnreachableError(
            f"cannot fit {limit} bytes with SSIM >= {s.target_ssim}: the largest quality that fits "
            f"({(i.get('format_out') or '?').upper()}, {how}{where}, {size} bytes) scores SSIM "
            f"{i.get('ssim')}{cost}{hint}", path=path, stage="encode")
    raise TargetUnreachableError(
        f"cannot fit {limit} bytes: the smallest output was {size} bytes "
        f"({(i.get('format_out') or '?').upper()}, {how}{where}){hint}",
        path=path, stage="encode")


def _ok(out: bytes, info: dict, s: Settings) -> bool:
    if len(out) > (s.target_size or 0):
        return False
    return s.target_ssim is None or info.get("ssim") is None or info["ssim"] >= s.target_ssim - 5e-6


def _noted(info: dict, note: str) -> dict:
    return {**info, "notes": (*info.get("notes", ()), note)}
