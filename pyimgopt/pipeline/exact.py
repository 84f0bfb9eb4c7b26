"""Exact answers: the results of routes that keep every sample, and of keeping the original.

Owns how :mod:`.route` finishes when the answer is not a re-encode of decoded
pixels: a route that keeps every sample (the PNG file optimised as it is,
16-bit kept through libvips, a JPEG recompressed as JPEG XL) reports SSIM 1;
an original that pyimgopt cannot or must not re-encode (HEIF, which it does
not write; a deep or wide-gamut lossless JPEG XL; a TIFF whose samples it
cannot write back exactly) stays as it is, its metadata stripped losslessly
where there is any (:func:`.privacy.not_smaller`); and the not-smaller rule
for every route.
"""

from __future__ import annotations

from ..errors import DecodeError, EncodeError
from ..settings import Settings
from . import jxl, privacy

__all__ = ["finish_exact", "not_smaller", "original_kept", "jpeg_to_jxl", "validate"]


def not_smaller(data: bytes, out: bytes | None, info: dict, s: Settings, keep_icc: bool,
                orientation: int, in_place: bool, source_quality: int | None,
                stripped: bytes | None | object = ...,
                strip_notes: list[str] | None = None) -> tuple[bytes, dict]:
    """No encoding is smaller: skip, strip the metadata losslessly, or write the re-encode
    (:func:`.privacy.not_smaller`). A skipped result keeps no note about a strip it did not
    write."""
    fmt_in = info["format_in"]
    final, fields = privacy.not_smaller(
        data, fmt_in, out, info["format_out"], keep_metadata=s.keep_metadata, keep_icc=keep_icc,
        orientation=orientation, in_place=in_place, stripped=stripped, strip_notes=strip_notes)
    if fields["lossless"]:  # the input's own pixels: its quality, and an SSIM of 1 only if written
        info.update(quality=source_quality, ssim=None if fields["status"] == "skipped" else 1.0)
    info.update(status=fields["status"], format_out=fields["format_out"])
    notes = list(info["notes"])
    if fields["status"] == "skipped":  # the file is the input: no strip and no re-encode happened
        dropped = {privacy.STRIP_NOTE, *(strip_notes or ())}
        notes = [n for n in notes if n not in dropped]
    info["notes"] = tuple(dict.fromkeys([*notes, *fields["notes"]]))
    return final, info


def validate(pr, path: str | None) -> None:
    """Decode once to prove the image data is sound (a route that copies it must not pass junk)."""
    try:
        pr.image.load()
    except Exception as exc:
        kind = "truncated" if "truncated" in str(exc).lower() else "corrupt"
        raise DecodeError(f"{kind} {pr.format} data: {exc}", path=path, stage="decode") from None


def finish_exact(route: tuple[bytes, list[str]], data: bytes, s: Settings, info: dict,
                 lap, in_place: bool, *, size: tuple[int, int], keep_icc: bool,
                 orientation: int = 1) -> tuple[bytes, dict]:
    """Result of a route that keeps every sample: SSIM 1; not smaller, the not-smaller rule
    (skipped, or the metadata stripped losslessly, ``orientation`` kept for the stored pixels)."""
    out, notes = route
    lap("encode")
    fmt = info["format_in"] if not out.startswith(b"\x89PNG") else "png"
    info.update(format_out=fmt, width=size[0], height=size[1], frames=1, quality=None,
                ssim=1.0, notes=tuple(notes))
    if len(out) >= len(data) and fmt == info["format_in"] and not s.allow_larger:
        return not_smaller(data, out, info, s, keep_icc, orientation, in_place, None)
    info["status"] = "optimized"
    return out, info


def original_kept(data: bytes, info: dict, notes: list[str], s: Settings, in_place: bool, *,
                  size: tuple[int, int], keep_icc: bool, orientation: int, why: str):
    """The (decoded, valid) original stays as it is: ``skipped``, or its metadata stripped
    losslessly unless ``keep_metadata``; never a re-encode (``why`` says why not). To an
    output, a file whose metadata cannot be removed fails rather than being published."""
    info.update(format_out=info["format_in"], width=size[0], height=size[1], frames=1,
                quality=None, ssim=None, notes=tuple(dict.fromkeys([*notes, why])))
    return not_smaller(data, None, info, s, keep_icc, orientation, in_place, None)


def jpeg_to_jxl(data: bytes, s: Settings, pr, orientation: int, info: dict, lap,
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
    lap("encode")
    info.update(format_out="jxl", width=header.width, height=header.height, frames=1,
                quality=None, ssim=1.0, status="optimized",
                notes=(f"lossless JPEG recompression: {which} is rebuilt from the JPEG XL "
                       "byte for byte (checked)",))
    return out, info
