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

from ..errors import InternalError, InvalidSettingsError, PyimgoptError, ScopeDeniedError, TooLargeError
from ..result import Result
from ..settings import Settings
from .boost import native_error
from .encode import EXTENSIONS
from .probe import sniff
from .route import Clock, run
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


def optimize_bytes(
    data: bytes,
    settings: Settings | None = None,
    *,
    progress: Callable[[str], None] | None = None,
    in_place: bool = False,
    admit: Callable[..., None] | None = None,
) -> tuple[bytes, Result]:
    """Optimise an image held in memory.

    ``in_place=True`` says the bytes will replace their source: the format is
    kept (``auto`` picks within it; a named other format is refused).

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
    try:
        out, info = run(data, s, None, clock, in_place=in_place)
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
    outputs: dict[str, str] | None = None,
    admit: Callable[..., None] | None = None,
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
        out, info = run(data, s, src_s, clock, in_place=in_place)
        if s.format == "auto" and not in_place and info["format_out"] != info["format_in"]:
            dst_s = os.path.splitext(dst_s)[0] + EXTENSIONS[info["format_out"]]
            if outputs is not None and outputs.get(info["format_out"]) != dst_s:
                raise ScopeDeniedError(
                    f"format auto chose {info['format_out'].upper()}, but writing {dst_s} is not "
                    "allowed (write scope, deny pattern or overwrite)", path=src_s, stage="write")
        if info["status"] == "skipped" and in_place:
            pass  # the original stays exactly as it was
        else:
            parent, depth = expected_parent(expect)
            atomic_write(dst_s, out, mode=st.st_mode if in_place else None, expect_parent=parent,
                         create_depth=depth)
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
        **info,
    )
