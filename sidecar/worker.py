"""The sidecar's job loop: one worker process of the pyimgopt pool.

Owns the DEALER connection to the router, the ``ready`` announcement (slots),
heartbeats (sent by the main thread while jobs run in worker threads; the
native kernels release the GIL, but a codec that holds it for a whole call —
pyoxipng 9.1 does — also holds back the heartbeat until that call returns:
the router then sees this process's CPU time advance, and ZeroMQ's own
heartbeats are answered by libzmq's I/O thread), running the pipeline on
each job, the memory estimate from the image's header and the ``need`` for
more than the router reserved (asked before decoding), streaming
``progress``, returning ``result`` or ``failed`` with the structured error,
honouring ``abort`` (the job stops between stages, nothing is written),
``register`` (announce again to a router that lost track of us) and
``shutdown``, and recycling itself after N jobs, after serving for a
while, or when its RSS passes a cap (after the job in hand). Inline jobs
(image bytes in a frame) run on bytes and return the output bytes; path jobs
read and write through the pipeline's atomic writer.

A job should cost what it costs in process: the memory estimate takes the
header the pipeline probes anyway (its ``admit`` hook), so nothing is read
twice; decoded settings are kept per distinct settings; workers wake
the loop through a pipe, once per batch of replies; RSS is read only when
the process's peak says it may be over a limit.
"""

from __future__ import annotations

import collections
import ctypes
import dataclasses
import functools
import os
import queue
import resource
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field

import zmq

from pyimgopt import protocol
from pyimgopt.errors import (
    CancelledError,
    InternalError,
    JobTimeoutError,
    ProtocolError,
    PyimgoptError,
)
from pyimgopt.manifest import COPIED_NOTE
from pyimgopt.pipeline import optimize_bytes, optimize_file

from .memory import estimate_from_probe

__all__ = ["Sidecar", "rss_bytes"]

#: Stages announced to the router as ``progress`` (each also renews the job's lease).
_REPORTED_STAGES = frozenset({"decode", "resize", "encode"})
#: ... once the job has run this long: a host redraws from progress, and for
#: a job of a few milliseconds the messages cost more than the job itself.
PROGRESS_AFTER = 0.05

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """Resident set size of this process, in bytes (0 where unknown)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


#: Above this RSS a finished job hands freed heap back to the OS (glibc's
#: ``malloc_trim``). Not after every job: a trim costs 0.5-5 ms and makes the
#: next image fault its buffers in again (~10 % on the corpus), while below
#: this the heap is simply reused, so RSS stays flat either way.
TRIM_ABOVE_RSS = 256 * 1024 * 1024


@functools.lru_cache(maxsize=1)
def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def _peak_rss() -> int:
    """The highest RSS this process ever had, in bytes (one cheap system call;
    the current RSS is never above it, so below a limit nothing more is read)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _trim_heap() -> None:
    """Give freed heap back to the OS (glibc) when RSS is above :data:`TRIM_ABOVE_RSS`."""
    libc = _libc()
    if libc is None or _peak_rss() <= TRIM_ABOVE_RSS or rss_bytes() <= TRIM_ABOVE_RSS:
        return
    try:
        libc.malloc_trim(0)
    except AttributeError:
        pass


@dataclass
class _Running:
    job: str
    attempt: int
    abort: threading.Event = field(default_factory=threading.Event)
    granted: threading.Event = field(default_factory=threading.Event)
    grant_ok: bool = False


class _Dropped(BaseException):
    """The router took the job back (not enough memory yet): no reply is due.

    A BaseException, so that the pipeline, which turns any Exception into a
    failed result, lets it through."""


#: Settings decoded per distinct wire dict, at most this many kept.
_SETTINGS_CACHE = 32


def _settings_key(d: dict) -> tuple:
    return tuple(sorted((k, tuple(v) if type(v) is list else v) for k, v in d.items()))


class Sidecar:
    """A worker that serves jobs from the router at ``endpoint``.

    Parameters
    ----------
    endpoint:
        The router's sidecar endpoint (``ipc://``, ``tcp://`` or ``inproc://``).
    slots:
        Jobs run at once (worker threads); advertised in ``ready``.
    max_jobs:
        Recycle (exit cleanly) after this many jobs; ``None``: never.
    max_rss:
        Recycle when RSS passes this many bytes after a job; ``None``: never.
    max_age:
        Recycle after serving this many seconds (after the job in hand);
        ``None``: never.
    heartbeat:
        Seconds between heartbeats.
    router_timeout:
        Exit (code 3) when nothing has been heard from the router for this long.
    context:
        ZeroMQ context (required for ``inproc://``; default: a new one).
    parent:
        Exit when this process is no longer our parent (the router died), so
        a pool never leaves orphans behind.
    crash_on:
        Test-only: a job whose input path contains this text makes the
        process die at once (SIGKILL-like). ``None`` (the default): off.
    stall_on:
        Test-only: ``(text, seconds)``; a job whose input path contains the
        text waits that long (after its memory grant, abortable) before it
        runs, so a test can act on a job that is surely in progress without
        an expensive image. ``None`` (the default): off.
    cpu_per_job:
        CPU seconds a job may use (RLIMIT_CPU, raised before each job). Past
        it the job fails with ``timeout`` (not retried) and this sidecar
        exits, since a thread inside a C decoder cannot be interrupted.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        slots: int = 1,
        max_jobs: int | None = None,
        max_rss: int | None = None,
        max_age: float | None = None,
        heartbeat: float = 0.5,
        router_timeout: float = 15.0,
        inline: bool | None = None,
        curve: tuple[str, str] | None = None,
        name: str | None = None,
        context: zmq.Context | None = None,
        parent: int | None = None,
        crash_on: str | None = None,
        stall_on: tuple[str, float] | None = None,
        cpu_per_job: float | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.slots = max(1, int(slots))
        self.max_jobs = max_jobs
        self.max_rss = max_rss
        self.max_age = max_age
        self.heartbeat = heartbeat
        self.router_timeout = router_timeout
        self.curve = curve
        # A sidecar reached over TCP is taken to be on another machine: it gets
        # (and returns) image bytes inline and never sees the router's paths.
        self.inline = endpoint.startswith("tcp://") if inline is None else inline
        self.name = name or f"sidecar-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._ctx = context or zmq.Context.instance()
        self._jobs: queue.Queue = queue.Queue()
        self._outbox: collections.deque = collections.deque()
        self._running: dict[str, _Running] = {}
        self._done = 0
        self._stop = threading.Event()
        self._woken = False  # a wake-up byte is on its way (workers write it once per batch of replies)
        self._wake_r = self._wake_w = -1
        self._settings: dict[tuple, object] = {}
        self._crash_on = crash_on or None
        self._stall_on = stall_on if stall_on and stall_on[0] else None
        self.parent = parent
        self.cpu_per_job = cpu_per_job
        self._over_cpu = threading.Event()

    # -- worker threads -------------------------------------------------------------

    def _post(self, frames: list[bytes] | None, finished: str | None = None) -> None:
        # One append carries the reply and the "slot is free" mark together, so
        # the router can never see the result before this sidecar frees the slot.
        self._outbox.append((frames, finished))
        if not self._woken:  # the loop clears the flag before it empties the outbox
            self._woken = True
            try:
                os.write(self._wake_w, b"x")
            except OSError:
                pass  # full (it is awake anyway) or closed (stopping)

    def _unpack_settings(self, d: dict):
        try:
            key = _settings_key(d)
            hit = self._settings.get(key)
        except TypeError:  # an unhashable value: let unpack_settings say what is wrong
            key, hit = None, None
        if hit is None:
            hit = protocol.unpack_settings(d)
            if key is not None:
                if len(self._settings) >= _SETTINGS_CACHE:
                    self._settings.clear()
                self._settings[key] = hit
        return hit

    def _work(self) -> None:
        while True:
            msg = self._jobs.get()
            if msg is None:
                return
            self._run_job(msg)

    def _run_job(self, msg: protocol.Message) -> None:
        job, attempt = msg["job"], msg["attempt"]
        run = self._running[job]
        self._arm_cpu_limit()  # from when it starts, in its worker thread
        started = time.monotonic()

        def progress(stage: str) -> None:
            if run.abort.is_set() and stage != "write":
                raise CancelledError("aborted by the router", stage=stage)
            # the quick stages, and the stages of a quick job, would only add messages
            if stage in _REPORTED_STAGES and time.monotonic() - started >= PROGRESS_AFTER:
                self._post(protocol.encode("progress", job=job, attempt=attempt, stage=stage))

        def admit(pr, nbytes: int) -> None:
            self._admit(run, msg.get("mem"), estimate_from_probe(pr, nbytes))
            if self._stall_on and self._stall_on[0] in (msg.get("input") or ""):
                # test-only: a job surely in progress (its memory granted); an abort still ends it
                until = time.monotonic() + self._stall_on[1]
                while time.monotonic() < until and not run.abort.is_set():
                    time.sleep(0.02)

        bulk: list[bytes] = []
        try:
            settings = self._unpack_settings(msg["settings"])
            if self._crash_on and self._crash_on in (msg.get("input") or ""):
                os._exit(137)  # test-only: die like a hostile image would make us
            if msg["inline"]:
                if not msg.bulk:
                    raise ProtocolError("inline job without its image frame", stage="protocol")
                out, result = optimize_bytes(msg.bulk[0], settings, progress=progress,
                                             in_place=msg["in_place"], known=msg.get("known"),
                                             force=bool(msg.get("force")), admit=admit)
                if msg.get("dry_run"):
                    result = dataclasses.replace(result, dry_run=True)
                # nothing to write (a dry run, or unchanged and not copied): no bytes back
                idle = msg.get("dry_run") or (result.status == "unchanged"
                                              and COPIED_NOTE not in result.notes)
                bulk = [b"" if idle else out]
            else:
                dst = None if msg["in_place"] else msg["output"]
                result = optimize_file(msg["input"], dst, settings, progress=progress,
                                       expect=msg.get("expect"), outputs=msg.get("outputs"),
                                       known=msg.get("known"), force=bool(msg.get("force")),
                                       dry_run=bool(msg.get("dry_run")), admit=admit)
            if result.error is not None:
                reply = protocol.encode("failed", job=job, attempt=attempt,
                                        error=protocol.pack_error(result.error))
            else:
                reply = protocol.encode("result", bulk=bulk, job=job, attempt=attempt,
                                        result=protocol.pack_result(result))
        except _Dropped:
            self._post(None, finished=job)
            return
        except PyimgoptError as exc:
            reply = protocol.encode("failed", job=job, attempt=attempt, error=protocol.pack_error(exc))
        except Exception as exc:  # a bug: report it, keep serving
            err = InternalError(f"{type(exc).__name__}: {exc}", path=msg.get("input"), stage="sidecar")
            reply = protocol.encode("failed", job=job, attempt=attempt, error=protocol.pack_error(err))
        _trim_heap()
        self._post(reply, finished=job)

    def _admit(self, run: _Running, reserved: int | None, need: int) -> None:
        """The header says the job needs ``need`` bytes: when that is more than the
        router reserved, ask, and wait for the answer before decoding anything."""
        if reserved is None or need <= reserved:
            return
        self._post(protocol.encode("need", job=run.job, attempt=run.attempt, mem=int(need)))
        while not run.granted.wait(0.2):
            if run.abort.is_set():
                raise CancelledError("aborted by the router", stage="admission")
            if self._stop.is_set():
                raise _Dropped
        if not run.grant_ok:
            raise _Dropped

    # -- main loop -------------------------------------------------------------------

    def _arm_cpu_limit(self) -> None:
        """Let the next job use ``cpu_per_job`` more CPU seconds than used so far."""
        if not self.cpu_per_job:
            return
        import resource

        used = sum(os.times()[:2])
        soft = int(used + self.cpu_per_job) + 1
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        if hard != resource.RLIM_INFINITY:
            soft = min(soft, hard)
        try:  # only the soft limit moves: raising a hard limit needs privileges
            resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
        except (ValueError, OSError):
            pass

    def run(self) -> int:
        """Serve until shutdown, recycling or the router going away; return an exit code."""
        if self.cpu_per_job and threading.current_thread() is threading.main_thread():
            import signal

            signal.signal(signal.SIGXCPU, lambda *_: self._over_cpu.set())
        from pyimgopt.auth import check_not_abstract

        check_not_abstract(self.endpoint)  # anyone could own such a name: never take jobs from it
        sock = self._ctx.socket(zmq.DEALER)
        protocol.configure_socket(sock)
        if not self.endpoint.startswith("inproc://"):
            # ZeroMQ's heartbeats (answered by libzmq's I/O thread, GIL or not)
            # drop a dead connection; the DEALER then reconnects on its own.
            sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
            sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 10_000)
        if self.curve is not None:
            from pyimgopt.auth import make_client

            make_client(sock, self.curve[0], self.curve[1])
        sock.connect(self.endpoint)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        started_at = time.monotonic()
        threads = [threading.Thread(target=self._work, daemon=True, name=f"job-{i}")
                   for i in range(self.slots)]
        for t in threads:
            t.start()
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)

        def announce() -> None:
            sock.send_multipart(protocol.encode("ready", slots=self.slots, pid=os.getpid(), name=self.name,
                                                inline=self.inline))

        announce()
        next_beat = time.monotonic()
        last_heard = time.monotonic()
        recycling = False
        register_again = False
        code = 0
        linger = 0
        try:
            while True:
                now = time.monotonic()
                if self._over_cpu.is_set():
                    for run in list(self._running.values()):
                        sock.send_multipart(protocol.encode(
                            "failed", job=run.job, attempt=run.attempt,
                            error=protocol.pack_error(JobTimeoutError(
                                f"over the CPU limit of {self.cpu_per_job:g} s per job",
                                stage="sidecar", retryable=False))))
                    code = 4
                    break
                if self.parent is not None and os.getppid() != self.parent:
                    code = 3
                    break
                if now >= next_beat:
                    sock.send_multipart(protocol.encode(
                        "heartbeat", rss=rss_bytes(), busy=sorted(self._running)))
                    next_beat = now + self.heartbeat
                events = dict(poller.poll(max(1, int((next_beat - now) * 1000))))
                if self._wake_r in events:
                    self._woken = False  # cleared before the outbox is emptied: no reply is missed
                    try:
                        while os.read(self._wake_r, 512):
                            pass
                    except (BlockingIOError, InterruptedError):
                        pass
                while self._outbox:
                    frames, finished = self._outbox.popleft()
                    if finished is not None:
                        self._running.pop(finished, None)
                        self._done += 1
                        over_rss = (self.max_rss is not None and _peak_rss() > self.max_rss
                                    and rss_bytes() > self.max_rss)
                        too_old = self.max_age is not None and now - started_at >= self.max_age
                        if (self.max_jobs is not None and self._done >= self.max_jobs) or over_rss or too_old:
                            recycling = True
                    if frames is not None:  # None: a job the router took back
                        sock.send_multipart(frames)
                if recycling and not self._running:
                    # Jobs already on their way get an answer (no slot): the router
                    # queues them again at once instead of losing them with us.
                    while True:
                        try:
                            frames = sock.recv_multipart(zmq.NOBLOCK, copy=True)
                        except zmq.Again:
                            break
                        try:
                            msg = protocol.decode(frames)
                        except ProtocolError:
                            continue
                        if msg.type == "job":
                            sock.send_multipart(protocol.encode(
                                "failed", job=msg["job"], attempt=msg["attempt"],
                                error=protocol.pack_error(PyimgoptError(
                                    "sidecar is recycling", stage="dispatch", retryable=True))))
                    sock.send_multipart(protocol.encode("shutdown", reason="recycle"))
                    linger = 1000  # the router is there to hear it: let it leave
                    break
                if sock in events:
                    while True:
                        try:
                            frames = sock.recv_multipart(zmq.NOBLOCK, copy=True)
                        except zmq.Again:
                            break
                        last_heard = time.monotonic()
                        try:
                            msg = protocol.decode(frames)
                        except ProtocolError as exc:
                            print(f"{self.name}: dropped bad message: {exc}", file=sys.stderr)
                            continue
                        if msg.type == "job":
                            if recycling or register_again or len(self._running) >= self.slots:
                                sock.send_multipart(protocol.encode(
                                    "failed", job=msg["job"], attempt=msg["attempt"],
                                    error=protocol.pack_error(PyimgoptError(
                                        "sidecar has no free slot", stage="dispatch", retryable=True))))
                                continue
                            self._running[msg["job"]] = _Running(msg["job"], msg["attempt"])
                            self._jobs.put(msg)
                        elif msg.type == "grant":
                            run = self._running.get(msg["job"])
                            if run is not None and run.attempt == msg["attempt"]:
                                run.grant_ok = msg["ok"]
                                run.granted.set()
                        elif msg.type == "abort":
                            run = self._running.get(msg["job"])
                            if run is not None:
                                run.abort.set()
                        elif msg.type == "register":
                            # The router lost track of us (we were silent, or it
                            # restarted): what we run was given to others.
                            register_again = True
                            for run in self._running.values():
                                run.abort.set()
                        elif msg.type == "shutdown":
                            raise _Shutdown
                        # router heartbeats need no answer: our own beats go out on time
                if register_again and not self._running:
                    register_again = False
                    announce()
                # A job that held the GIL for a long time leaves the router's
                # messages waiting, not missing: only silence with nothing
                # waiting to be read means the router is gone.
                if time.monotonic() - last_heard > self.router_timeout and not sock.poll(0):
                    code = 3
                    break
        except _Shutdown:
            code = 0
        except KeyboardInterrupt:
            code = 130
        finally:
            self._stop.set()
            for _ in threads:
                self._jobs.put(None)
            for run in self._running.values():
                run.abort.set()
            for t in threads:
                t.join(timeout=5)
            # A recycle's goodbye gets a moment to leave; otherwise the router sees
            # the exit first and reports a loss.
            sock.close(linger)
            for fd in (self._wake_r, self._wake_w):
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._wake_r = self._wake_w = -1
        return code


class _Shutdown(Exception):
    pass
