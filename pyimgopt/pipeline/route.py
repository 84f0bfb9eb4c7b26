"""Route: which way one image goes through the pipeline, and the exact routes.

Owns the decision, per image, between the routes that keep every sample (the
original PNG re-optimised, 16-bit kept through libvips and turned upright
there, JPEG recompressed as JPEG XL, JPEG lossless mode, an animated GIF's
frames as they are), the originals kept as they are (HEIF; a TIFF whose
samples pyimgopt cannot write back; a lossless JPEG XL with deep samples or a
wide-gamut profile: :mod:`.exact`) and the decode → resize → encode route;
the refusals of ``lossless=True`` where it cannot hold (a JPEG output, deep
samples into 8 bits); ``format="auto"`` in place as ``keep`` with an SSIM
target; and the rules applied to whatever comes out: display chunks carried,
the lossless metadata strip as a candidate, never larger than the input
(:func:`.privacy.not_smaller`). Called by :mod:`pyimgopt.pipeline` with the
input's bytes; returns the output bytes and the fields of its
:class:`~pyimgopt.result.Result`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..errors import DecodeError, InvalidSettingsError, UnsupportedFormatError
from ..settings import Settings
from . import animation, boost, deep, display, exact, geometry, pngfile, privacy, quality, samples
from .choose import best_auto, encode_one
from .colour import profile_must_stay
from .decode import decode, read_orientation
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

    def __init__(self, progress: Callable[[str], None] | None = None,
                 admit: Callable[..., None] | None = None) -> None:
        self.stages: dict[str, float] = {}
        self._t = time.perf_counter()
        self._progress = progress
        self._admit = admit

    def probed(self, pr, nbytes: int) -> None:
        """The header is read: the caller's ``admit(probe, nbytes)`` may stop here, before any
        pixel buffer exists (a pool sidecar asks the router for the memory it estimates)."""
        if self._admit is not None:
            self._admit(pr, nbytes)

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
    clock.probed(pr, len(data))
    clock.lap("probe")
    fmt_in = pr.format.lower()
    if in_place and s.format not in ("keep", "auto", fmt_in):
        raise InvalidSettingsError(
            f"in-place optimisation keeps each file's format; {fmt_in.upper()} cannot be "
            f"replaced by {s.format.upper()} (write to an output folder to convert)",
            path=path,
            stage="settings",
        )
    if s.format == "auto" and in_place:
        # auto in place keeps the format: that is ``keep`` searched to the SSIM target, with
        # every route ``keep`` has that keeps the samples (16 bits, a non-sRGB profile, ...)
        s = s.replace(format="keep", target_ssim=s.target_ssim if s.target_ssim is not None
                      else quality.DEFAULT_AUTO_TARGET)
    if fmt_in == "png":
        try:
            bad = pngfile.palette_overrun(data, pr.image)
        except Exception as exc:
            raise DecodeError(f"corrupt PNG data: {exc}", path=path, stage="decode") from None
        if bad:
            raise DecodeError(f"malformed palette PNG: {bad}", path=path, stage="decode")
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
        if fmt_in == "tiff" or not (out_fmt in ANIMATED_FORMATS or auto):
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
    # Pillow's TIFF reader applies the TIFF orientation itself and reports the shown size
    swap = orientation in (5, 6, 7, 8) and fmt_in != "tiff"
    up_w, up_h = (pr.height, pr.width) if swap else (pr.width, pr.height)
    geo = geometry.plan(up_w, up_h, s)
    draft = None  # the resize target in stored orientation: a JPEG may decode at a DCT scale
    if geo.resize_to is not None and s.filter != "nearest":  # (a block average, not nearest)
        draft = (geo.resize_to[1], geo.resize_to[0]) if swap else geo.resize_to
    if s.lossless is True and out_fmt == "jpeg":
        if fmt_in == "jpeg" and not geo.changes_pixels:
            return privacy.jpeg_lossless(data, s, pr, orientation, info, clock.lap, in_place)
        raise UnsupportedFormatError(
            "lossless=True cannot be met by a JPEG output: a JPEG encode always changes pixels "
            "(only a JPEG kept as JPEG, not resized, is optimised losslessly, without "
            "re-encoding); use format png, webp or jxl, or lossless=False",
            path=path, stage="encode")
    smp = samples.of(pr)
    icc_in = pr.image.info.get("icc_profile") if pr.image is not None else None
    kept_as_is = fmt_in in ("heif", "jxl") and out_fmt == fmt_in and not geo.changes_pixels
    if smp.bits > 8 and fmt_in in ("jxl", "heif") and s.lossless is True and not kept_as_is:
        raise UnsupportedFormatError(
            f"a {smp.bits}-bit {pr.format} is read as 8 bits; lossless=True would lose that",
            path=path, stage="probe")
    if fmt_in == "tiff" and not smp.keepable:
        if out_fmt == "tiff" and geo.changes_pixels:
            raise UnsupportedFormatError(
                f"a {smp.describe()} TIFF cannot be written as TIFF without changing its samples "
                "(pyimgopt writes 8- and 16-bit unsigned gray, RGB and palette TIFF); choose "
                "format png, jpeg, webp or avif to convert it", path=path, stage="encode")
        if out_fmt == "tiff":
            exact.validate(pr, path)
            clock.lap("decode")
            return exact.original_kept(
                data, info, [], s, in_place, size=(up_w, up_h),
                keep_icc=profile_must_stay(icc_in), orientation=orientation,
                why=f"a {smp.describe()} TIFF is not re-encoded (pyimgopt writes 8- and 16-bit "
                    "unsigned gray, RGB and palette TIFF): the original is kept; convert it with "
                    "format png, jpeg, webp or avif")
        if s.lossless is True:
            raise UnsupportedFormatError(
                f"lossless=True cannot keep this TIFF's {smp.describe()} samples as "
                f"{out_fmt.upper()}: they are converted to 8-bit RGB; drop lossless to convert",
                path=path, stage="encode")
    recompress_notes: list[str] = []
    if s.lossless is True and fmt_in == "jpeg" and out_fmt == "jxl" and not geo.changes_pixels:
        done = exact.jpeg_to_jxl(data, s, pr, orientation, info, clock.lap, recompress_notes)
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
    deep16 = smp.bits == 16 and fmt_in in ("png", "tiff") and pr.frames == 1
    if deep16 and not geo.changes_pixels and not auto and (
            out_fmt in ("png", "tiff") and (fmt_in == out_fmt or s.lossless is True)):
        if not (fmt_in == "png" and out_fmt == "png" and orientation == 1):
            # (a PNG kept as PNG upright: the original-bytes route below keeps every sample)
            kept = deep.lossless_16(pr, out_fmt, s, orientation)
            if kept is not None:
                return exact.finish_exact(kept, data, s, info, clock.lap, in_place,
                                          size=(up_w, up_h), keep_icc=profile_must_stay(icc_in),
                                          orientation=orientation)
            if s.lossless is True and not (fmt_in == "png" and out_fmt == "png"):
                raise deep.refusal(pr, out_fmt, path)
            if fmt_in == "tiff" and out_fmt == "tiff":
                exact.validate(pr, path)
                return exact.original_kept(
                    data, info, [], s, in_place, size=(up_w, up_h),
                    keep_icc=profile_must_stay(icc_in), orientation=orientation,
                    why="16-bit TIFF needs pyvips (libvips) to be written: the original is kept")
    elif (deep16 and s.lossless is True and not geo.changes_pixels and out_fmt != "png"
          and not auto and deep.really_16(pr)):
        raise deep.refusal(pr, out_fmt, path)
    png_route = None
    may_lose = s.lossless is not True and (s.lossy_png or s.target_ssim is not None)
    if fmt_in == "png" and unchanged and pr.frames == 1 and (orientation == 1 or deep16):
        # a 16-bit PNG with an EXIF orientation gets here only without libvips: its samples
        # stay as stored, the orientation as a minimal eXIf a viewer applies once
        png_route = pngfile.optimise_original(data, effort=s.effort, keep_metadata=s.keep_metadata,
                                              orientation=orientation)
        pillow_only = s.effort == 0 or not boost.available("oxipng")
        if png_route is not None and not may_lose and (deep16 or not pillow_only):
            if pillow_only:
                exact.validate(pr, path)
            return exact.finish_exact(png_route, data, s, info, clock.lap, in_place,
                                      size=(pr.width, pr.height), keep_icc=profile_must_stay(icc_in),
                                      orientation=orientation)
    heif_kept = fmt_in == "heif" and out_fmt == "heif" and not auto
    if heif_kept and geo.changes_pixels:
        raise UnsupportedFormatError(
            "pyimgopt does not write HEIF: a resized HEIF needs another format "
            "(format avif, jpeg or auto)", path=path, stage="encode")
    gif_kept = None  # an animated GIF's frame-for-frame copy: always its GIF candidate
    if fmt_in == "gif" and pr.animated and not geo.changes_pixels and (auto or out_fmt == "gif"):
        gif_kept = animation.gif_lossless(data, s.keep_metadata)
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
    if heif_kept:
        clock.lap("encode")
        return exact.original_kept(
            data, info, [], s, in_place, size=(pr.width, pr.height), keep_icc=True,
            orientation=1, why="HEIF is not written by pyimgopt (no browser but Safari shows "
                               "it): the original is kept; use format avif, jpeg or auto to "
                               "convert")
    if kept_as_is and fmt_in == "jxl" and src_lossless and (smp.bits > 8 or dec.icc_nonsrgb):
        clock.lap("encode")
        what = f"{smp.bits}-bit samples" if smp.bits > 8 else "a colour space other than sRGB"
        return exact.original_kept(
            data, info, [], s, in_place, size=(pr.width, pr.height), keep_icc=True,
            orientation=1, why=f"a lossless JPEG XL with {what} is not re-encoded (pyimgopt's "
                               "JPEG XL encoder writes 8-bit sRGB): the original is kept")
    if geo.changes_pixels:
        _apply_geometry(dec, geo, s, "jpeg" if auto else out_fmt)
        clock.lap("resize")
    if auto:
        jpeg_probe = pr if fmt_in == "jpeg" and not geo.changes_pixels else None
        choice = best_auto(dec, s, fmt_in, src_lossless, jpeg_probe, orientation, gif_kept)
    else:
        choice = encode_one(dec, out_fmt, s, fmt_in, src_lossless)
    enc, ssim_value = choice.encoded, choice.ssim
    notes = list(dict.fromkeys([*recompress_notes, *dec.notes, *choice.notes, *enc.notes]))
    out = enc.data
    out_fmt = enc.format
    out, carried = display.carry(out, out_fmt, display.read_display(data, fmt_in),
                                 colour=not dec.icc_converted, swap=swap)
    notes += [n for n in carried if n not in notes]
    if gif_kept is not None and not auto:
        # frames, palettes and disposal as they are, unless a re-encode is smaller and shows
        # exactly the same frames (checked with a browser-like compositor)
        kept_data, kept_notes = gif_kept
        over = s.target_size is not None and len(kept_data) > s.target_size >= len(out)
        if (not enc.lossless or len(kept_data) <= len(out)) and not over:
            out, ssim_value, enc.quality, enc.lossless = kept_data, 1.0, None, True
            notes = [*dec.notes, *kept_notes]
    strip_icc = dec.icc_must_stay
    stripped: bytes | None | object = ...  # not computed
    strip_notes: list[str] = []
    # A candidate only with orientation 1: otherwise the re-encode turns the pixels upright
    # (no viewer left behind), and the strip (keeping a minimal orientation EXIF) is the
    # fallback when that re-encode is not smaller.
    if (not s.keep_metadata and not geo.changes_pixels and out_fmt == fmt_in and orientation == 1
            and fmt_in in _STRIPPABLE and not (gif_kept is not None and not auto)):
        # zero generation loss asked (JPEG, JPEG XL), or a GIF re-encode that is not exact
        lossless_only = (s.lossless is True and fmt_in in ("jpeg", "jxl")) or (
            fmt_in == "gif" and not enc.lossless)
        stripped = privacy.lossless_strip(
            data, fmt_in, keep_icc=strip_icc, orientation=orientation, notes=strip_notes,
            beat=None if lossless_only else len(out))
        over = s.target_size is not None and len(stripped or b"") > s.target_size >= len(out)
        if isinstance(stripped, bytes) and not over and (
                lossless_only or len(out) >= _REENCODE_MARGIN * len(stripped)):
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
        faithful = not enc.lossless or (smp.bits <= 8 and not pngfile.display_chunks(data))
        over = s.target_size is not None and len(route) > s.target_size >= len(out)
        if (len(route) <= len(out) or not faithful) and not over:
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
        return exact.not_smaller(data, out, info, s, strip_icc, orientation, in_place,
                                 dec.source_quality if fmt_in == "jpeg" else None, stripped,
                                 strip_notes)
    info["status"] = "optimized"
    return out, info


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
        if geo.resize_to is not None and frame.size == geo.resize_to and dec.box is None:
            frame_plan = geometry.Plan(frame.size, None, geo.crop, geo.pad_to)
        else:
            frame_plan = geo
        frames.append(geometry.apply(frame, frame_plan, s.filter, background, dec.box))
    dec.frames = frames


