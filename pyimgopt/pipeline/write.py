"""Atomic writes and bounded reads of image files.

Owns the only way pyimgopt puts bytes on disk: a temporary file in the
destination folder, written in full, fsynced, then renamed over the target
and the folder fsynced. A crash at any point leaves either the old file or the
new one, never a truncated mix; the temporary file is removed on every error.
Also owns reading an input with the ``max_input_bytes`` limit checked before
the bytes are read.
"""

from __future__ import annotations

import os
import stat
import tempfile

from ..errors import IOFailureError, TooLargeError

__all__ = ["read_input", "atomic_write", "remove_stale_temps", "TEMP_SUFFIX"]

#: Every temporary file pyimgopt creates ends with this suffix.
TEMP_SUFFIX = ".pyimgopt-tmp"


def read_input(path: str, max_bytes: int) -> tuple[bytes, os.stat_result]:
    """Read a regular file of at most ``max_bytes``; return (bytes, stat).

    Raises
    ------
    IOFailureError
        Missing, unreadable or not a regular file.
    TooLargeError
        Larger than ``max_bytes`` (checked with ``fstat`` before reading).
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise IOFailureError("input does not exist", path=path, stage="read") from None
    except IsADirectoryError:
        raise IOFailureError("input is a directory", path=path, stage="read") from None
    except OSError as exc:
        raise IOFailureError(
            f"cannot open input: {exc.strerror}", path=path, stage="read",
            retryable=exc.errno in (4, 11, 16, 24),  # EINTR, EAGAIN, EBUSY, EMFILE
        ) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise IOFailureError("input is not a regular file", path=path, stage="read")
        if st.st_size > max_bytes:
            raise TooLargeError(
                f"{st.st_size:,} bytes is over max_input_bytes={max_bytes:,}",
                path=path,
                stage="read",
            )
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise TooLargeError(
                    f"input grew past max_input_bytes={max_bytes:,} while being read",
                    path=path,
                    stage="read",
                )
        return b"".join(chunks), st
    except OSError as exc:
        if isinstance(exc, IOFailureError):
            raise
        raise IOFailureError(f"cannot read input: {exc.strerror}", path=path, stage="read") from None
    finally:
        os.close(fd)


def _umask() -> int:
    """The process umask, read without changing it (os.umask would race threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def _fsync_dir(folder: str) -> None:
    try:
        dfd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def atomic_write(path: str, data: bytes, *, mode: int | None = None) -> None:
    """Replace ``path`` with ``data`` atomically and durably.

    ``mode`` sets the file's permission bits (an in-place rewrite passes the
    original's); by default a new file gets ``0o666`` minus the umask.
    Missing parent folders are created.

    Raises
    ------
    IOFailureError
        The folder cannot be created or written, the disk is full, ...; the
        target is then untouched and no temporary file remains.
    """
    folder = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{name[:100]}.", suffix=TEMP_SUFFIX, dir=folder)
    except OSError as exc:
        raise IOFailureError(
            f"cannot write in output folder: {exc.strerror or exc}", path=path, stage="write"
        ) from None
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if mode is None:
                mode = 0o666 & ~_umask()
            os.fchmod(fd, stat.S_IMODE(mode))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise IOFailureError(
                f"cannot write output: {exc.strerror or exc}", path=path, stage="write",
                retryable=exc.errno in (4, 11, 16),
            ) from None
        raise
    _fsync_dir(folder)


def remove_stale_temps(path: str) -> int:
    """Remove temporary files a killed writer of ``path`` left behind; return how many.

    Only names :func:`atomic_write` makes for this target (``.NAME.*`` +
    :data:`TEMP_SUFFIX`) in its folder are touched. Call it only when no
    writer of ``path`` can still be running (its process is dead).
    """
    folder = os.path.dirname(os.path.abspath(path))
    prefix = f".{os.path.basename(path)[:100]}."
    removed = 0
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    for name in names:
        if name.startswith(prefix) and name.endswith(TEMP_SUFFIX):
            try:
                os.unlink(os.path.join(folder, name))
                removed += 1
            except OSError:
                pass
    return removed
