"""What may be written when metadata is to be stripped: the lossless strip and the not-smaller rule.

Owns the decisions of the pipeline about metadata. :func:`lossless_strip` is the
no-re-encode answer for a file whose pixels do not change: its metadata
removed by byte surgery (:func:`.strip.strip_lossless`), plus mozjpeg's
lossless pass for JPEG. :func:`not_smaller` decides what happens when no
encoding is smaller than the input, so that a file is never published with
the GPS or camera data the settings strip:

- nothing to remove (or ``keep_metadata``): ``skipped``, the output is the
  input byte for byte (in place: the original is left untouched);
- the metadata can be removed losslessly: ``optimized``, the stripped file
  (no bigger than the input; TIFF/AVIF are blanked at the same size);
- it cannot (a structure the strippers do not parse): to an output the
  re-encoded, stripped image is written although it is larger (noted); in
  place the original is left untouched, ``skipped`` with a note that its
  metadata is still there.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import EncodeError
from ..settings import Settings
from . import boost, isolate
from .colour import profile_must_stay
from .strip import strip_jpeg, strip_lossless

__all__ = ["lossless_strip", "not_smaller", "jpeg_lossless", "jpeg_for_jxl", "STRIP_NOTE"]

STRIP_NOTE = "lossless metadata strip (no re-encode)"


#: Up to this many bytes (the stripped JPEG) mozjpeg's lossless pass always runs:
#: it costs tens of milliseconds there, and its saving has no useful bound
#: (79 % on a small mostly black file written with the standard Huffman tables).
ALWAYS_PASS_BYTES = 256 * 1024

#: Above :data:`ALWAYS_PASS_BYTES` the pass (0.4-3 s of wall time on a 4-9 MP
#: file) is skipped when the re-encode is already under this fraction of the
#: stripped file. On the broad corpus every JPEG whose pass went below 0.75 was
#: either under 256 KiB or re-encoded far smaller still (an 8.9 MB wallpaper: pass
#: 0.163 of the input, re-encode 0.023).
PASS_SKIP_RATIO = 0.75


def lossless_strip(data: bytes, fmt: str, *, keep_icc: bool, orientation: int,
                   notes: list[str] | None = None, beat: int | None = None) -> bytes | None:
    """``data`` without metadata and with the same pixels, or ``None`` when that is impossible.

    JPEG also gets mozjpeg's lossless entropy re-optimisation when it is
    installed and smaller (it copies the markers the strip kept: JFIF, Adobe,
    ICC, the minimal orientation EXIF), run where a libjpeg ``exit()`` on a
    corrupt file cannot end this process (:func:`.boost.jpeg_lossless`); when
    mozjpeg refuses the file, the strip is returned without the pass and a
    note goes into ``notes``. ``beat``: the size of the re-encode this result
    competes with (``None``: no competitor). The pass runs on every stripped
    JPEG up to :data:`ALWAYS_PASS_BYTES`; above that it is skipped only when
    ``beat`` is under :data:`PASS_SKIP_RATIO` of the stripped size (how much
    the pass saves has no useful bound: 2-15 % typically on the broad corpus,
    but 84 % on an 8.9 MB file, whose re-encode was smaller still).
    """
    out = strip_lossless(data, fmt, keep_icc=keep_icc, orientation=orientation)
    if out is not None and fmt == "jpeg" and (
            beat is None or len(out) <= ALWAYS_PASS_BYTES or beat >= PASS_SKIP_RATIO * len(out)):
        try:
            moz = boost.jpeg_lossless(out, keep_markers=True)
        except isolate.NativeFailure as exc:
            if notes is not None:
                notes.append(boost.refused_note("mozjpeg's lossless pass", exc))
            moz = None
        if moz is not None and len(moz) < len(out):
            out = moz
    return out


def not_smaller(
    data: bytes,
    fmt_in: str,
    reencoded: bytes | None,
    reencoded_fmt: str,
    *,
    keep_metadata: bool,
    keep_icc: bool,
    orientation: int,
    in_place: bool,
    stripped: bytes | None | object = ...,
    strip_notes: list[str] | None = None,
) -> tuple[bytes, dict]:
    """The bytes to write and the Result fields when ``reencoded`` is not smaller than ``data``.

    Returns ``(output, fields)`` where ``fields`` has ``status``,
    ``format_out``, ``lossless`` (the output's pixels are the input's) and
    ``notes`` to add. See the module docstring for the rule. ``stripped``
    is :func:`lossless_strip`'s answer when the caller already has it (and
    ``strip_notes`` the notes it gave).
    ``reencoded`` is ``None`` when there is no re-encode (HEIF, which
    pyimgopt does not write): a file whose metadata cannot be removed then
    fails with ``encode_failed`` instead of being copied to an output.

    Raises
    ------
    EncodeError
        No lossless strip, no re-encode, and not in place.
    """
    as_is = ("output was not smaller than the input" if reencoded is not None
             else "nothing to strip: the file is left as it is")
    if keep_metadata:
        return data, _skipped(fmt_in, as_is)
    strip_notes = list(strip_notes or ())
    if stripped is ...:
        strip_notes = []
        stripped = lossless_strip(data, fmt_in, keep_icc=keep_icc, orientation=orientation,
                                  notes=strip_notes)
    if stripped == data:
        return data, _skipped(fmt_in, as_is)
    if isinstance(stripped, bytes) and len(stripped) <= len(data):
        why = [] if reencoded is None else ["a re-encode was not smaller than the input"]
        return stripped, {"status": "optimized", "format_out": fmt_in, "lossless": True,
                          "notes": [STRIP_NOTE, *why, *strip_notes]}
    what = f"metadata of this {fmt_in.upper()} file cannot be removed without re-encoding"
    if reencoded is None and not in_place:  # nothing else to write: refuse rather than publish
        raise EncodeError(f"{what}, and it is not re-encoded; set keep_metadata=True to copy it "
                          "as it is, or choose another output format", stage="encode")
    if in_place or reencoded is None:
        return data, _skipped(fmt_in, f"{what}, and the re-encoded file is larger: the original, "
                                      "metadata included, is left unchanged")
    return reencoded, {"status": "optimized", "format_out": reencoded_fmt, "lossless": False,
                       "notes": [f"{what}: the re-encoded file is written although it is larger "
                                 "than the input"]}


def _skipped(fmt_in: str, note: str) -> dict:
    return {"status": "skipped", "format_out": fmt_in, "lossless": True, "notes": [note]}


def jpeg_lossless(data: bytes, s: Settings, pr, orientation: int, info: dict,
                  lap: Callable[[str], None], in_place: bool) -> tuple[bytes, dict]:
    """JPEG to JPEG with zero pixel change: strip metadata, re-optimise the entropy coding.

    An EXIF orientation 2-8 is kept as a minimal EXIF holding only that tag
    (never the rest of the APP segments); ``keep_metadata`` keeps them all.
    When the markers do not parse, the metadata cannot be removed without a
    re-encode, which ``lossless=True`` forbids: in place the original is left
    as it is (``skipped``, noted), to an output the file fails with
    ``encode_failed`` rather than publishing its metadata. ``lap(stage)``
    marks the end of the encode stage; returns (output bytes, Result fields).
    """
    from .decode import estimate_jpeg_quality

    icc_nonsrgb = profile_must_stay(pr.image.info.get("icc_profile"))
    notes = ["lossless JPEG mode (no re-encode)"]
    if s.keep_metadata:
        base = data
    else:
        base = strip_lossless(data, "jpeg", keep_icc=icc_nonsrgb, orientation=orientation)
    swap = orientation in (5, 6, 7, 8)
    info.update(format_out="jpeg", width=pr.height if swap else pr.width,
                height=pr.width if swap else pr.height, frames=1,
                quality=estimate_jpeg_quality(pr.image), ssim=1.0)
    if base is None:
        why = ("its metadata cannot be removed without re-encoding (the JPEG markers do not "
               "parse), and lossless=True forbids a re-encode")
        if in_place:
            info.update(status="skipped", ssim=None,
                        notes=(*notes, f"original left unchanged: {why}"))
            return data, info
        raise EncodeError(f"{why}; set keep_metadata=True to copy it as it is, or "
                          "lossless=False", stage="encode")
    try:
        out = boost.jpeg_lossless(base, keep_markers=True)  # copies what the strip kept
    except isolate.NativeFailure as exc:
        notes.append(boost.refused_note("mozjpeg's lossless pass", exc))
        out = base
    if out is None:
        notes.append(boost.missing_note("mozjpeg"))
        out = base
    out = min(out, base, key=len)
    lap("encode")
    info["notes"] = tuple(notes)
    if len(out) >= len(data) and not s.allow_larger:
        stripped_something = not s.keep_metadata and out != data
        if not stripped_something or (in_place and len(out) > len(data)):
            info.update(status="skipped", ssim=None)
            info["notes"] = (*info["notes"], "output was not smaller than the input")
            return data, info
        info["notes"] = (*info["notes"], STRIP_NOTE)  # metadata removed: never publish it
    info["status"] = "optimized"
    return out, info


def jpeg_for_jxl(data: bytes, s: Settings, pr, orientation: int) -> tuple[bytes, str]:
    """The JPEG to recompress as JPEG XL: metadata stripped losslessly unless kept, and a note."""
    icc_nonsrgb = profile_must_stay(pr.image.info.get("icc_profile"))
    # libjxl takes the orientation from EXIF into the codestream: it survives as a
    # minimal EXIF holding only that tag (never the GPS and camera tags beside it).
    if s.keep_metadata:
        return data, "the original JPEG"
    stripped = strip_jpeg(data, keep_icc=icc_nonsrgb, orientation=orientation)
    if stripped is None:
        raise EncodeError("the JPEG's metadata cannot be removed without re-encoding (its "
                          "markers do not parse)", stage="encode")
    return stripped, "the metadata-stripped JPEG"
