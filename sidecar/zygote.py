"""The zygote: one pre-imported process that forks the pool's sidecars warm.

Owns starting pool sidecars without paying an interpreter start and the
pipeline's imports for each one: ``python -m pyimgopt_sidecar.zygote
--control-fd N`` imports what a sidecar runs (the pipeline with NumPy and
the native core, ZeroMQ's and msgpack's modules), says ``ready``, then
forks one sidecar per ``spawn`` it is sent; once idle it loads every
Pillow plugin too, for the sidecars it forks later. Of the optional codecs it
imports the light ones (oxipng, mozjpeg, imagequant); pyvips, HEIF and JPEG
XL stay unimported: a sidecar imports one when a job first needs it.

It **never runs a codec and never starts a thread**: a child forked from a
process with other threads inherits locks and pools whose threads do not
exist in it. So it creates no ZeroMQ context (that starts I/O threads), it
is started with ``OPENBLAS_NUM_THREADS=1`` (NumPy's BLAS would start a
thread at import), and before each fork it checks that it still has
exactly one thread (:func:`single_threaded`), refusing the spawn otherwise
(the router then starts that sidecar the plain way).

The wire to the router is a Unix ``SOCK_SEQPACKET`` pair inherited at
start, one JSON datagram per message. The router sends ``spawn`` (the
sidecar's arguments, with a request ``id``); the zygote answers
``spawned`` (``id``, ``pid``, and the child's pidfd attached where the
kernel has them, so the router signals and waits on exactly that process)
or ``refused`` (``id``, ``error``), and ``exit`` (``pid``, ``code``) for
each child it reaps. A child waits until its ``spawned`` report has left
before it runs, so the router knows a pid before that sidecar can say
hello. The zygote exits when the router closes the pair or dies (the
kernel closes a dead process's end); its children, whose parent it is,
then exit too.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import sys

__all__ = ["main", "single_threaded"]

#: Optional codecs imported here (a few ms each); pyvips, HEIF and JPEG XL load
#: in a sidecar when a job first needs them (libvips may start threads).
_LIGHT_CODECS = ("oxipng", "mozjpeg", "imagequant")
#: Largest datagram either side sends.
MAX_DATAGRAM = 65536


def single_threaded() -> bool:
    """Whether this process has exactly one thread (the only state in which forking is safe).

    Counts the kernel's threads (``/proc/self/task``), so native threads no
    Python code knows of (a codec's pool, OpenBLAS, ZeroMQ's I/O threads)
    count too.
    """
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        import threading

        return threading.active_count() == 1


def _prepare() -> None:
    """Import what every sidecar runs, without running anything (before ``ready``)."""
    import msgpack  # noqa: F401
    import zmq  # noqa: F401  (the module only: a Context would start threads)

    import pyimgopt.pipeline  # noqa: F401
    import pyimgopt_sidecar.__main__  # noqa: F401
    import pyimgopt_sidecar.worker  # noqa: F401
    from pyimgopt.pipeline import boost

    for name in _LIGHT_CODECS:  # extension modules that start no thread at import
        boost.available(name)


def _prepare_more() -> None:
    """Once idle after the first forks: every Pillow plugin (~45 ms, off the first
    sidecars' path; those load the plugins their files need)."""
    from PIL import Image

    Image.init()


def _prctl(option: int, arg: int | bytes) -> None:
    """Linux ``prctl`` (best effort: elsewhere, or without libc, nothing happens)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        value = ctypes.c_char_p(arg) if isinstance(arg, bytes) else ctypes.c_ulong(arg)
        libc.prctl(option, value, 0, 0, 0)
    except Exception:
        pass


_PR_SET_NAME = 15


def _send(sock: socket.socket, msg: dict, fds: list[int] | None = None) -> None:
    data = json.dumps(msg).encode()
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.send(data)


def _child(argv: list[str], closing: list[int], go: int) -> None:
    """In the forked child: wait for the go, become a sidecar, never return."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for fd in closing:  # by number: the control socket's object is never closed here
            try:
                os.close(fd)
            except OSError:
                pass
        os.read(go, 1)  # the router has our pid before we say hello
        os.close(go)
        _prctl(_PR_SET_NAME, b"pyimgopt-sidecar")
        from pyimgopt_sidecar.__main__ import main as sidecar_main

        code = sidecar_main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _spawn(sock: socket.socket, msg: dict, closing: list[int]) -> None:
    rid = msg.get("id")
    argv = msg.get("argv")
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        _send(sock, {"t": "refused", "id": rid, "error": "spawn needs a list of str arguments"})
        return
    if not single_threaded():
        _send(sock, {"t": "refused", "id": rid, "error": "the zygote has more than one thread: "
                     "forking it is unsafe"})
        return
    go_r, go_w = os.pipe()
    me = os.getpid()  # taken before the fork: a child must never watch pid 1 instead
    try:
        pid = os.fork()
    except OSError as exc:
        os.close(go_r)
        os.close(go_w)
        _send(sock, {"t": "refused", "id": rid, "error": f"fork failed: {exc}"})
        return
    if pid == 0:
        os.close(go_w)
        # the sidecar exits when its parent (this zygote) is gone
        _child([*argv, "--parent", str(me)], closing, go_r)
    os.close(go_r)
    pidfd = None
    if hasattr(os, "pidfd_open"):
        try:
            pidfd = os.pidfd_open(pid)  # before it can be reaped: this is that process
        except OSError:
            pidfd = None
    try:
        _send(sock, {"t": "spawned", "id": rid, "pid": pid}, [pidfd] if pidfd is not None else None)
    except OSError:
        os.kill(pid, signal.SIGKILL)  # nobody would know of it: it never runs
        raise
    finally:
        if pidfd is not None:
            os.close(pidfd)
        os.write(go_w, b"g")
        os.close(go_w)


def _reap(sock: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send(sock, {"t": "exit", "pid": pid, "code": os.waitstatus_to_exitcode(status)})


def serve(sock: socket.socket, parent: int | None) -> int:
    """Answer the router on ``sock`` until it closes it (or ``parent`` dies); return an exit code."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    os.set_blocking(wake_r, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes select through the wakeup fd
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the router's to handle
    closing = [sock.fileno(), wake_r, wake_w]
    warm = False
    try:
        _send(sock, {"t": "ready", "pid": os.getpid()})
    except OSError:
        return 0  # the router is gone already
    while True:
        try:
            ready, _, _ = select.select([sock, wake_r], [], [], 1.0 if warm else 0.2)
        except InterruptedError:
            continue
        if not ready and not warm:
            _prepare_more()
            warm = True
            continue
        if wake_r in ready:
            try:
                while os.read(wake_r, 512):
                    pass
            except BlockingIOError:
                pass
        try:
            _reap(sock)
            if sock in ready:
                data = sock.recv(MAX_DATAGRAM)
                if not data:
                    return 0  # the router closed its end (or died)
                try:
                    msg = json.loads(data)
                except ValueError:
                    msg = {}
                if msg.get("t") == "spawn":
                    _spawn(sock, msg, closing)
        except OSError:
            return 0  # the router's end is gone
        if parent is not None and os.getppid() != parent:
            return 3


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, import, and serve spawn requests until the router lets go."""
    p = argparse.ArgumentParser(prog="python -m pyimgopt_sidecar.zygote",
                                description="pre-imported process that forks pool sidecars")
    p.add_argument("--control-fd", type=int, required=True, help="the router's SOCK_SEQPACKET socket")
    p.add_argument("--parent", type=int, default=None, help="exit when this pid is gone")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the router's to handle
    a = p.parse_args(argv)
    _prctl(_PR_SET_NAME, b"pyimgopt-zygote")
    if a.parent is not None and os.getppid() != a.parent:
        return 3  # the router died before we started
    sock = socket.socket(fileno=a.control_fd)
    _prepare()
    return serve(sock, a.parent)


if __name__ == "__main__":
    sys.exit(main())
