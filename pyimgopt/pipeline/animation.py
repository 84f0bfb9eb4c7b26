"""Animations: exact frame timing and loop counts, read from the bytes and written per format.

Owns what an animation's timing is and how each output format stores it.
:func:`read_timing` parses the source container itself (GIF graphic control
and NETSCAPE blocks, APNG ``acTL``/``fcTL``, WebP ``ANIM``/``ANMF``) rather
than trusting Pillow's ``info``, so a GIF without a loop block plays once, a
0 ms frame stays 0 ms and an APNG delay of 1/30 s stays 1/30 s. Durations are
exact :class:`~fractions.Fraction` milliseconds; the loop is the *total number
of plays* (0 = forever), which is how WebP, APNG and browsers count (GIF's
NETSCAPE value is the number of repeats: plays - 1). :func:`save_params`
turns that into each encoder's parameters and says, in notes, where a format
cannot hold a timing exactly (GIF's 1/100 s ticks, AVIF's whole milliseconds
and its endless loop in this Pillow). Also owns the lossless GIF → GIF path
(:func:`gif_lossless`): frames, palettes, disposal, transparency and deltas
are the source's own bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from fractions import Fraction

__all__ = ["Timing", "read_timing", "apply_timing", "save_params", "gif_lossless"]

_FOREVER = 0


@dataclass
class Timing:
    durations: list[Fraction]  # milliseconds per frame, exact
    plays: int  # total plays; 0 = forever


def _gif_timing(data: bytes) -> Timing | None:
    if len(data) < 13 or data[:3] != b"GIF":
        return None
    pos, n = 13, len(data)
    if data[10] & 0x80:
        pos += 3 << ((data[10] & 7) + 1)
    durations: list[Fraction] = []
    delay = 0
    plays = 1  # no NETSCAPE block: the animation plays once
    while pos < n:
        sep = data[pos]
        if sep == 0x3B:
            break
        if sep == 0x21 and pos + 2 < n:
            label = data[pos + 1]
            if label == 0xF9 and pos + 8 <= n and data[pos + 2] == 4:
                delay = struct.unpack("<H", data[pos + 4 : pos + 6])[0]
            elif label == 0xFF and data[pos + 2] == 11 and data[pos + 3 : pos + 14] in (
                b"NETSCAPE2.0", b"ANIMEXTS1.0"
            ):
                sub = pos + 14
                if sub + 4 <= n and data[sub] >= 3 and data[sub + 1] == 1:
                    repeats = struct.unpack("<H", data[sub + 2 : sub + 4])[0]
                    plays = _FOREVER if repeats == 0 else repeats + 1
            pos += 2
        elif sep == 0x2C and pos + 10 <= n:
            durations.append(Fraction(delay * 10))
            delay = 0  # a GCE applies to the one image that follows it
            packed = data[pos + 9]
            pos += 10
            if packed & 0x80:
                pos += 3 << ((packed & 7) + 1)
            pos += 1
        else:
            break
        while pos < n:  # sub-blocks
            size = data[pos]
            pos += 1 + size
            if size == 0:
                break
    return Timing(durations, plays) if durations else None


def _apng_timing(data: bytes) -> tuple[Timing, bool] | None:
    """APNG timing, and whether the default image (IDAT) is outside the animation."""
    from .strip import png_chunks

    plays, durations, seen_idat, default_outside = None, [], False, False
    try:
        for ctype, start, end in png_chunks(data):
            body = data[start + 8 : end - 4]
            if ctype == b"acTL" and len(body) >= 8:
                plays = struct.unpack(">I", body[4:8])[0]
            elif ctype == b"fcTL" and len(body) >= 26:
                if not durations and seen_idat:
                    default_outside = True
                num, den = struct.unpack(">HH", body[20:24])
                durations.append(Fraction(num * 1000, den or 100))
            elif ctype == b"IDAT":
                seen_idat = True
    except ValueError:
        return None
    if plays is None or not durations:
        return None
    return Timing(durations, plays), default_outside


def _webp_timing(data: bytes) -> Timing | None:
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    pos, n = 12, len(data)
    plays, durations = None, []
    while pos + 8 <= n:
        fourcc = data[pos : pos + 4]
        (size,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        body = data[pos + 8 : pos + 8 + size]
        if fourcc == b"ANIM" and len(body) >= 6:
            plays = struct.unpack("<H", body[4:6])[0]
        elif fourcc == b"ANMF" and len(body) >= 16:
            durations.append(Fraction(int.from_bytes(body[12:15], "little")))
        pos += 8 + size + (size & 1)
    if plays is None or not durations:
        return None
    return Timing(durations, plays)


def read_timing(data: bytes, fmt: str) -> tuple[Timing, bool] | None:
    """The exact timing of the animation in ``data`` (format name ``fmt``), or ``None``.

    The flag says whether the first decoded frame is an APNG default image
    that is not part of the animation (viewers that animate never show it).
    AVIF and unparseable containers return ``None``: the caller keeps the
    decoder's values.
    """
    if fmt == "gif":
        timing = _gif_timing(data)
        return None if timing is None else (timing, False)
    if fmt == "png":
        return _apng_timing(data)
    if fmt == "webp":
        timing = _webp_timing(data)
        return None if timing is None else (timing, False)
    return None


def apply_timing(dec, data: bytes, fmt: str) -> None:
    """Set ``dec.durations`` (exact ms) and ``dec.loop`` (total plays, 0 = forever).

    Values come from :func:`read_timing`; a frame count that does not match
    the decoded frames, or a format it does not parse (AVIF), keeps the
    decoder's durations (never a made-up 100 ms: a missing value is 0) and
    an endless loop, AVIF's own default. An APNG default image outside the
    animation is dropped from the frames.
    """
    found = read_timing(data, fmt)
    if found is not None:
        timing, default_outside = found
        if default_outside and len(dec.frames) == len(timing.durations) + 1:
            dec.frames = dec.frames[1:]
        if len(timing.durations) == len(dec.frames):
            dec.durations, dec.loop = timing.durations, timing.plays
            return
    dec.durations = [Fraction(d or 0) for d in (dec.durations or [0] * len(dec.frames))]
    dec.loop = _FOREVER


def _cumulative_round(durations: list[Fraction], tick: int) -> list[int]:
    """Durations in whole ``tick`` ms whose running sums stay within half a tick of the source's."""
    out, total, written = [], Fraction(0), 0
    for d in durations:
        total += d
        end = int(total / tick + Fraction(1, 2)) * tick
        out.append(end - written)
        written = end
    return out


def save_params(dec, fmt: str) -> tuple[dict, list[str]]:
    """Encoder parameters for ``dec``'s timing in ``fmt``, and notes on what is inexact.

    GIF: delays in 1/100 s, rounded so the running time drifts at most 5 ms;
    no NETSCAPE block when the animation plays once, else repeats = plays - 1.
    WebP: whole ms (running time rounded), loop count = plays. APNG: the
    exact fraction (numerator and denominator up to 65535), num_plays = plays.
    AVIF: whole ms; this Pillow writes no loop count, so an AVIF animation
    loops forever (noted when the source does not).
    """
    if len(dec.frames) < 2:
        return {}, []
    durations = [Fraction(d) for d in (dec.durations or [0] * len(dec.frames))]
    plays = _FOREVER if dec.loop is None else int(dec.loop)
    notes: list[str] = []
    params: dict = {}
    if fmt == "gif":
        ticks = _cumulative_round(durations, 10)
        if ticks != durations:
            notes.append("GIF stores frame delays in 1/100 s: some delays were rounded")
        params["duration"] = ticks
        if plays != 1:
            repeats = 0 if plays == _FOREVER else plays - 1
            if repeats > 0xFFFF:
                notes.append(f"GIF holds at most 65535 repeats; the source plays {plays} times")
            params["loop"] = min(repeats, 0xFFFF)
    elif fmt in ("webp", "avif"):
        whole = _cumulative_round(durations, 1)
        if whole != durations:
            notes.append(f"{fmt.upper()} stores frame delays in whole milliseconds: some were rounded")
        params["duration"] = whole
        if fmt == "webp":
            if plays > 0xFFFF:
                notes.append(f"WebP holds at most 65535 plays; the source plays {plays} times")
            params["loop"] = min(plays, 0xFFFF)
        elif plays != _FOREVER:
            notes.append(f"AVIF animations written by this Pillow loop forever; the source plays {plays} time(s)")
    elif fmt == "png":
        if any(Fraction(d / 1000).limit_denominator(65535) != d / 1000 for d in durations):
            notes.append("APNG delays are fractions of 16-bit numbers: some were approximated")
        params["duration"] = [float(d) for d in durations]
        params["loop"] = plays
    return params, notes


def gif_lossless(data: bytes, keep_metadata: bool) -> tuple[bytes, list[str]] | None:
    """GIF → GIF with every frame's bytes kept: the metadata-stripped source, or ``None``.

    Frames, local palettes, disposal methods, transparent indices, frame
    offsets (the deltas), delays and the loop block are copied byte for byte;
    only comment and application blocks go (:func:`.containers.strip_gif`).
    With ``keep_metadata`` the source is the answer as it is. ``None`` when
    the block structure does not parse (the caller re-encodes).
    """
    from .containers import strip_gif

    if keep_metadata:
        return data, ["animated GIF kept as it is (frames, palettes, disposal and timing)"]
    out = strip_gif(data)
    if out is None:
        return None
    if out == data:
        return out, ["animated GIF kept as it is (frames, palettes, disposal and timing)"]
    return out, ["animated GIF kept frame for frame; metadata blocks removed (no re-encode)"]
