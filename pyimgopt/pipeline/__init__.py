"""The pipeline: one image in, one optimised image (or a typed error) out.

Owns the order of the stages — read with limits → probe → decode
(shrink-on-load) → auto-orient and convert to sRGB → resize → encode
candidates → pick → atomic write → :class:`~pyimgopt.result.Result` — and the
rules that bind them: never larger than the input unless allowed, never a
lost or truncated original; and the cheap answers before any decoding: an
input the optimisation manifest (a job's ``known`` hint) or its own in-file
marker says is already optimised with these settings is ``unchanged``
(:mod:`pyimgopt.manifest`, :mod:`.marker`), and a dry run writes nothing. A
pure function of (input, :class:`Settings`, hint): no sockets, no global state.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable

from ..errors import InternalError, InvalidSettingsError, PyimgoptError, ScopeDeniedError, TooLargeError
from ..manifest import COPIED_NOTE, content_hash, marker_key, match
from ..result import Result
from ..settings import Settings
from . import marker
from .boost import native_error
from .encode import EXTENSIONS
from .probe import sniff
from ..formats import output_name
from .route import Clock, run
from .target import run_sized
from .write import TEMP_SUFFIX, atomic_write, expected_parent, read_input

__all__ = ["optimize_bytes", "optimize_file", "output_name", "EXTENSIONS", "TEMP_SUFFIX", "sniff"]

def _failed(exc: BaseException, path: str | None, clock: Clock, start: float, **kw) -> Result:
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


def _already_done(data: bytes, digest: str, s: Settings, known: dict | None,
                  in_place: bool) -> tuple[dict, bool, str] | None:
    """``(recorded result fields, copy?, note)`` when ``data`` is known to be done:
    its hash is in the manifest's hint, or (``mark``) it carries a valid marker of
    these settings. None otherwise (the file runs)."""
    entry = match(known, digest)
    if entry is not None:
        copy = bool(entry.get("copy")) and not in_place
        return dict(entry.get("result") or {}), copy, "unchanged: optimised with these settings " \
            "by this version before (manifest)"
    if s.mark and marker.check(data, marker_key(s)):
        fmt = sniff(data[:64])
        return ({"format_in": fmt, "format_out": fmt, "bytes_out": len(data), "output_hash": digest},
                not in_place, "unchanged: its pyimgopt marker says it was optimised with these "
                "settings by this version")
    return None


def _unchanged(src: str | None, dst: str | None, data: bytes, digest: str, hit: tuple[dict, bool, str],
               clock: Clock, start: float, dry_run: bool) -> Result:
    rec, copy, note = hit
    notes = (note, COPIED_NOTE) if copy else (note,)
    fmt = rec.get("format_in") or sniff(data[:64])
    return Result(
        input=src, output=dst if copy or not rec.get("output") else rec["output"],
        status="unchanged", format_in=fmt, format_out=rec.get("format_out") or fmt,
        bytes_in=len(data), bytes_out=len(data) if copy else rec.get("bytes_out", len(data)),
        width_in=rec.get("width_in"), height_in=rec.get("height_in"), width=rec.get("width"),
        height=rec.get("height"), frames=rec.get("frames") or 1, quality=rec.get("quality"),
        ssim=rec.get("ssim"), seconds=time.perf_counter() - start, stages=clock.stages, notes=notes,
        input_hash=digest, output_hash=digest if copy else rec.get("output_hash", digest),
        dry_run=dry_run)


def _route(data: bytes, s: Settings, path: str | None, clock: Clock, *, in_place: bool):
    """The route, under ``target_size`` when set (:mod:`.target`)."""
    if s.target_size is not None:
        return run_sized(data, s, path, clock, in_place=in_place)
    return run(data, s, path, clock, in_place=in_place)


def _marked(out: bytes, info: dict, s: Settings, data: bytes) -> bytes:
    """``out`` with the in-file marker when ``s.mark`` asks for it and the format holds
    one — unless the marker would make a smaller output not smaller than the input, or
    push it over ``target_size``."""
    if not s.mark or info.get("status") != "optimized" or out is data:
        return out
    tagged = marker.add(out, info["format_out"], marker_key(s))
    if tagged is None or (len(out) < len(data) <= len(tagged)) or (
            s.target_size is not None and len(tagged) > s.target_size):
        return out
    return tagged


def optimize_bytes(
    data: bytes,
    settings: Settings | None = None,
    *,
    progress: Callable[[str], None] | None = None,
    in_place: bool = False,
    admit: Callable[..., None] | None = None,
    known: dict | None = None,
    force: bool = False,
) -> tuple[bytes, Result]:
    """Optimise an image held in memory.

    ``in_place=True`` says the bytes will replace their source: the format is
    kept (``auto`` picks within it; a named other format is refused).

    ``known`` is the optimisation manifest's hint for these bytes
    (:meth:`pyimgopt.manifest.Manifest.hint`): when their hash is listed — or,
    with ``settings.mark``, when they carry a valid marker of these settings —
    the result is ``unchanged`` and the bytes returned are the input's own,
    without decoding. ``force=True`` ignores both.

    ``progress(stage)`` is called as each stage ends; if it raises, the
    pipeline stops there and the exception propagates. ``admit(probe,
    nbytes)`` is called once the header is probed, before decoding, with
    the :class:`~.probe.Probe` and the input's size; it may raise the same way.

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
    clock = Clock(progress, admit)
    digest = content_hash(data)
    if not force:
        hit = _already_done(data, digest, s, known, in_place)
        if hit is not None:
            return data, _unchanged(None, None, data, digest, hit, clock, start, False)
    try:
        out, info = _route(data, s, None, clock, in_place=in_place)
        out = _marked(out, info, s, data)
    except PyimgoptError:
        raise
    except MemoryError:
        raise TooLargeError("out of memory", stage="decode") from None
    except BaseException as exc:  # a Rust panic from a codec is a BaseException (boost.native_error)
        if not native_error(exc):
            raise
        raise _failed(exc, None, clock, start).error from exc  # type: ignore[misc]
    return out, Result(
        input=None,
        output=None,
        bytes_out=len(out),
        seconds=time.perf_counter() - start,
        stages=clock.stages,
        input_hash=digest,
        output_hash=digest if out is data else content_hash(out),
        **info,
    )


def optimize_file(
    src: str | os.PathLike,
    dst: str | os.PathLike | None = None,
    settings: Settings | None = None,
    *,
    progress: Callable[[str], None] | None = None,
    expect: dict | None = None,
    outputs: dict[str, str] | None = None,
    admit: Callable[..., None] | None = None,
    known: dict | None = None,
    force: bool = False,
    dry_run: bool = False,
) -> Result:
    """Optimise the file ``src`` and write it to ``dst`` (``None``: in place).

    ``expect`` — ``{"dev", "ino"}`` of the checked input and optionally
    ``{"parent_dev", "parent_ino", "parent_depth"}`` of the deepest existing
    folder above the checked output (:func:`~.write.parent_anchor`) — makes
    the read and the write refuse a path that was swapped after it was
    checked; missing output folders are created beneath that folder only.

    ``outputs`` — ``{format: path}`` of the names a checker allowed — makes a
    ``format="auto"`` result that changes the extension refuse (``scope_denied``,
    nothing written) a name not in it.

    ``known`` — the optimisation manifest's hint (:meth:`pyimgopt.manifest.Manifest.hint`)
    — and, with ``settings.mark``, the file's own marker make a file already
    optimised with these settings ``unchanged`` at the cost of reading and
    hashing it: nothing decoded, nothing written — except to an output folder
    when the input is itself such an output: then it is copied there.
    ``force=True`` ignores both. ``dry_run=True`` runs everything and writes
    nothing: the result describes what would be written (``dry_run`` set).

    ``progress(stage)`` is called as each stage ends (``read``, ``probe``,
    ``decode``, ``resize``, ``encode``, ``write``); an exception it raises
    (a :class:`PyimgoptError` such as ``CancelledError``) stops the pipeline
    before anything is written and becomes the failed result. ``admit(probe,
    nbytes)`` is called once the header is probed, before decoding (see
    :func:`optimize_bytes`); what it raises ends the job the same way.

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
    clock = Clock(progress, admit)
    try:
        want = None if expect is None else (expect["dev"], expect["ino"])
        data, st = read_input(src_s, s.max_input_bytes, expect=want)
        clock.lap("read")
        digest = content_hash(data)
        hit = None if force else _already_done(data, digest, s, known, in_place)
        if hit is not None:
            if hit[1] and not dry_run:  # the input is an output of these settings: copy it
                parent, depth = expected_parent(expect)
                atomic_write(dst_s, data, expect_parent=parent, create_depth=depth)
            clock.lap("write")
            return _unchanged(src_s, dst_s, data, digest, hit, clock, start, dry_run)
        out, info = _route(data, s, src_s, clock, in_place=in_place)
        out = _marked(out, info, s, data)
        if s.format == "auto" and not in_place and info["format_out"] != info["format_in"]:
            dst_s = os.path.splitext(dst_s)[0] + EXTENSIONS[info["format_out"]]
            if outputs is not None and outputs.get(info["format_out"]) != dst_s:
                raise ScopeDeniedError(
                    f"format auto chose {info['format_out'].upper()}, but writing {dst_s} is not "
                    "allowed (write scope, deny pattern or overwrite)", path=src_s, stage="write")
        if (info["status"] == "skipped" and in_place) or dry_run:
            pass  # the original stays exactly as it was; a dry run writes nothing
        else:
            parent, depth = expected_parent(expect)
            atomic_write(dst_s, out, mode=st.st_mode if in_place else None, expect_parent=parent,
                         create_depth=depth, unchanged=st if in_place else None)
        clock.lap("write")
    except MemoryError:
        return _failed(TooLargeError("out of memory", stage="decode"), src_s, clock, start)
    except BaseException as exc:  # a Rust panic from a codec is a BaseException (boost.native_error)
        if not native_error(exc):
            raise
        return _failed(exc, src_s, clock, start)
    return Result(
        input=src_s,
        output=dst_s,
        bytes_out=len(out),
        seconds=time.perf_counter() - start,
        stages=clock.stages,
        input_hash=digest,
        output_hash=digest if out is data else content_hash(out),
        dry_run=dry_run,
        **info,
    )
