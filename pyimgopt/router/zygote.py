"""The router's end of the zygote: pool sidecars forked warm instead of started cold.

Owns starting ``python -m pyimgopt_sidecar.zygote`` (once per pool, or early
by the command line through :func:`prestart`, so that its imports overlap
the command line's own), asking it for sidecars, reading its reports, and
:class:`WarmProcess`, the ``subprocess.Popen``-like handle of a forked
sidecar (``pid``, ``returncode``, ``poll``, ``wait``, ``kill``,
``send_signal``) that the pool supervises like a process it started itself.

The zygote is the forked sidecars' parent, so it reaps them and reports
their exit codes; the router holds a pidfd of each (where the kernel has
them), so a signal or a wait always reaches that very process even after
its pid is reused. Nothing here imports the sidecar package: the zygote is
started by module name, like a sidecar.
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time

__all__ = ["WarmProcess", "Zygote", "adopt", "pool_env", "prestart"]

_MAX_DATAGRAM = 65536
#: Seconds an ended sidecar's exit code may take to arrive from the zygote.
REPORT_GRACE = 0.25


def pool_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of pool sidecars (and of the zygote that forks them).

    One codec thread per sidecar (oxipng's rayon pool, AVIF's encoder, NumPy's
    BLAS): the pool owns the parallelism, so the cores are not
    oversubscribed. glibc: two arenas; buffers under 32 MiB come from the heap
    and are reused job after job, the top of the heap goes back to the OS past
    64 MiB. (A lone ``MALLOC_TRIM_THRESHOLD_`` also freezes the mmap threshold
    at 128 KiB, so every image buffer was a fresh mmap that faulted in: ~10 %
    slower.)
    """
    env = dict(os.environ if base is None else base)
    env.update({"MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": str(32 * 1024 * 1024),
                "MALLOC_TRIM_THRESHOLD_": str(64 * 1024 * 1024),
                "RAYON_NUM_THREADS": "1", "PYIMGOPT_CODEC_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})
    return env


class WarmProcess:
    """A sidecar the zygote forked, handled like a ``subprocess.Popen``."""

    def __init__(self, zygote: Zygote, pid: int, pidfd: int | None) -> None:
        self.pid = pid
        self.args = ["pyimgopt_sidecar (forked by the zygote)"]
        self.returncode: int | None = None
        self._zygote = zygote
        self._pidfd = pidfd
        self._dead_at: float | None = None  # when it was first seen ended without a report

    def _exited(self, code: int) -> None:
        if self.returncode is None:
            self.returncode = code
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    def _dead(self) -> bool:
        """Whether the process has ended (reaped or not)."""
        if self._pidfd is not None:
            return bool(select.select([self._pidfd], [], [], 0)[0])
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def poll(self) -> int | None:
        """The exit code once the process has ended; None while it runs.

        The code is the zygote's report of it; when the process has ended
        (its pidfd says so) and no report comes within :data:`REPORT_GRACE`
        seconds — the zygote is stopped, stuck or gone — the code is unknown
        and reads as ``-SIGKILL``."""
        if self.returncode is None:
            self._zygote.drain()
        if self.returncode is None and self._dead():
            now = time.monotonic()
            if self._dead_at is None:
                self._dead_at = now
            if not self._zygote.alive or now - self._dead_at >= REPORT_GRACE:
                self._exited(-signal.SIGKILL)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the exit code, at most ``timeout`` seconds (``TimeoutExpired`` past it)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            left = 0.05 if deadline is None else min(0.05, deadline - time.monotonic())
            if left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout)
            self._zygote.wait_readable(left)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        """Signal the process, unless it has already exited."""
        if self.returncode is not None:
            return
        try:
            if self._pidfd is not None:
                signal.pidfd_send_signal(self._pidfd, sig)
            else:
                os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


class Zygote:
    """One zygote process and the router's end of its control socket."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            # its own process group: a terminal's Ctrl-C is the router's to
            # handle (it stops the pool), never a traceback from the zygote
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pyimgopt_sidecar.zygote", "--control-fd", str(theirs.fileno()),
                 "--parent", str(os.getpid())],
                stdin=subprocess.DEVNULL, env=env, pass_fds=(theirs.fileno(),), process_group=0)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock = ours
        try:  # opened before it can be reaped: waits and kills reach this very process
            self._pidfd: int | None = os.pidfd_open(self.proc.pid)
        except (AttributeError, OSError):
            self._pidfd = None
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self.started = time.monotonic()
        self.ready = False
        self.alive = True
        self.why_dead: str | None = None
        self.pending: dict[int, float] = {}  # spawn request id -> when asked
        self.refused: list[str] = []  # why spawns were refused, not yet read by the pool
        self.spawned: list[WarmProcess] = []  # forked, not yet taken by the pool
        self._live: dict[int, WarmProcess] = {}  # pid -> handle, until its exit is reported

    def spawn(self, argv: list[str]) -> bool:
        """Ask for one sidecar run with ``argv`` (the arguments after ``-m pyimgopt_sidecar``)."""
        with self._lock:
            if not self.alive:
                return False
            rid = next(self._ids)
            try:
                self._sock.send(json.dumps({"t": "spawn", "id": rid, "argv": argv}).encode())
            except OSError as exc:
                self._die(f"the zygote's socket failed ({exc})")
                return False
            self.pending[rid] = time.monotonic()
            return True

    def drain(self) -> None:
        """Read every report waiting on the control socket."""
        with self._lock:
            while self.alive:
                try:
                    data, fds, _flags, _addr = socket.recv_fds(self._sock, _MAX_DATAGRAM, 1)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError as exc:
                    self._die(f"the zygote's socket failed ({exc})")
                    return
                if not data:
                    self._die("the zygote exited")
                    for fd in fds:
                        os.close(fd)
                    return
                try:
                    msg = json.loads(data)
                except ValueError:
                    msg = {}
                self._on(msg, fds)

    def _on(self, msg: dict, fds: list[int]) -> None:
        t = msg.get("t")
        if t == "spawned" and isinstance(msg.get("pid"), int):
            self.pending.pop(msg.get("id"), None)
            proc = WarmProcess(self, msg["pid"], fds[0] if fds else None)
            fds = fds[1:]
            self._live[proc.pid] = proc
            self.spawned.append(proc)
        elif t == "refused":
            self.pending.pop(msg.get("id"), None)
            self.refused.append(str(msg.get("error")))
        elif t == "exit" and isinstance(msg.get("pid"), int):
            proc = self._live.pop(msg["pid"], None)
            if proc is not None:
                proc._exited(int(msg.get("code", -1)))
        elif t == "ready":
            self.ready = True
        for fd in fds:
            os.close(fd)

    def wait_readable(self, timeout: float) -> None:
        """Sleep until the zygote has something to report (at most ``timeout`` seconds)."""
        if self.alive:
            try:
                select.select([self._sock], [], [], max(0.0, timeout))
            except (OSError, ValueError):
                time.sleep(max(0.0, timeout))
        else:
            time.sleep(max(0.0, timeout))

    def take(self) -> tuple[list[WarmProcess], list[str]]:
        """The sidecars forked and the refusals since the last call."""
        self.drain()
        with self._lock:
            spawned, self.spawned = self.spawned, []
            refused, self.refused = self.refused, []
        return spawned, refused

    def stale(self, now: float, grace: float) -> bool:
        """Whether a spawn has waited longer than ``grace`` seconds (a zygote stuck at start)."""
        return any(now - t > grace for t in self.pending.values())

    def abandon(self) -> None:
        """Forget the spawns asked and not answered (they are started another way)."""
        with self._lock:
            self.pending.clear()

    def _die(self, why: str) -> None:
        self.alive = False
        self.why_dead = self.why_dead or why
        self.refused.extend(why for _ in self.pending)
        self.pending.clear()

    def close(self, timeout: float = 5.0) -> None:
        """Let the zygote go (it exits when its socket closes); kill it if it does not.

        One that never said ready (still importing, or stuck there) is killed
        at once: it has forked nothing and would not read its socket."""
        with self._lock:
            if self.alive:
                self._die("closed")
            try:
                self._sock.close()
            except OSError:
                pass
        if not self.ready and self.proc.poll() is None:
            self.proc.kill()
        _wait_exit(self.proc, self._pidfd, timeout)
        if self.proc.poll() is None:
            self.proc.kill()
            _wait_exit(self.proc, self._pidfd, 5)
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        for proc in list(self._live.values()):  # forked sidecars outlive no zygote for long
            if proc._dead():
                proc._exited(-signal.SIGKILL)


def _wait_exit(proc: subprocess.Popen, pidfd: int | None, timeout: float) -> None:
    """Wait up to ``timeout`` s for ``proc`` to end, woken by its pidfd at once where there is one
    (``Popen.wait`` polls with sleeps growing to 50 ms)."""
    if proc.returncode is not None:
        return
    if pidfd is not None:
        select.select([pidfd], [], [], max(0.0, timeout))
    try:
        proc.wait(0 if pidfd is not None else timeout)
    except subprocess.TimeoutExpired:
        pass


_early: Zygote | None = None
_early_lock = threading.Lock()


def prestart() -> None:
    """Start a zygote now, for the next local pool of this process to adopt.

    The command line calls this first thing, so that the zygote's imports
    run while the command line imports and sets up its router. A zygote no
    pool adopts exits with this process (its socket closes).
    """
    global _early
    with _early_lock:
        if _early is None:
            try:
                _early = Zygote(pool_env())
            except OSError:
                _early = None
            else:
                atexit.register(_discard)


def _discard() -> None:
    """At exit: stop a prestarted zygote no pool adopted (it would only finish its imports)."""
    global _early
    with _early_lock:
        z, _early = _early, None
    if z is not None:
        z.proc.kill()
        z.close()


def adopt(env: dict[str, str]) -> Zygote | None:
    """The prestarted zygote, if there is one started with ``env`` and still alive."""
    global _early
    with _early_lock:
        z, _early = _early, None
    if z is None:
        return None
    z.drain()
    if z.alive and z.env == env:
        return z
    z.close()
    return None
