"""Route: which way one image goes through the pipeline, and the exact routes.

Owns the decision, per image, between the routes that keep every sample (the
original PNG re-optimised, 16-bit kept through libvips, JPEG recompressed as
JPEG XL, JPEG lossless mode, HEIF kept) and the decode → resize → encode
route, and the rules applied to whatever comes out: display chunks carried,
the lossless metadata strip as a candidate, never larger than the input
(:func:`.privacy.not_smaller`). Called by :mod:`pyimgopt.pipeline` with the
input's bytes; returns the output bytes and the fields of its
:class:`~pyimgopt.result.Result`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..errors import EncodeError, InvalidSettingsError, UnsupportedFormatError
from ..settings import Settings
from . import animation, boost, deep, display, geometry, jxl, pngfile, privacy
from .choose import best_auto, encode_one
from .colour import profile_must_stay
from .decode import decode, read_orientation, source_bits
from .encode import ANIMATED_FORMATS, output_format
from .probe import probe, webp_is_lossless

__all__ = ["Clock", "run"]

#: A re-encode must beat the lossless strip by this factor to be chosen:
#: a few per cent are not worth a generation of lossy re-encoding.
_REENCODE_MARGIN = 0.97
#: Formats whose metadata strip (:mod:`.strip`, :mod:`.containers`) is a
#: smaller candidate next to a re-encode.
_STRIPPABLE = ("jpeg", "png", "webp", "gif", "jxl")


class Clock:
    """Times each stage and tells the caller's ``progress`` hook when one ends.

    The hook may raise (e.g. :class:`~pyimgopt.errors.CancelledError`) to stop
    the pipeline between stages; nothing is written after that.
    """

    def __init__(self, progress: Callable[[str], None] | None = None) -> None:
        self.stages: dict[str, float] = {}
        self._t = time.perf_counter()
        self._progress = progress

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.stages[stage] = self.stages.get(stage, 0.0) + (now - self._t)
        self._t = now
        if self._progress is not None:
            self._progress(stage)


def run(
    data: bytes, s: Settings, path: str | None, clock: Clock, *, in_place: bool = False
) -> tuple[bytes, dict]:
    """Optimise ``data`` under ``s``; return (output bytes, the fields of its Result).

    Raises the typed :class:`~pyimgopt.errors.PyimgoptError` of the stage that failed.
    """
    pr = probe(data, s, path)
    clock.lap("probe")
    fmt_in = pr.format.lower()
    if in_place and s.format not in ("keep", "auto", fmt_in):
        raise InvalidSettingsError(
            f"in-place optimisation keeps each file's format; {fmt_in.upper()} cannot be "
            f"replaced by {s.format.upper()} (write to an output folder to convert)",
            path=path,
            stage="settings",
        )
    auto = s.format == "auto"
    out_fmt = fmt_in if auto else output_format(s.format, fmt_in)
    info: dict = {
        "format_in": fmt_in,
        "bytes_in": len(data),
        "width_in": pr.width,
        "height_in": pr.height,
    }
    all_frames = False
    if pr.animated:
        can_animate = out_fmt in ANIMATED_FORMATS or (auto and not in_place)
        if fmt_in == "tiff" or not can_animate:
            if not s.first_frame:
                what = "multi-page TIFF" if fmt_in == "tiff" else f"animated {pr.format}"
                raise UnsupportedFormatError(
                    f"{what} ({pr.frames} frames) cannot be written as {out_fmt.upper()}; "
                    "set first_frame=True to keep only the first frame",
                    path=path,
                    stage="probe",
                )
        else:
            all_frames = True
    orientation = read_orientation(pr.image)
    swap = orientation in (5, 6, 7, 8)
    up_w, up_h = (pr.height, pr.width) if swap else (pr.width, pr.height)
    geo = geometry.plan(up_w, up_h, s)
    draft = None
    if geo.resize_to is not None:
        draft = (geo.resize_to[1], geo.resize_to[0]) if swap else geo.resize_to
    if s.lossless is True and fmt_in == "jpeg" and out_fmt == "jpeg" and not geo.changes_pixels:
        return privacy.jpeg_lossless(data, s, pr, orientation, info, clock.lap, in_place)
    gif_kept = None  # auto, animated GIF: the frame-for-frame GIF is its GIF candidate
    if auto and fmt_in == "gif" and pr.animated and not geo.changes_pixels and not in_place:
        gif_kept = animation.gif_lossless(data, s.keep_metadata)
    deep_bits = getattr(pr.header, "bits", 8) if fmt_in in ("jxl", "heif") else 8
    if deep_bits > 8 and s.lossless is True:
        raise UnsupportedFormatError(
            f"a {deep_bits}-bit {pr.format} is read as 8 bits; lossless=True would lose that",
            path=path, stage="probe")
    recompress_notes: list[str] = []
    if s.lossless is True and fmt_in == "jpeg" and out_fmt == "jxl" and not geo.changes_pixels:
        done = _jpeg_to_jxl(data, s, pr, orientation, info, clock, recompress_notes)
        if done is not None:
            return done
    src_lossless = fmt_in in ("png", "gif", "bmp", "tiff") or (
        fmt_in == "webp" and webp_is_lossless(data)
    ) or (fmt_in == "jxl" and not pr.header.xyb)  # type: ignore[union-attr]
    # Same format, no pixel change, lossless output: the original values (and a
    # non-sRGB profile with them) are kept; anywhere else pixels become sRGB.
    unchanged = not auto and not geo.changes_pixels and out_fmt == fmt_in and not all_frames
    keep_icc = unchanged and (
        fmt_in in ("png", "tiff")
        or (fmt_in == "webp" and (s.lossless if s.lossless is not None else src_lossless))
    )
    bits = source_bits(pr)
    if bits == 16 and not geo.changes_pixels and not auto and orientation == 1 and (
            out_fmt in ("png", "tiff") and (fmt_in == out_fmt or s.lossless is True)):
        if fmt_in == "png" and out_fmt == "png" and pr.frames == 1:
            pass  # the original-bytes route below keeps every 16-bit sample
        else:
            kept = deep.lossless_16(pr, out_fmt, s)
            if kept is not None:
                return _finish_exact(kept, data, s, pr, info, clock, in_place)
            if s.lossless is True:
                raise deep.refusal(pr, out_fmt, path)
    elif (bits == 16 and s.lossless is True and not geo.changes_pixels and out_fmt != "png"
          and not auto and deep.really_16(pr)):
        raise deep.refusal(pr, out_fmt, path)
    png_route = None
    may_lose = s.lossless is not True and (s.lossy_png or s.target_ssim is not None)
    if fmt_in == "png" and unchanged and orientation == 1 and pr.frames == 1:
        png_route = pngfile.optimise_original(data, effort=s.effort, keep_metadata=s.keep_metadata)
        pillow_only = s.effort == 0 or not boost.available("oxipng")
        if png_route is not None and not may_lose and (bits == 16 or not pillow_only):
            if pillow_only:
                _validate(pr, path)
            return _finish_exact(png_route, data, s, pr, info, clock, in_place)
    heif_kept = fmt_in == "heif" and ((out_fmt == "heif" and not auto) or (auto and in_place))
    if heif_kept and geo.changes_pixels:
        raise UnsupportedFormatError(
            "pyimgopt does not write HEIF: a resized HEIF needs another format "
            "(format avif, jpeg or auto)", path=path, stage="encode")
    keep_palette = (
        not auto
        and not geo.changes_pixels
        and out_fmt in ("png", "gif", "tiff", "bmp")
        and not all_frames
    )
    dec = decode(
        pr,
        all_frames=all_frames,
        draft_size=draft,
        keep_palette=keep_palette,
        keep_exif=s.keep_metadata,
        keep_icc=keep_icc,
        path=path,
    )
    clock.lap("decode")
    if all_frames:
        animation.apply_timing(dec, data, fmt_in)
    if geo.changes_pixels:
        _apply_geometry(dec, geo, s, "jpeg" if auto else out_fmt)
        clock.lap("resize")
    if heif_kept:
        return _heif_kept(data, pr, info, dec.notes, clock, s, in_place)
    if auto:
        jpeg_probe = pr if fmt_in == "jpeg" and not geo.changes_pixels and not in_place else None
        choice = best_auto(dec, s, fmt_in, src_lossless, in_place, jpeg_probe, orientation, gif_kept)
    else:
        choice = encode_one(dec, out_fmt, s, fmt_in, src_lossless)
    enc, ssim_value = choice.encoded, choice.ssim
    notes = list(dict.fromkeys([*recompress_notes, *dec.notes, *choice.notes, *enc.notes]))
    out = enc.data
    out_fmt = enc.format
    out, carried = display.carry(out, out_fmt, display.read_display(data, fmt_in),
                                 colour=not dec.icc_converted, swap=orientation in (5, 6, 7, 8))
    notes += [n for n in carried if n not in notes]
    strip_icc = dec.icc_nonsrgb
    stripped: bytes | None | object = ...  # not computed
    strip_notes: list[str] = []
    # A candidate only with orientation 1: otherwise the re-encode turns the pixels upright
    # (no viewer left behind), and the strip (keeping a minimal orientation EXIF) is the
    # fallback when that re-encode is not smaller.
    if (not s.keep_metadata and not geo.changes_pixels and out_fmt == fmt_in and orientation == 1
            and fmt_in in _STRIPPABLE):
        # zero generation loss asked (JPEG), or a GIF re-encode that is not exact: a GIF is
        # re-quantised only when that keeps every displayed frame (checked by decoding)
        lossless_only = (s.lossless is True and fmt_in in ("jpeg", "jxl")) or (
            fmt_in == "gif" and not enc.lossless)
        stripped = privacy.lossless_strip(
            data, fmt_in, keep_icc=strip_icc, orientation=orientation, notes=strip_notes,
            beat=None if lossless_only else int(len(out) / _REENCODE_MARGIN) + 1)
        if isinstance(stripped, bytes) and (lossless_only or len(out) >= _REENCODE_MARGIN * len(stripped)):
            out = stripped
            enc.quality = dec.source_quality if fmt_in == "jpeg" else None
            enc.lossless = True
            ssim_value = 1.0
            notes += [privacy.STRIP_NOTE, *strip_notes]
    if png_route is not None:
        # The original route is exact by construction; a re-encode (Pillow-only
        # effort, or a lossy palette that was asked for) wins only when smaller,
        # and a lossless one only when it lost nothing Pillow cannot write.
        route, route_notes = png_route
        faithful = not enc.lossless or (bits == 8 and not pngfile.display_chunks(data))
        if len(route) <= len(out) or not faithful:
            out, ssim_value, enc.quality = route, 1.0, None
            enc.lossless = True
            notes = [n for n in notes if n != "lossy palette (libimagequant)"] + route_notes
    clock.lap("encode")
    width, height = dec.size
    info.update(
        format_out=out_fmt,
        width=width,
        height=height,
        frames=len(dec.frames),
        quality=enc.quality,
        ssim=None if ssim_value is None else round(float(ssim_value), 5),
        notes=tuple(notes),
    )
    input_is_valid_answer = not geo.changes_pixels and (out_fmt == fmt_in or auto)
    if len(out) >= len(data) and input_is_valid_answer and not s.allow_larger:
        return _not_smaller(data, out, info, s, strip_icc, orientation, in_place,
                            dec.source_quality if fmt_in == "jpeg" else None, stripped, strip_notes)
    info["status"] = "optimized"
    return out, info


def _not_smaller(data: bytes, out: bytes | None, info: dict, s: Settings, keep_icc: bool,
                 orientation: int, in_place: bool, source_quality: int | None,
                 stripped: bytes | None | object = ...,
                 strip_notes: list[str] | None = None) -> tuple[bytes, dict]:
    """No encoding is smaller: skip, strip the metadata losslessly, or write the re-encode
    (:func:`.privacy.not_smaller`)."""
    fmt_in = info["format_in"]
    final, fields = privacy.not_smaller(
        data, fmt_in, out, info["format_out"], keep_metadata=s.keep_metadata, keep_icc=keep_icc,
        orientation=orientation, in_place=in_place, stripped=stripped, strip_notes=strip_notes)
    if fields["lossless"]:  # the input's own pixels: its quality, and an SSIM of 1 only if written
        info.update(quality=source_quality, ssim=None if fields["status"] == "skipped" else 1.0)
    info.update(status=fields["status"], format_out=fields["format_out"])
    info["notes"] = (*info["notes"], *fields["notes"])
    return final, info


def _validate(pr, path: str | None) -> None:
    """Decode once to prove the image data is sound (a route that copies it must not pass junk)."""
    from ..errors import DecodeError

    try:
        pr.image.load()
    except Exception as exc:
        kind = "truncated" if "truncated" in str(exc).lower() else "corrupt"
        raise DecodeError(f"{kind} {pr.format} data: {exc}", path=path, stage="decode") from None


def _finish_exact(route: tuple[bytes, list[str]], data: bytes, s: Settings, pr, info: dict,
                  clock: Clock, in_place: bool) -> tuple[bytes, dict]:
    """Result of a route that keeps every sample: same size, SSIM 1; not smaller, the
    not-smaller rule (skipped, or the metadata stripped losslessly)."""
    out, notes = route
    clock.lap("encode")
    fmt = info["format_in"] if not out.startswith(b"\x89PNG") else "png"
    info.update(format_out=fmt, width=pr.width, height=pr.height, frames=1, quality=None,
                ssim=1.0, notes=tuple(notes))
    if len(out) >= len(data) and fmt == info["format_in"] and not s.allow_larger:
        icc = pr.image.info.get("icc_profile") if pr.image is not None else None
        keep_icc = profile_must_stay(icc)
        return _not_smaller(data, out, info, s, keep_icc, 1, in_place, None)
    info["status"] = "optimized"
    return out, info


def _jpeg_to_jxl(data: bytes, s: Settings, pr, orientation: int, info: dict, clock: Clock,
                 notes: list[str]):
    """JPEG to JPEG XL without decoding: kept only when the JPEG is rebuilt byte for byte.

    Returns ``None`` (with a note in ``notes``) when libjxl cannot recompress
    this JPEG (CMYK, for one) or the rebuilt JPEG differs: the caller then
    encodes the decoded pixels losslessly instead.
    """
    base, which = privacy.jpeg_for_jxl(data, s, pr, orientation)
    try:
        out = jxl.from_jpeg(base, effort=s.effort)
    except EncodeError as exc:
        notes.append(f"lossless JPEG recompression not kept ({exc.message}): "
                     "pixels encoded losslessly instead")
        return None
    header = jxl.parse_header(out)
    clock.lap("encode")
    info.update(format_out="jxl", width=header.width, height=header.height, frames=1,
                quality=None, ssim=1.0, status="optimized",
                notes=(f"lossless JPEG recompression: {which} is rebuilt from the JPEG XL "
                       "byte for byte (checked)",))
    return out, info


def _heif_kept(data: bytes, pr, info: dict, notes: list[str], clock: Clock, s: Settings,
               in_place: bool):
    """HEIF kept as HEIF: pyimgopt does not write HEIF, so the (decoded, valid) original stays,
    its EXIF and XMP blanked in place unless ``keep_metadata`` (:func:`.privacy.not_smaller`)."""
    clock.lap("encode")
    info.update(format_out="heif", width=pr.width, height=pr.height, frames=1, quality=None,
                ssim=None,
                notes=(*notes, "HEIF is not written by pyimgopt (AVIF is smaller at equal SSIM): "
                       "the original is kept; use format avif, jpeg or auto to convert"))
    return _not_smaller(data, None, info, s, True, 1, in_place, None)


def _apply_geometry(dec, geo: geometry.Plan, s: Settings, out_fmt: str) -> None:
    frames = []
    for frame in dec.frames:
        background: tuple[int, ...]
        if geo.pad_to is not None and out_fmt not in ("jpeg", "bmp"):
            frame = frame.convert("LA" if frame.mode in ("L", "LA") else "RGBA")
            background = (0,) * len(frame.getbands())
        else:
            rgb = s.background_rgb
            background = rgb if frame.mode in ("RGB", "RGBA") else (rgb[0],)
            if frame.mode in ("LA", "RGBA"):
                background = (*background, 255)
        if geo.resize_to is not None and frame.size == geo.resize_to:
            frame_plan = geometry.Plan(frame.size, None, geo.crop, geo.pad_to)
        else:
            frame_plan = geo
        frames.append(geometry.apply(frame, frame_plan, s.filter, background))
    dec.frames = frames


