"""The client a host application embeds: submit batches, follow them, steer them.

Owns the host-side API: :meth:`Client.local` (an embedded router thread and
its sidecar pool, on ipc endpoints in a private 0700 folder) and
:meth:`Client.connect` (a running router); turning paths into jobs and output
paths before anything is sent; :class:`Batch` with its event stream
(iterator, callback or ``async for``), ``wait``, ``cancel``, ``pause``,
``resume``. One I/O thread owns the ZeroMQ socket; callers talk to it through
a queue, so a Client may be used from any thread.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures as cf
import itertools
import operator
import os
import queue
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import zmq

from . import protocol
from .errors import InvalidSettingsError, IOFailureError, JobTimeoutError, ProtocolError, PyimgoptError, ScopeDeniedError
from .files import TEMP_SUFFIX
from .formats import output_name, sniff
from .auth import check_not_abstract, make_client
from .result import Result
from .security import Policy, clobbered_inputs, printable_path, utf8_name
from .settings import Settings

__all__ = ["Client", "Batch", "Event", "plan_jobs", "collect", "IMAGE_EXTENSIONS"]


@dataclass(frozen=True)
class Event:
    """One event of a batch: ``kind`` is one of ``protocol.EVENT_KINDS``."""

    kind: str
    batch: str
    job: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def result(self) -> Result | None:
        """The :class:`Result` carried by a ``result`` or ``failed`` event."""
        if self.kind == "result":
            return protocol.unpack_result(self.data["result"])
        if self.kind == "failed":
            err = protocol.unpack_error(self.data["error"])
            return Result(input=self.data.get("input"), output=None, status="failed", error=err)
        return None


#: Extensions a folder walk picks up even when the content is not an image we
#: read, so a mislabelled or unsupported file is reported, not silently skipped.
IMAGE_EXTENSIONS = frozenset(
    ".jpg .jpeg .jpe .jfif .png .apng .gif .webp .tif .tiff .bmp .dib .avif .avifs "
    ".heic .heif .svg .svgz .jxl .ico .psd .jp2".split()
)


def _looks_like_image(path: str, name: str) -> bool:
    if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
        return True
    try:
        with open(path, "rb") as fh:
            return sniff(fh.read(64)) is not None
    except OSError:
        return False


def collect(paths: list[str], out_dir: str | None) -> Iterator[tuple[str, str | None, str]]:
    """Yield (input, relative output path, walk root) for every file to process.

    A file argument is taken as is, whatever its name. A folder is walked
    recursively (hidden folders, the output folder and pyimgopt's temporary
    files excluded) and yields the files that have an image extension or
    image content. A missing path yields ``(path, None, path)`` so it is
    reported as a failure.
    """
    out_abs = os.path.realpath(out_dir) if out_dir else None
    seen: set[str] = set()
    for arg in paths:
        if os.path.isdir(arg):
            for root, dirs, files in os.walk(arg):
                dirs[:] = sorted(
                    d for d in dirs
                    if not d.startswith(".")
                    and os.path.realpath(os.path.join(root, d)) != out_abs
                )
                for name in sorted(files):
                    full = os.path.join(root, name)
                    if name.endswith(TEMP_SUFFIX) or not os.path.isfile(full):
                        continue
                    if not _looks_like_image(full, name):
                        continue
                    key = os.path.realpath(full)
                    if key in seen:
                        continue
                    seen.add(key)
                    yield full, os.path.relpath(full, arg), arg
        elif os.path.exists(arg):
            key = os.path.realpath(arg)
            if key not in seen:
                seen.add(key)
                yield arg, os.path.basename(arg), os.path.dirname(arg)
        else:
            yield arg, None, arg


def plan_jobs(
    paths: Iterable[str | os.PathLike],
    settings: Settings,
    out_dir: str | None,
    in_place: bool,
    policy: Policy | None = None,
) -> tuple[list[dict], list[Result]]:
    """Expand ``paths`` into jobs (input, output) and results for refused ones.

    Folders recurse (see :func:`collect`); outputs mirror each
    file's path under ``out_dir``; a missing path, a path outside the
    ``policy``'s scopes (``scope_denied``), an operation it does not grant
    (``capability_denied``) or an output that would replace another input of
    the batch is a failed result, not a job. An output name an earlier input
    already has (same stem) gets a distinct name instead
    (:func:`_distinct_output`). Job paths are canonical.
    """
    policy = policy or Policy.trusted()
    if not in_place and out_dir is None:
        raise IOFailureError("give out_dir or in_place=True", stage="submit")
    jobs: list[dict] = []
    refused: list[Result] = []
    claimed: dict[str, str] = {}
    assigned: dict[str, str] = {}  # input -> the output name it was given
    listings: dict[str, list] = {}  # folder -> [its image file names, sorted; how many claimed]
    for src, rel, _root in collect([os.fspath(p) for p in paths], out_dir):
        if rel is None:
            refused.append(Result(input=src, output=None, status="failed",
                                  error=IOFailureError("no such file or folder", path=src, stage="read")))
            continue
        if not utf8_name(src):
            refused.append(Result(input=printable_path(src), output=None, status="failed", error=IOFailureError(
                "file name is not valid UTF-8: rename it to process it", path=printable_path(src),
                stage="read")))
            continue
        dst = None
        if not in_place:
            dst = os.path.join(out_dir, os.path.dirname(rel), output_name(rel, settings))
        try:
            src, dst = policy.check_job(src, dst, in_place=in_place)
        except PyimgoptError as exc:
            refused.append(Result(input=src, output=None, status="failed", error=exc))
            continue
        if in_place:
            jobs.append({"id": "", "input": src, "output": None})
            continue
        auto = settings.format == "auto"
        # The images that sort before it in its own folder claim their names first,
        # whether or not they are in this batch: the name an input gets depends on its
        # folder, not on which batch it came in (a watcher submits a changed file alone).
        for sib in _earlier_siblings(src, settings, listings):
            _claim(sib, os.path.join(os.path.dirname(dst), output_name(sib, settings)),
                   claimed, assigned, auto)
        dst = _claim(src, dst, claimed, assigned, auto)
        jobs.append({"id": "", "input": src, "output": dst})
    clash = clobbered_inputs([(j["input"], j["output"]) for j in jobs],
                             any_extension=settings.format == "auto")
    for i in sorted(clash, reverse=True):
        j = jobs.pop(i)
        refused.append(Result(input=j["input"], output=None, status="failed", error=ScopeDeniedError(
            f"output {j['output']} would replace another input of this batch", path=j["input"],
            stage="scope")))
    return jobs, refused


def _claim(src: str, dst: str, claimed: dict[str, str], assigned: dict[str, str], auto: bool) -> str:
    """Give ``src`` the output ``dst``, or a distinct one if that name is taken; once only."""
    if src in assigned:
        return assigned[src]
    key = os.path.splitext(dst)[0] if auto else dst
    if key in claimed:  # same stem (x.gif, x.webp -> x.webp): a distinct name, never a clash
        dst, key = _distinct_output(src, dst, claimed, auto)
    claimed[key] = src
    assigned[src] = dst
    return dst


def _earlier_siblings(src: str, settings: Settings, listings: dict[str, list]) -> list[str]:
    """The image files in ``src``'s folder that sort before it and have not claimed a name yet.

    An image file is one the folder walk would pick up (:func:`collect`: an image
    extension or image content, no temporary file). Claiming them in sorted order
    before ``src`` makes the distinct names of :func:`_distinct_output` (``x.webp``
    next to ``x.gif``, and in turn ``x.webp.png`` next to both) the same in every
    batch. Under ``keep`` every input keeps its own name, so there are none. One
    listing per folder, cached in ``listings`` with how far it was claimed.
    """
    if settings.format == "keep":
        return []
    folder, name = os.path.split(src)
    if folder not in listings:
        try:
            with os.scandir(folder) as it:
                files = sorted(e.name for e in it if e.is_file() and not e.name.endswith(TEMP_SUFFIX))
        except OSError:
            files = []
        listings[folder] = [[n for n in files if _looks_like_image(os.path.join(folder, n), n)], 0]
    names, done = listings[folder]
    out = []
    while done < len(names) and names[done] < name:
        out.append(os.path.join(folder, names[done]))
        done += 1
    listings[folder][1] = done
    return out


def _distinct_output(src: str, dst: str, claimed: dict[str, str], auto: bool) -> tuple[str, str]:
    """The output of ``src`` when an earlier input of the batch already has ``dst``'s name.

    The later input (in the order :func:`collect` yields them: sorted names)
    keeps its whole file name before the output's extension — ``x.webp`` next
    to ``x.gif`` writes ``x.webp.avif`` (auto) or ``x.png.webp`` (``format="webp"``)
    — and, in the unlikely case that is taken too, ``-2``, ``-3``... after it.
    Input names in one folder are unique, so the first form almost always is.
    Returns (output path, the claim key: the path, or under auto its stem).
    """
    folder = os.path.dirname(dst)
    name = os.path.basename(src)
    ext = os.path.splitext(src)[1] if auto else os.path.splitext(dst)[1]
    n = 1
    while True:
        stem = os.path.join(folder, name if n == 1 else f"{name}-{n}")
        if stem not in claimed if auto else stem + ext not in claimed:
            return stem + ext, (stem if auto else stem + ext)
        n += 1


class Batch:
    """A submitted batch: its events, results and controls."""

    def __init__(self, client: Client, batch_id: str, total: int, refused: list[Result],
                 on_event: Callable[[Event], None] | None) -> None:
        self.id = batch_id
        self.total = total + len(refused)
        self._client = client
        self._events: queue.Queue[Event] = queue.Queue()
        self._on_event = on_event
        self._results: list[Result] = []
        self._finished_jobs: set[str] = set()
        self._done = threading.Event()
        self._wakers: list = []  # (event loop, asyncio.Event) of async iterations
        self.last_event = 0.0
        self._local = [
            Event("failed", batch_id, None, {"error": protocol.pack_error(r.error), "input": r.input})
            for r in refused
        ]

    def _deliver(self, ev: Event) -> None:  # called by the I/O thread
        self.last_event = time.monotonic()
        if self._done.is_set():
            return  # a replay after the end: already complete
        if ev.kind in ("result", "failed") and ev.job is not None:
            if ev.job in self._finished_jobs:
                return  # replayed after a reattach: delivered once only
            self._finished_jobs.add(ev.job)
        if ev.kind == "batch_done":
            ev = Event(ev.kind, ev.batch, None, {**ev.data, "failed": ev.data.get("failed", 0) + len(self._local),
                                                 "total": self.total})
        for local in (self._local if ev.kind == "batch_done" else ()):
            self._results.append(local.result)
        if ev.kind in ("result", "failed"):
            self._results.append(ev.result)
        if self._on_event is not None:
            try:
                self._on_event(ev)
            except Exception:  # a host callback bug must not kill the I/O thread
                pass
        self._events.put(ev)
        for loop, wake in list(self._wakers):
            try:
                loop.call_soon_threadsafe(wake.set)
            except RuntimeError:  # that event loop is closed
                pass
        if ev.kind == "batch_done":
            self._done.set()

    def events(self, timeout: float | None = None) -> Iterator[Event]:
        """Yield events until ``batch_done`` (inclusive); ``timeout`` per event."""
        for ev in self._local:
            yield ev
        while True:
            try:
                ev = self._events.get(timeout=timeout)
            except queue.Empty:
                raise JobTimeoutError(f"no event for batch {self.id} within {timeout} s") from None
            yield ev
            if ev.kind == "batch_done":
                return

    async def aevents(self, timeout: float | None = None):
        """``async for ev in batch.aevents()``: the same stream for asyncio hosts.

        No thread waits on the caller's behalf: the client's I/O thread wakes
        the event loop, so leaving or cancelling the ``async for`` leaves
        nothing behind.
        """
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        waker = (loop, wake)
        self._wakers.append(waker)
        try:
            for ev in self._local:
                yield ev
            while True:
                try:
                    ev = self._events.get_nowait()
                except queue.Empty:
                    wake.clear()
                    if not self._events.empty():
                        continue  # arrived between the two looks
                    try:
                        await asyncio.wait_for(wake.wait(), timeout)
                    except asyncio.TimeoutError:
                        raise JobTimeoutError(f"no event for batch {self.id} within {timeout} s") from None
                    continue
                yield ev
                if ev.kind == "batch_done":
                    return
        finally:
            self._wakers.remove(waker)

    def __aiter__(self):
        return self.aevents()

    def wait(self, timeout: float | None = None) -> list[Result]:
        """Block until the batch is done; return one :class:`Result` per file."""
        if not self._done.wait(timeout):
            raise JobTimeoutError(f"batch {self.id} not done within {timeout} s")
        return list(self._results)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def cancel(self) -> None:
        """Drop queued jobs and abort running ones (nothing half-written remains)."""
        self._client._control("cancel", self.id)

    def pause(self) -> None:
        """Stop dispatching this batch's jobs; running ones finish."""
        self._client._control("pause", self.id)

    def resume(self) -> None:
        """Dispatch again after :meth:`pause`."""
        self._client._control("resume", self.id)


def _page_arg(name: str, value: Any, least: int) -> int:
    """``value`` as a :meth:`Client.jobs` paging integer, or InvalidSettingsError naming it."""
    try:
        if type(value) is bool:
            raise TypeError
        n = operator.index(value)
    except TypeError:
        raise InvalidSettingsError(f"jobs: {name} must be an integer, not {type(value).__name__}",
                                   stage="client") from None
    if not least <= n <= _MAX_INDEX:
        raise InvalidSettingsError(f"jobs: {name} must be between {least} and {_MAX_INDEX}, not {n}",
                                   stage="client")
    return n


_MAX_INDEX = 2**63 - 1  # the largest offset the wire and the journal (SQLite) both hold


class Client:
    """Talks to a router; see :meth:`local` and :meth:`connect`."""

    def __init__(self, endpoint: str, *, timeout: float = 30.0, policy: Policy | None = None,
                 curve: tuple[str, str] | None = None, _router=None, _tmpdir=None) -> None:
        try:
            check_not_abstract(endpoint)
        except PermissionError as exc:
            raise ScopeDeniedError(str(exc), stage="client") from None
        self.endpoint = endpoint
        #: Seconds of silence after which open batches are reattached.
        self.reattach_after = 5.0
        #: What this host lets its callers do; checked before anything is sent.
        self.policy = policy or Policy.trusted()
        self._curve = curve
        self.timeout = timeout
        self._router = _router
        self._tmpdir = _tmpdir
        self._ctx = zmq.Context.instance()
        self._cmds: collections.deque = collections.deque()
        self._pending: dict[str, cf.Future] = {}
        #: Batches still running (a finished one is dropped once its
        #: ``batch_done`` is delivered: the caller's Batch keeps its results).
        self._batches: dict[str, Batch] = {}
        # events of a batch this client does not follow (yet): kept briefly, bounded
        self._early: dict[str, tuple[float, list[Event]]] = {}
        self._reqs = itertools.count(1)
        self._closed = threading.Event()
        self._wake_addr = f"inproc://client-wake-{uuid.uuid4().hex}"
        self._wake_rx = self._ctx.socket(zmq.PAIR)
        self._wake_rx.bind(self._wake_addr)
        self._wake_tx = self._ctx.socket(zmq.PAIR)
        self._wake_tx.connect(self._wake_addr)
        self._wake_lock = threading.Lock()
        #: Jobs per submit message; bigger batches travel in several (``protocol.split_jobs``).
        #: Small enough that the router decodes one in a few milliseconds.
        self.chunk_jobs = 5000
        self._features: frozenset[str] | None = None  # the router's (status "features"), once asked
        self._io = threading.Thread(target=self._loop, name="pyimgopt-client", daemon=True)
        self._io.start()
        self._send(protocol.encode("hello", client="pyimgopt.client", pid=os.getpid()))

    @classmethod
    def local(cls, workers: int | None = None, *, config=None, timeout: float = 30.0,
              policy: Policy | None = None, state_dir: str | None = None) -> Client:
        """Start an embedded router (thread) with its own pool, and connect to it.

        ``workers=0`` processes in-process (degraded mode, announced by a
        ``degraded`` event). The endpoints live in a fresh 0700 folder.
        """
        import dataclasses

        from .router import Router, RouterConfig

        tmp = tempfile.mkdtemp(prefix="pyimgopt-")
        os.chmod(tmp, 0o700)
        overrides: dict[str, Any] = {}
        if workers is not None:
            overrides["workers"] = workers
        if state_dir is not None:
            overrides["state_dir"] = state_dir
        cfg = dataclasses.replace(config or RouterConfig(), **overrides)  # the caller's stays as it was
        router = Router(f"ipc://{tmp}/clients", f"ipc://{tmp}/sidecars", cfg)
        router.start()
        return cls(router.client_endpoint, timeout=timeout, policy=policy, _router=router, _tmpdir=tmp)

    @classmethod
    def connect(cls, endpoint: str, *, timeout: float = 30.0, policy: Policy | None = None,
                secret_key: str | None = None, server_key: str | None = None) -> Client:
        """Attach to a router already running at ``endpoint``.

        For a ``tcp://`` router give this client's secret key file and the
        router's public key file (CurveZMQ); the router maps the key to what
        this client may do.
        """
        curve = None
        if secret_key or server_key:
            if not (secret_key and server_key):
                raise IOFailureError("CurveZMQ needs both secret_key and server_key", stage="client")
            curve = (secret_key, server_key)
        return cls(endpoint, timeout=timeout, policy=policy, curve=curve)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- I/O thread ------------------------------------------------------------------

    def _send(self, frames: list[bytes]) -> None:
        self._cmds.append(frames)
        with self._wake_lock:
            self._wake_tx.send(b"")

    def _loop(self) -> None:
        sock = self._ctx.socket(zmq.DEALER)
        protocol.configure_socket(sock)
        if self._curve is not None:
            make_client(sock, self._curve[0], self._curve[1])
        sock.connect(self.endpoint)
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._wake_rx, zmq.POLLIN)
        last_heard = time.monotonic()
        try:
            while not self._closed.is_set():
                events = dict(poller.poll(100))
                now = time.monotonic()
                if sock in events:
                    last_heard = now
                elif now - last_heard > self.reattach_after:
                    # Silence: the router may have restarted. Reattach every open
                    # batch (idempotent; replayed events are deduplicated).
                    last_heard = now
                    for bid, batch in list(self._batches.items()):
                        if not batch.done:
                            self._cmds.append(protocol.encode("attach", req=f"re-{bid}", batch=bid))
                if self._wake_rx in events:
                    while True:
                        try:
                            self._wake_rx.recv(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                while self._cmds:
                    sock.send_multipart(self._cmds.popleft())
                if sock in events:
                    while True:
                        try:
                            frames = sock.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        try:
                            self._on_message(protocol.decode(frames))
                        except PyimgoptError:
                            continue
        finally:
            sock.close(0)

    def _on_message(self, msg: protocol.Message) -> None:
        if msg.type == "ping":
            return  # the router is alive; hearing it is all that counts
        if msg.type in ("event", "events"):
            if msg.type == "event":
                evs = [Event(msg["kind"], msg["batch"], msg["job"], msg["data"])]
            else:
                evs = [Event(kind, bid, job, data) for bid, kind, job, data in msg["events"]]
            for ev in evs:
                batch = self._batches.get(ev.batch)
                if batch is None:
                    self._keep_early(ev)
                else:
                    batch._deliver(ev)
                    if ev.kind == "batch_done":
                        self._batches.pop(ev.batch, None)  # done: nothing more to follow
            return
        fut = self._pending.pop(msg.get("req") or "", None)
        if fut is None:
            return
        if msg.type == "error":
            fut.set_exception(protocol.unpack_error(msg["error"]))
        else:
            fut.set_result(msg)

    #: Events kept for a batch nobody follows, and for how long (seconds).
    EARLY_EVENTS = 1000
    EARLY_SECONDS = 30.0

    def _keep_early(self, ev: Event) -> None:
        """Hold an event of an unknown batch briefly (bounded): it is most likely
        the late echo of a finished one, and is dropped unless attach follows."""
        now = time.monotonic()
        for bid in [b for b, (t, _) in self._early.items() if now - t > self.EARLY_SECONDS]:
            del self._early[bid]
        _, held = self._early.setdefault(ev.batch, (now, []))
        if len(held) < self.EARLY_EVENTS and len(self._early) <= 64:
            held.append(ev)
        elif ev.batch in self._early and not held:
            del self._early[ev.batch]

    def _request(self, msg_type: str, *, timeout: float | None = None, **fields: Any) -> protocol.Message:
        req = f"r{next(self._reqs)}"
        fut: cf.Future = cf.Future()
        self._pending[req] = fut
        self._send(protocol.encode(msg_type, req=req, **fields))
        wait = self.timeout if timeout is None else timeout
        try:
            return fut.result(wait)
        except cf.TimeoutError:
            self._pending.pop(req, None)
            raise JobTimeoutError(f"router at {self.endpoint} did not answer {msg_type} "
                                  f"within {wait:g} s", stage="client") from None

    # -- API -------------------------------------------------------------------------

    def submit(
        self,
        paths: Iterable[str | os.PathLike],
        settings: Settings | None = None,
        *,
        out_dir: str | os.PathLike | None = None,
        in_place: bool = False,
        priority: int = 0,
        on_event: Callable[[Event], None] | None = None,
        force: bool = False,
        dry_run: bool = False,
    ) -> Batch:
        """Submit files and folders as one batch; return its :class:`Batch`.

        A file the router's optimisation manifest (or, with ``settings.mark``,
        the file's own marker) knows as already optimised with these settings
        by this version is ``unchanged``: hashed, not decoded, not rewritten.
        ``force=True`` redoes every file. ``dry_run=True`` runs the pipeline
        and writes nothing (no output, no manifest entry): each result says
        what would be written (``Result.dry_run`` set).

        ``on_event`` is called on the client's I/O thread for every event: keep
        it short and never call back into this client from it (iterate
        :meth:`Batch.events` instead to steer a batch while it runs).
        """
        s = settings or Settings()
        if in_place and out_dir is not None:
            raise IOFailureError("give either out_dir or in_place=True, not both", stage="submit")
        # Early, friendly checks; the router checks again and decides.
        self.policy.capabilities.check_settings(s, in_place=in_place, priority=int(priority))
        jobs, refused = plan_jobs(paths, s, None if out_dir is None else os.fspath(out_dir), in_place,
                                  self.policy)
        bid = uuid.uuid4().hex[:16]
        batch = Batch(self, bid, len(jobs), refused, on_event)
        self._batches[bid] = batch
        # A batch of any size: the jobs travel in chunks that each fit the
        # message limits; the router assembles them into this one batch.
        chunks = protocol.split_jobs(jobs, max_count=self.chunk_jobs)
        # the last answer waits for the router's checks of every file: more time for more files
        last_wait = self.timeout + len(jobs) / 2000
        try:
            reply = self._request("submit", batch=bid, priority=int(priority),
                                  settings=protocol.pack_settings(s), jobs=chunks[0],
                                  in_place=bool(in_place), more=len(chunks) > 1,
                                  force=bool(force) or None, dry_run=bool(dry_run) or None,
                                  timeout=last_wait if len(chunks) == 1 else None)
            for i, chunk in enumerate(chunks[1:], start=2):
                last = i == len(chunks)
                reply = self._request("jobs", batch=bid, jobs=chunk, more=not last,
                                      timeout=last_wait if last else None)
        except BaseException:
            self._batches.pop(bid, None)
            raise
        batch.total = reply["total"] + len(refused)
        for ev in self._early.pop(bid, (0.0, []))[1]:
            batch._deliver(ev)
        return batch

    def attach(self, batch_id: str, on_event: Callable[[Event], None] | None = None) -> Batch:
        """Follow a batch submitted earlier (by this or another process, before
        a router restart): events of finished files are replayed, then live ones."""
        batch = Batch(self, batch_id, 0, [], on_event)
        self._batches[batch_id] = batch
        try:
            reply = self._request("attach", batch=batch_id)
        except PyimgoptError:
            self._batches.pop(batch_id, None)
            raise
        batch.total = reply["total"]
        return batch

    def _control(self, what: str, batch_id: str) -> None:
        reply = self._request(what, batch=batch_id)
        if not reply["ok"]:
            raise IOFailureError(reply["data"].get("message", f"{what} refused"), stage="client")

    def status(self, batch_id: str | None = None) -> dict:
        """The router's figures: batches, queue, sidecars, memory, counters.

        Also refreshes what this client knows of the router's ``features``
        (a router replaced by an older one at the same endpoint is seen here),
        which :meth:`jobs` checks before sending."""
        data = self._request("status", batch=batch_id)["data"]
        feats = data.get("features") if type(data) is dict else None
        self._features = frozenset(f for f in feats if type(f) is str) if type(feats) is list else frozenset()
        return data

    def jobs(self, batch_id: str, offset: int = 0, limit: int = 1000) -> dict:
        """One page of a batch's jobs, in submit order, from position ``offset``.

        Returns ``{batch, total, offset, next, hidden, state, in_place,
        priority, settings, options, jobs}`` (:func:`protocol.unpack_jobs_page`):
        at most ``limit`` jobs (and :data:`protocol.MAX_JOBS_PAGE`; fewer when
        their paths are long), each ``{id, input, output, state, status, code}``.
        Ask again from ``next`` until it is None. The router answers as it
        does :meth:`attach`: for batches submitted under this connection's
        owner — its CurveZMQ key, or for every local (ipc/inproc) connection
        the one local owner, so any local client may list any local batch —
        (another owner's batch is unknown), from the journal once it forgot
        them, and counts in ``hidden`` the jobs whose input is outside the
        connection's read scope instead of listing them. A router older than
        this request raises :class:`~pyimgopt.errors.ProtocolError` without
        being asked (as known from the last :meth:`status`, asked again when
        it lacked the request). ``offset`` and ``limit`` must be integers
        (``operator.index``: no float, str or bool), ``offset >= 0`` and
        ``limit >= 1``; else :class:`~pyimgopt.errors.InvalidSettingsError`
        naming the argument, before anything is sent.
        """
        offset, limit = _page_arg("offset", offset, 0), _page_arg("limit", limit, 1)
        if self._features is None or "batch_jobs" not in self._features:  # asked again: it may be upgraded
            self.status()
        if "batch_jobs" not in (self._features or ()):
            raise ProtocolError(f"the router at {self.endpoint} cannot list a batch's jobs (it predates "
                                "the batch_jobs request): upgrade it", stage="client")
        return protocol.unpack_jobs_page(
            self._request("batch_jobs", batch=batch_id, offset=offset, limit=limit)["data"])

    def iter_jobs(self, batch_id: str, page: int = 1000) -> Iterator[dict]:
        """Every job of a batch (see :meth:`jobs`), fetched ``page`` at a time."""
        page = _page_arg("page", page, 1)
        offset: int | None = 0
        while offset is not None:
            got = self.jobs(batch_id, offset, page)
            yield from got["jobs"]
            offset = got["next"]

    def close(self) -> None:
        """Stop the I/O thread; a local client also stops its router and pool."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._io.join(5)
        self._wake_rx.close(0)
        self._wake_tx.close(0)
        if self._router is not None:
            self._router.stop()
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
