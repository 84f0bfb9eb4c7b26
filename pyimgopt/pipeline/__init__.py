"""The pipeline: one image in, one optimised image (or a typed error) out.

Owns the order of the stages — read with limits → probe → decode
(shrink-on-load) → auto-orient and convert to sRGB → resize → encode
candidates → pick → atomic write → :class:`~pyimgopt.result.Result` — and the
rules that bind them: never larger than the input unless allowed, never a
lost or truncated original. A pure function of (input, :class:`Settings`):
no sockets, no global state.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable

from ..errors import (
    EncodeError,
    InternalError,
    InvalidSettingsError,
    PyimgoptError,
    TooLargeError,
    UnsupportedFormatError,
)
from ..result import Result
from ..settings import Settings
from . import animation, boost, deep, display, geometry, jxl, pngfile, privacy, quality
from .decode import decode, read_orientation, source_bits
from .encode import ANIMATED_FORMATS, EXTENSIONS, Encoded, encode, output_format
from .probe import probe, sniff, webp_is_lossless
from .strip import strip_jpeg
from .write import TEMP_SUFFIX, atomic_write, expected_parent, read_input

__all__ = ["optimize_bytes", "optimize_file", "output_name", "EXTENSIONS", "TEMP_SUFFIX", "sniff"]

#: A re-encode must beat the lossless strip by this factor to be chosen:
#: a few per cent are not worth a generation of lossy re-encoding.
_REENCODE_MARGIN = 0.97
#: Formats whose metadata strip (:mod:`.strip`, :mod:`.containers`) is a
#: smaller candidate next to a re-encode.
_STRIPPABLE = ("jpeg", "png", "webp", "gif")


class _Clock:
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


def _run(
    data: bytes, s: Settings, path: str | None, clock: _Clock, *, in_place: bool = False
) -> tuple[bytes, dict]:
    """Optimise ``data``; return (output bytes, Result fields)."""
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
        choice = _best_auto(dec, s, fmt_in, src_lossless, in_place, jpeg_probe, orientation, gif_kept)
    else:
        choice = _encode_one(dec, out_fmt, s, fmt_in, src_lossless)
    enc, ssim_value = choice.encoded, choice.ssim
    notes = list(dict.fromkeys([*recompress_notes, *dec.notes, *choice.notes, *enc.notes]))
    out = enc.data
    out_fmt = enc.format
    out, carried = display.carry(out, out_fmt, display.read_display(data, fmt_in),
                                 colour=not dec.icc_converted, swap=orientation in (5, 6, 7, 8))
    notes += [n for n in carried if n not in notes]
    strip_icc = dec.icc_nonsrgb
    stripped: bytes | None | object = ...  # not computed
    # A candidate only with orientation 1: otherwise the re-encode turns the pixels upright
    # (no viewer left behind), and the strip (keeping a minimal orientation EXIF) is the
    # fallback when that re-encode is not smaller.
    if (not s.keep_metadata and not geo.changes_pixels and out_fmt == fmt_in and orientation == 1
            and fmt_in in _STRIPPABLE):
        stripped = privacy.lossless_strip(data, fmt_in, keep_icc=strip_icc, orientation=orientation)
        # zero generation loss asked (JPEG), or a GIF re-encode that is not exact: a GIF is
        # re-quantised only when that keeps every displayed frame (checked by decoding)
        lossless_only = (s.lossless is True and fmt_in == "jpeg") or (fmt_in == "gif" and not enc.lossless)
        if isinstance(stripped, bytes) and (lossless_only or len(out) >= _REENCODE_MARGIN * len(stripped)):
            out = stripped
            enc.quality = dec.source_quality if fmt_in == "jpeg" else None
            enc.lossless = True
            ssim_value = 1.0
            notes.append(privacy.STRIP_NOTE)
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
                            dec.source_quality if fmt_in == "jpeg" else None, stripped)
    info["status"] = "optimized"
    return out, info


def _not_smaller(data: bytes, out: bytes | None, info: dict, s: Settings, keep_icc: bool,
                 orientation: int, in_place: bool, source_quality: int | None,
                 stripped: bytes | None | object = ...) -> tuple[bytes, dict]:
    """No encoding is smaller: skip, strip the metadata losslessly, or write the re-encode
    (:func:`.privacy.not_smaller`)."""
    fmt_in = info["format_in"]
    final, fields = privacy.not_smaller(
        data, fmt_in, out, info["format_out"], keep_metadata=s.keep_metadata, keep_icc=keep_icc,
        orientation=orientation, in_place=in_place, stripped=stripped)
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
                  clock: _Clock, in_place: bool) -> tuple[bytes, dict]:
    """Result of a route that keeps every sample: same size, SSIM 1; not smaller, the
    not-smaller rule (skipped, or the metadata stripped losslessly)."""
    out, notes = route
    clock.lap("encode")
    fmt = info["format_in"] if not out.startswith(b"\x89PNG") else "png"
    info.update(format_out=fmt, width=pr.width, height=pr.height, frames=1, quality=None,
                ssim=1.0, notes=tuple(notes))
    if len(out) >= len(data) and fmt == info["format_in"] and not s.allow_larger:
        from .colour import icc_info

        icc = pr.image.info.get("icc_profile") if pr.image is not None else None
        try:
            keep_icc = bool(icc) and not icc_info(icc)[1]
        except Exception:
            keep_icc = True  # unreadable: keep it rather than change colours
        return _not_smaller(data, out, info, s, keep_icc, 1, in_place, None)
    info["status"] = "optimized"
    return out, info


def _jpeg_for_jxl(data: bytes, s: Settings, pr, orientation: int) -> tuple[bytes, str]:
    """The JPEG to recompress as JPEG XL: metadata stripped losslessly unless kept, and a note."""
    from .colour import icc_info

    icc = pr.image.info.get("icc_profile")
    icc_nonsrgb = False
    if icc:
        try:
            icc_nonsrgb = not icc_info(icc)[1]
        except Exception:
            icc_nonsrgb = True  # unreadable: keep it rather than change colours
    # libjxl takes the orientation from EXIF into the codestream: it survives as a
    # minimal EXIF holding only that tag (never the GPS and camera tags beside it).
    if s.keep_metadata:
        return data, "the original JPEG"
    stripped = strip_jpeg(data, keep_icc=icc_nonsrgb, orientation=orientation)
    if stripped is None:
        raise EncodeError("the JPEG's metadata cannot be removed without re-encoding (its "
                          "markers do not parse)", stage="encode")
    return stripped, "the metadata-stripped JPEG"


def _jpeg_to_jxl(data: bytes, s: Settings, pr, orientation: int, info: dict, clock: _Clock,
                 notes: list[str]):
    """JPEG to JPEG XL without decoding: kept only when the JPEG is rebuilt byte for byte.

    Returns ``None`` (with a note in ``notes``) when libjxl cannot recompress
    this JPEG (CMYK, for one) or the rebuilt JPEG differs: the caller then
    encodes the decoded pixels losslessly instead.
    """
    base, which = _jpeg_for_jxl(data, s, pr, orientation)
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


def _heif_kept(data: bytes, pr, info: dict, notes: list[str], clock: _Clock, s: Settings,
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


def _encode_one(dec, fmt: str, s: Settings, fmt_in: str, src_lossless: bool) -> quality.Candidate:
    """One format: at the target when ``target_ssim`` is set, else at ``quality``."""
    lossless = bool(s.lossless) or (
        fmt in ("webp", "jxl") and s.lossless is None and fmt_in == fmt and src_lossless)
    if s.target_ssim is not None and quality.searchable(dec, fmt, lossless):
        return quality.encode_to_target(
            dec, fmt, s, s.target_ssim, source_format=fmt_in, source_lossless=src_lossless
        )
    enc = encode(dec, fmt, s, source_format=fmt_in, source_lossless=src_lossless)
    ssim_value = 1.0 if enc.lossless else None
    if s.target_ssim is not None and ssim_value is None:
        if quality.searchable(dec, fmt, False) or (fmt in ("png", "gif") and len(dec.frames) == 1):
            ssim_value = quality.measure(enc.data, quality.reference(dec, s.background_rgb),
                                         s.background_rgb)
        elif len(dec.frames) > 1:
            # a lossy animation (e.g. GIF -> WebP under auto): checked on sampled frames
            ssim_value = quality.measure_frames(enc.data, dec, s.background_rgb)
    return quality.Candidate(enc, ssim_value, [])


def _best_auto(dec, s: Settings, fmt_in: str, src_lossless: bool, in_place: bool,
               jpeg_probe=None, orientation: int = 1,
               gif_kept: tuple[bytes, list[str]] | None = None) -> quality.Candidate:
    """``format="auto"``: every candidate at the target; the smallest that meets it wins.

    With JPEG XL allowed, a JPEG whose pixels do not change is also tried as a
    lossless recompression (SSIM 1, the JPEG rebuilt from it checked).
    ``gif_kept`` is the frame-for-frame GIF (:func:`.animation.gif_lossless`),
    tried beside the re-quantised one.
    """
    target = s.target_ssim if s.target_ssim is not None else quality.DEFAULT_AUTO_TARGET
    st = s.replace(target_ssim=target, lossless=None)
    tried: list[quality.Candidate] = []
    formats = quality.auto_formats(dec, fmt_in, in_place, s.formats_allowed)
    if not formats:
        raise UnsupportedFormatError(
            f"none of formats_allowed ({', '.join(s.formats_allowed)}) can hold this image "
            f"({len(dec.frames)} frames)", stage="encode")
    for fmt in formats:
        if fmt == "gif" and gif_kept is not None:
            kept = Encoded(data=gif_kept[0], format="gif", quality=None, lossless=True)
            tried.append(quality.Candidate(kept, 1.0, list(gif_kept[1])))
        cand = _encode_one(dec, fmt, st, fmt_in, src_lossless)
        tried.append(cand)
        if fmt in ("webp", "jxl") and src_lossless and not in_place and not cand.encoded.lossless:
            tried.append(_encode_one(dec, fmt, st.replace(lossless=True), fmt_in, src_lossless))
        if fmt == "jxl" and jpeg_probe is not None:
            cand = _auto_jpeg_to_jxl(jpeg_probe, s, orientation)
            if cand is not None:
                tried.append(cand)
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
    base, which = _jpeg_for_jxl(pr.data, s, pr, orientation)
    try:
        out = jxl.from_jpeg(base, effort=s.effort)
    except EncodeError:
        return None
    note = f"lossless JPEG recompression: {which} is rebuilt from the JPEG XL byte for byte (checked)"
    return quality.Candidate(Encoded(out, "jxl", None, True, [note]), 1.0, [])


def _failed(exc: BaseException, path: str | None, clock: _Clock, start: float, **kw) -> Result:
    if not isinstance(exc, PyimgoptError):
        last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
        where = f" at {last[0].filename.rsplit(os.sep, 1)[-1]}:{last[0].lineno}" if last else ""
        exc = InternalError(f"{type(exc).__name__}: {exc}{where}", path=path, stage="internal")
    if exc.path is None and path is not None:
        exc.path = path
    return Result(
        input=path,
        output=None,
        status="failed",
        seconds=time.perf_counter() - start,
        stages=clock.stages,
        error=exc,
        **kw,
    )


def optimize_bytes(
    data: bytes,
    settings: Settings | None = None,
    *,
    progress: Callable[[str], None] | None = None,
    in_place: bool = False,
) -> tuple[bytes, Result]:
    """Optimise an image held in memory.

    ``in_place=True`` says the bytes will replace their source: the format is
    kept (``auto`` picks within it; a named other format is refused).

    ``progress(stage)`` is called as each stage ends; if it raises, the
    pipeline stops there and the exception propagates.

    Returns the output bytes and a :class:`Result` (``input``/``output`` are
    ``None``). For a ``skipped`` result the bytes are the input's own.

    Raises
    ------
    PyimgoptError
        The typed error of the stage that failed (``decode_failed``,
        ``too_large``, ``unsupported_format``, ...).
    """
    s = settings if settings is not None else Settings()
    if not isinstance(s, Settings):
        raise InvalidSettingsError(f"Expected Settings for settings but received {s!r}")
    data = bytes(data)
    if len(data) > s.max_input_bytes:
        raise TooLargeError(
            f"{len(data):,} bytes is over max_input_bytes={s.max_input_bytes:,}", stage="read"
        )
    start = time.perf_counter()
    clock = _Clock(progress)
    try:
        out, info = _run(data, s, None, clock, in_place=in_place)
    except PyimgoptError:
        raise
    except MemoryError:
        raise TooLargeError("out of memory", stage="decode") from None
    except Exception as exc:
        raise _failed(exc, None, clock, start).error from exc  # type: ignore[misc]
    return out, Result(
        input=None,
        output=None,
        bytes_out=len(out),
        seconds=time.perf_counter() - start,
        stages=clock.stages,
        **info,
    )


def output_name(path: str, settings: Settings) -> str:
    """The file name an output of ``path`` gets: same name, or new extension if converting."""
    if settings.format in ("keep", "auto"):  # auto: optimize_file sets the extension
        return os.path.basename(path)
    stem, _ = os.path.splitext(os.path.basename(path))
    return stem + EXTENSIONS[settings.format]


def optimize_file(
    src: str | os.PathLike,
    dst: str | os.PathLike | None = None,
    settings: Settings | None = None,
    *,
    progress: Callable[[str], None] | None = None,
    expect: dict | None = None,
) -> Result:
    """Optimise the file ``src`` and write it to ``dst`` (``None``: in place).

    ``expect`` — ``{"dev", "ino"}`` of the checked input and optionally
    ``{"parent_dev", "parent_ino", "parent_depth"}`` of the deepest existing
    folder above the checked output (:func:`~.write.parent_anchor`) — makes
    the read and the write refuse a path that was swapped after it was
    checked; missing output folders are created beneath that folder only.

    ``progress(stage)`` is called as each stage ends (``read``, ``probe``,
    ``decode``, ``resize``, ``encode``, ``write``); an exception it raises
    (a :class:`PyimgoptError` such as ``CancelledError``) stops the pipeline
    before anything is written and becomes the failed result.

    Never raises for a per-file problem: the :class:`Result` carries status
    ``failed`` and the typed error. Writes are atomic; in place, the original
    is replaced only by a complete image of the same format that is smaller —
    or, when only metadata goes, no larger (the rename is the replace) — and
    left untouched otherwise. To an output path, a ``skipped`` file is copied
    so the output tree is complete; ``skipped`` means the copy is the input
    byte for byte and holds nothing the settings strip (a file that does is
    stripped without re-encoding instead: :mod:`.privacy`).
    """
    s = settings if settings is not None else Settings()
    if not isinstance(s, Settings):
        raise InvalidSettingsError(f"Expected Settings for settings but received {s!r}")
    src_s = os.fspath(src)
    in_place = dst is None or os.path.abspath(os.fspath(dst)) == os.path.abspath(src_s)
    dst_s = src_s if dst is None else os.fspath(dst)
    start = time.perf_counter()
    clock = _Clock(progress)
    try:
        want = None if expect is None else (expect["dev"], expect["ino"])
        data, st = read_input(src_s, s.max_input_bytes, expect=want)
        clock.lap("read")
        out, info = _run(data, s, src_s, clock, in_place=in_place)
        if s.format == "auto" and not in_place and info["format_out"] != info["format_in"]:
            dst_s = os.path.splitext(dst_s)[0] + EXTENSIONS[info["format_out"]]
        if info["status"] == "skipped" and in_place:
            pass  # the original stays exactly as it was
        else:
            parent, depth = expected_parent(expect)
            atomic_write(dst_s, out, mode=st.st_mode if in_place else None, expect_parent=parent,
                         create_depth=depth)
        clock.lap("write")
    except MemoryError:
        return _failed(TooLargeError("out of memory", stage="decode"), src_s, clock, start)
    except Exception as exc:
        return _failed(exc, src_s, clock, start)
    return Result(
        input=src_s,
        output=dst_s,
        bytes_out=len(out),
        seconds=time.perf_counter() - start,
        stages=clock.stages,
        **info,
    )
