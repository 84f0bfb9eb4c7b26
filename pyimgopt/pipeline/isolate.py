"""Isolate: run a native call on hostile bytes where it cannot end this process.

Owns :func:`call`, which runs one function of an optional native package in a
child process and hands back its bytes, or raises :class:`NativeFailure`
saying how the call failed. Needed where a library's error path ends the
process instead of returning: libjpeg's default ``error_exit`` calls
``exit()``, and ``mozjpeg-lossless-optimization`` installs no handler of its
own, so a corrupt JPEG that Pillow decodes (coefficients out of range, say)
would otherwise end the sidecar, or the program that embeds pyimgopt, with
status 1. On Linux the child is a ``fork`` of this process (a few ms; only
the C call and a pipe write run in it, then ``os._exit``); elsewhere a fresh
interpreter (``sys.executable``) imports the package. Whatever the child
prints on stderr (libjpeg's message) becomes the failure's message.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import warnings

__all__ = ["NativeFailure", "call"]

_FORK = sys.platform.startswith("linux") and hasattr(os, "fork")
_CHILD = (
    "import importlib, json, sys\n"
    "fn = getattr(importlib.import_module(sys.argv[1]), sys.argv[2])\n"
    "sys.stdout.buffer.write(bytes(fn(sys.stdin.buffer.read(), **json.loads(sys.argv[3]))))\n"
)


class NativeFailure(Exception):
    """The isolated call failed: it raised, or its library ended the child process."""


def call(module: str, function: str, data: bytes, **kwargs) -> bytes:
    """``module.function(data, **kwargs)`` run in a child process; its ``bytes`` result.

    ``kwargs`` must be JSON values (they cross to a fresh interpreter where
    there is no ``fork``).

    Raises
    ------
    NativeFailure
        The function raised, its library ended the process (``exit``,
        ``abort``, a signal), or no child could be started.
    """
    if not _FORK:
        return _spawned(module, function, data, kwargs)
    try:
        return _forked(module, function, data, kwargs)
    except OSError as exc:  # no fork (memory, process limit): never run it here instead
        raise NativeFailure(f"could not start an isolated process: {exc}") from None


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _forked(module: str, function: str, data: bytes, kwargs: dict) -> bytes:
    fn = getattr(importlib.import_module(module), function)  # imported here, not in the child
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns that fork() in a threaded process may deadlock the child:
        # this child takes no lock another thread could hold (one C call, os.write, _exit).
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: never returns
        status = 0
        try:
            os.close(out_r)
            os.close(err_r)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.dup2(err_w, 2)
            result = memoryview(bytes(fn(data, **kwargs)))
            while result:
                result = result[os.write(out_w, result):]
        except BaseException as exc:  # reported to the parent, never raised here
            try:
                os.write(err_w, f"{type(exc).__name__}: {exc}".encode(errors="replace")[:4000])
            except BaseException:
                pass
            status = 3
        finally:
            os._exit(status)
    os.close(out_w)
    os.close(err_w)
    done = False
    try:
        out = _read_all(out_r)
        err = _read_all(err_r)
        _, status = os.waitpid(pid, 0)
        done = True
    finally:
        os.close(out_r)
        os.close(err_r)
        if not done:  # interrupted (a signal handler raised): leave no child behind
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except OSError:
                pass
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        return out
    raise NativeFailure(_why(err, status))


def _why(err: bytes, status: int) -> str:
    text = " ".join(err.decode(errors="replace").split())[:300] or "no message"
    if os.WIFSIGNALED(status):
        return f"{text} (the library was killed by signal {os.WTERMSIG(status)})"
    code = os.WEXITSTATUS(status)
    if code == 3:
        return text
    return f"{text} (the library ended its process with status {code})"


def _spawned(module: str, function: str, data: bytes, kwargs: dict) -> bytes:
    try:
        res = subprocess.run([sys.executable, "-c", _CHILD, module, function, json.dumps(kwargs)],
                             input=data, capture_output=True, timeout=600)
    except (OSError, subprocess.SubprocessError) as exc:
        raise NativeFailure(f"could not run an isolated process: {exc}") from None
    if res.returncode == 0:
        return res.stdout
    text = " ".join(res.stderr.decode(errors="replace").split())[-300:] or "no message"
    raise NativeFailure(f"{text} (status {res.returncode})")
