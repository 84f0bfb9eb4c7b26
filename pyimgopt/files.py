"""File safety below the router and the pipeline: atomic writes, bounded reads, output names.

Owns the only way pyimgopt puts bytes on disk: a temporary file in the
destination folder, written in full, fsynced, then renamed over the target
and the folder fsynced. A crash at any point leaves either the old file or the
new one, never a truncated mix; the temporary file is removed on every error.
Also owns reading an input with the ``max_input_bytes`` limit checked before
the bytes are read, the folder anchors (device, inode) a write is checked
against, and the file extension of each output format. The router (checks,
inline jobs, clean-up of a lost worker's temporary files) and the pipeline
both use it; it imports neither, and never looks at pixels.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import stat

from .errors import IOFailureError, ScopeDeniedError, SourceChangedError, TooLargeError

__all__ = ["parent_anchor", "expected_parent", "read_input", "atomic_write", "remove_stale_temps",
           "clean_after_lost_writer", "TEMP_SUFFIX", "EXTENSIONS"]

#: The file extension of each output format.
EXTENSIONS = {
    "jpeg": ".jpg",
    "png": ".png",
    "webp": ".webp",
    "avif": ".avif",
    "gif": ".gif",
    "tiff": ".tiff",
    "bmp": ".bmp",
    "jxl": ".jxl",
}

#: Every temporary file pyimgopt creates ends with this suffix.
TEMP_SUFFIX = ".pyimgopt-tmp"

#: A target's name is kept whole in its temporary file's name up to this many characters.
NAME_CUT = 100


def _temp_stem(name: str) -> str:
    """What stands for target ``name`` in its temporary files' names: the name itself, or
    (past :data:`NAME_CUT` characters) its first characters, ``~`` and a short hash of the
    whole name, so two long names sharing a beginning never share temporary files."""
    if len(name) <= NAME_CUT:
        return name
    return name[:NAME_CUT] + "~" + hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:8]


def _temp_pattern(name: str) -> re.Pattern:
    """Exactly the temporary files :func:`atomic_write` makes for target ``name``."""
    return re.compile(r"\." + re.escape(_temp_stem(name)) + r"\.[0-9a-f]{8}" + re.escape(TEMP_SUFFIX), re.S)


def read_input(
    path: str, max_bytes: int, *, expect: tuple[int, int] | None = None
) -> tuple[bytes, os.stat_result]:
    """Read a regular file of at most ``max_bytes``; return (bytes, stat).

    With ``expect`` = (st_dev, st_ino) — what a checker saw when it approved
    the path — the last component must not be a symlink and the opened file
    must be that very file: a path swapped between check and open is refused.
    Opening never blocks (a FIFO is refused, not waited on).

    Raises
    ------
    IOFailureError
        Missing, unreadable or not a regular file.
    ScopeDeniedError
        ``expect`` given and the file is not the one that was checked.
    TooLargeError
        Larger than ``max_bytes`` (checked with ``fstat`` before reading).
    """
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
    if expect is not None:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise IOFailureError("input does not exist", path=path, stage="read") from None
    except IsADirectoryError:
        raise IOFailureError("input is a directory", path=path, stage="read") from None
    except OSError as exc:
        if expect is not None and exc.errno == errno.ELOOP:
            raise ScopeDeniedError("input became a symlink after it was checked",
                                   path=path, stage="read") from None
        raise IOFailureError(
            f"cannot open input: {exc.strerror}", path=path, stage="read",
            retryable=exc.errno in (errno.EINTR, errno.EAGAIN, errno.EBUSY, errno.EMFILE),
        ) from None
    try:
        st = os.fstat(fd)
        if expect is not None and (st.st_dev, st.st_ino) != tuple(expect):
            raise ScopeDeniedError("input changed between check and open", path=path, stage="read")
        if not stat.S_ISREG(st.st_mode):
            raise IOFailureError("input is not a regular file", path=path, stage="read")
        if st.st_size > max_bytes:
            raise TooLargeError(
                f"{st.st_size:,} bytes is over max_input_bytes={max_bytes:,}",
                path=path,
                stage="read",
            )
        if flags & getattr(os, "O_NONBLOCK", 0):
            os.set_blocking(fd, True)
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
        if isinstance(exc, (IOFailureError, ScopeDeniedError)):
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


def parent_anchor(output: str) -> tuple[int, int, int] | None:
    """``(st_dev, st_ino, depth)`` of the deepest existing folder above ``output``.

    ``depth`` counts the folders below it that do not exist yet. A checker
    records this with the approved path; :func:`atomic_write` given it
    creates the missing folders beneath that very folder and nowhere else.
    ``None`` when not even ``/`` can be stat-ed.
    """
    folder = os.path.dirname(os.path.abspath(output))
    depth = 0
    while True:
        try:
            st = os.stat(folder)
            return st.st_dev, st.st_ino, depth
        except OSError:
            up = os.path.dirname(folder)
            if up == folder:
                return None
            folder, depth = up, depth + 1


def expected_parent(expect: dict | None) -> tuple[tuple[int, int] | None, int]:
    """``(expect_parent, create_depth)`` for :func:`atomic_write` from a checker's
    ``expect`` dict (``parent_dev``, ``parent_ino``, ``parent_depth``); ``(None, 0)``
    when it recorded no folder."""
    if expect is None or expect.get("parent_ino") is None:
        return None, 0
    return (expect["parent_dev"], expect["parent_ino"]), int(expect.get("parent_depth") or 0)


def atomic_write(
    path: str,
    data: bytes,
    *,
    mode: int | None = None,
    expect_parent: tuple[int, int] | None = None,
    create_depth: int = 0,
    unchanged: os.stat_result | None = None,
) -> None:
    """Replace ``path`` with ``data`` atomically and durably.

    The folder is opened once; the temporary file is created in it with
    ``O_EXCL|O_NOFOLLOW``, written, fsynced and renamed over the target
    relative to that folder handle, so a folder swapped after the check
    cannot redirect the write. With ``expect_parent`` = (st_dev, st_ino) of
    the folder a checker approved — ``path``'s folder, or its ancestor
    ``create_depth`` levels up when the last ``create_depth`` folders did not
    exist yet (see :func:`parent_anchor`) — that folder is opened without
    following a final symlink and must be the one checked; the missing folders
    are then made and entered one at a time with ``mkdirat`` and
    ``O_NOFOLLOW``, so a symlink planted on the way is refused, never
    followed. Without ``expect_parent`` missing folders are simply created.
    ``mode`` sets the permission bits (an in-place rewrite passes the
    original's); a new file gets ``0o666`` minus the umask. With ``unchanged``
    — the stat of ``path`` taken when it was read (an in-place rewrite) — the
    target is stat'ed again just before the rename and, if its size, mtime,
    ctime or inode differ (the user saved it meanwhile), nothing is written.

    Raises
    ------
    IOFailureError
        The folder cannot be created or written, the disk is full, ...; the
        target is then untouched and no temporary file remains.
    ScopeDeniedError
        ``expect_parent`` given and a folder on the way is not the one checked.
    SourceChangedError
        ``unchanged`` given and ``path`` is no longer that file as it was read;
        the target is untouched and no temporary file remains.
    """
    folder = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    dflags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
    missing: list[str] = []
    if expect_parent is not None and create_depth > 0:
        for _ in range(create_depth):
            folder, comp = os.path.split(folder)
            missing.insert(0, comp)
    try:
        if expect_parent is None:
            os.makedirs(folder, exist_ok=True)
        else:
            dflags |= getattr(os, "O_NOFOLLOW", 0)
        dfd = os.open(folder, dflags)
    except OSError as exc:
        if expect_parent is not None and exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise ScopeDeniedError("output folder became a symlink after it was checked",
                                   path=path, stage="write") from None
        raise IOFailureError(
            f"cannot write in output folder: {exc.strerror or exc}", path=path, stage="write"
        ) from None
    try:
        if expect_parent is not None:
            st = os.fstat(dfd)
            if (st.st_dev, st.st_ino) != tuple(expect_parent):
                raise ScopeDeniedError("output folder changed after it was checked",
                                       path=path, stage="write")
        for comp in missing:
            try:
                os.mkdir(comp, 0o777, dir_fd=dfd)
            except FileExistsError:
                pass
            except OSError as exc:
                raise IOFailureError(f"cannot create output folder: {exc.strerror or exc}",
                                     path=path, stage="write") from None
            try:
                nfd = os.open(comp, dflags, dir_fd=dfd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise ScopeDeniedError("a symlink appeared in the output path after it was "
                                           "checked", path=path, stage="write") from None
                raise IOFailureError(f"cannot open output folder: {exc.strerror or exc}",
                                     path=path, stage="write") from None
            os.close(dfd)
            dfd = nfd
        _write_in(dfd, name, data, mode, path, unchanged)
    finally:
        os.close(dfd)


def _same_file(dfd: int, name: str, was: os.stat_result, path: str) -> None:
    try:
        now = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except OSError:
        now = None
    key = ("st_size", "st_mtime_ns", "st_ctime_ns", "st_ino", "st_dev")
    if now is None or any(getattr(now, k) != getattr(was, k) for k in key):
        raise SourceChangedError("the file changed on disk while it was optimised; the new "
                                 "content was kept and nothing written", path=path, stage="write")


def _write_in(dfd: int, name: str, data: bytes, mode: int | None, path: str,
              unchanged: os.stat_result | None = None) -> None:
    tmp = None
    try:
        for _ in range(100):
            candidate = f".{_temp_stem(name)}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
            try:
                fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | getattr(os, "O_CLOEXEC", 0), 0o600, dir_fd=dfd)
            except FileExistsError:
                continue
            tmp = candidate
            break
        else:
            raise IOFailureError("cannot create a temporary file", path=path, stage="write")
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fchmod(fd, stat.S_IMODE(mode if mode is not None else 0o666 & ~_umask()))
            os.fsync(fd)
        finally:
            os.close(fd)
        if unchanged is not None:
            _same_file(dfd, name, unchanged, path)
        os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        tmp = None
        try:
            os.fsync(dfd)
        except OSError:
            pass
    except BaseException as exc:
        if tmp is not None:
            try:
                os.unlink(tmp, dir_fd=dfd)
            except OSError:
                pass
        if isinstance(exc, OSError) and not isinstance(exc, (IOFailureError, ScopeDeniedError)):
            raise IOFailureError(
                f"cannot write output: {exc.strerror or exc}", path=path, stage="write",
                retryable=exc.errno in (errno.EINTR, errno.EAGAIN, errno.EBUSY),
            ) from None
        raise


def remove_stale_temps(path: str) -> int:
    """Remove temporary files a killed writer of ``path`` left behind; return how many.

    Only the names :func:`atomic_write` makes for this very target
    (``.NAME.XXXXXXXX`` + :data:`TEMP_SUFFIX`, eight hex digits; a name past
    :data:`NAME_CUT` characters is cut and carries a hash of the whole) in
    its folder are touched: never those of ``NAME.png`` or ``NAME.webp``
    beside it. Call it only when no
    writer of ``path`` can still be running (its process is dead).
    """
    folder = os.path.dirname(os.path.abspath(path))
    pattern = _temp_pattern(os.path.basename(path))
    removed = 0
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    for name in names:
        if pattern.fullmatch(name):
            try:
                os.unlink(os.path.join(folder, name))
                removed += 1
            except OSError:
                pass
    return removed


def clean_after_lost_writer(target: str, auto: bool) -> int:
    """Remove what a dead writer of ``target`` left; with ``auto`` also under its other names.

    ``format="auto"`` may have renamed the output to another format's
    extension, so every :data:`EXTENSIONS` name of the same stem is swept
    too. Same rule as :func:`remove_stale_temps`: only when that writer is
    certainly gone. Returns how many files were removed.
    """
    removed = remove_stale_temps(target)
    if auto:
        stem = os.path.splitext(target)[0]
        for ext in EXTENSIONS.values():
            if stem + ext != target:
                removed += remove_stale_temps(stem + ext)
    return removed
