"""The broker: the router's event loop and its start and stop.

Owns the sockets' set-up (the client endpoint, the executor's, the wake-up
of work done off this thread), the loop that polls them and runs each step
of a turn — sidecar messages first (liveness must see their beats), client
requests, completions from worker threads (:mod:`.offload`) and the
journal's writer, registration of new jobs, metrics and pings, supervision,
dispatch, the events out — each step guarded: an unexpected exception is
logged and counted, and the loop goes on; should the loop itself die,
:attr:`Router.failure` says why. The parts mixed in: what clients send and
receive (:mod:`.clients`), the life of a job and dispatch (:mod:`.jobs`),
what clients ask about batches (:mod:`.batches`); *where* a job runs is the
executor's business (:mod:`.sidecars`). It never touches pixels.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import zmq

from .. import protocol
from ..auth import Authenticator, authorized_keys, check_ipc_bind, check_tcp_bind, make_server
from ..journal import JournalWriter, open_journal, prune_runs
from ..logs import event, get_logger
from ..manifest import MANIFEST_NAME, Manifest, ManifestWriter
from ..metrics import RouterMetrics, serve_metrics
from .batches import BatchDesk
from .clients import INSECURE_OWNER, MUST_DELIVER, ClientLink
from .config import RouterConfig
from .jobs import JobLife
from .model import Batch, Job
from .offload import Offload
from .queue import JobQueue
from .resources import memory_budget, usable_cpus
from .executors import make_executor
from .sidecars import _is_net

__all__ = ["Router", "RouterConfig", "INSECURE_OWNER", "MUST_DELIVER"]

#: Seconds between two hand-overs of events to clients and of writes to the
#: journal's thread (each wakes another thread: fewer, bigger ones cost less).
FLUSH_EVERY = 0.02


class Router(ClientLink, JobLife, BatchDesk):
    """A pyimgopt router.

    Parameters
    ----------
    client_endpoint:
        Where clients connect (``ipc://``, ``tcp://``, ``inproc://``).
    sidecar_endpoint:
        Where sidecars connect; pool sidecars are started against it.
    config:
        Tunables (:class:`RouterConfig`).
    context:
        ZeroMQ context (needed to share ``inproc://`` endpoints).

    After :meth:`start`, :attr:`failure` stays None while the loop runs;
    it holds the exception if the loop itself ever died.
    """

    def __init__(
        self,
        client_endpoint: str,
        sidecar_endpoint: str,
        config: RouterConfig | None = None,
        *,
        context: zmq.Context | None = None,
    ) -> None:
        self.config = config or RouterConfig()
        self.client_endpoint = client_endpoint
        self.sidecar_endpoint = sidecar_endpoint
        self._ctx = context or zmq.Context.instance()
        self._uid = uuid.uuid4().hex
        self._queue = JobQueue()
        self._jobs: dict[str, Job] = {}
        self._batches: dict[str, Batch] = {}
        self._mem_in_use = 0
        self._budget = memory_budget(self.config.memory_cap, self.config.memory_reserve)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self.counters: dict[str, int] = {
            "jobs_done": 0, "jobs_failed": 0, "retries": 0, "recycles": 0,
            "sidecars_lost": 0, "protocol_errors": 0, "spawned": 0, "internal_errors": 0,
        }
        target = self.config.workers
        self._target = usable_cpus() if target is None else max(0, int(target))
        self.metrics = RouterMetrics()
        self.metrics_server = None
        self.failure: BaseException | None = None
        self._log = get_logger("router")
        self._executor = make_executor(self)  # where jobs run: config.executor
        self._journal = None
        self._jw: JournalWriter | None = None
        self._manifest: Manifest | None = None
        self._mw: ManifestWriter | None = None
        self._offload: Offload | None = None
        self._front = None
        self._last_error_log: dict[str, float] = {}
        self._mem_checked = -1.0
        self._last_flush = 0.0
        self._pressure = False
        self._desk_init()
        self._link_init()

    # -- public ----------------------------------------------------------------------

    @property
    def journal_dir(self) -> str | None:
        """The folder of the journal this router owns (a private one in ``runs/`` when
        ``private_journal_if_busy`` found the configured one in use), or None."""
        return None if self._journal is None else self._journal.folder

    def serve(self) -> None:
        """Run the loop until :meth:`stop`; always cleans up its sidecars.

        A set-up failure (refused tcp bind, bad keys, endpoint or journal in
        use) is kept for :meth:`start` to raise in the caller's thread.
        """
        try:
            self._setup()
        except BaseException as exc:
            self._startup_error = exc
            self._ready.set()
            self._close_all()
            return
        try:
            self._loop()
        except BaseException as exc:  # the loop itself died: say so, the owner decides
            self.failure = exc
            self._log.critical("router_died", exc_info=True)
        finally:
            self._shutdown()

    def _setup(self) -> None:
        cfg = self.config
        curve = cfg.curve_secret is not None
        for ep in (self.client_endpoint, self.sidecar_endpoint):
            check_tcp_bind(ep, curve=curve, insecure_loopback=cfg.insecure_loopback)
            check_ipc_bind(ep)
        self._auth = None
        sidecar_keys: frozenset[str] = frozenset()
        if curve:
            sidecar_keys = authorized_keys(cfg.authorized_sidecars)
            self._auth = Authenticator(
                self._ctx, authorized=[*cfg.authorized_clients, *cfg.authorized_sidecars])
            self._auth.start()
        self._front_insecure = _is_net(self.client_endpoint) and not curve
        self._front = self._ctx.socket(zmq.ROUTER)
        # Clients send bodies only, never bulk frames: a bigger frame drops the
        # connection in ZeroMQ, and at most 64 messages wait per connection.
        protocol.configure_socket(self._front, max_bytes=protocol.MAX_BODY_BYTES, max_queued=64)
        self._front.setsockopt(zmq.ROUTER_HANDOVER, 1)
        # A full or vanished client is reported (EAGAIN / EHOSTUNREACH), never
        # silently dropped: results wait in the client's outbox instead.
        self._front.setsockopt(zmq.ROUTER_MANDATORY, 1)
        if curve and _is_net(self.client_endpoint):  # local ipc stays unauthenticated: its 0700 folder is the lock
            make_server(self._front, cfg.curve_secret)
        self._front.bind(self.client_endpoint)
        self._offload = Offload(self._ctx)
        self._back_socks = self._executor.setup(sidecar_keys)
        if self.client_endpoint.endswith(":0"):
            self.client_endpoint = self._front.getsockopt_string(zmq.LAST_ENDPOINT)
        self.sidecar_endpoint = self._executor.endpoint
        if cfg.state_dir:
            self._journal = open_journal(cfg.state_dir, private_if_busy=cfg.private_journal_if_busy)
            self._journal.prune(cfg.retention_days * 86400)
            if self._journal.folder == cfg.state_dir:
                prune_runs(cfg.state_dir, cfg.retention_days * 86400)
            self._jw = JournalWriter(self._journal, deliver=self._offload.post)
        self._open_manifest()
        if cfg.state_dir and cfg.recover:
            self._recover()
        if cfg.metrics_port is not None:
            self.metrics_server, _ = serve_metrics(self.metrics, cfg.metrics_port)
        self._started = time.monotonic()
        self._executor.start_pool()
        self._ready.set()

    def _open_manifest(self) -> None:
        """The optimisation manifest: ``config.manifest``, or beside the journal."""
        where = self.config.manifest
        if where is False or (where is None and not self.config.state_dir):
            return
        path = where if isinstance(where, str) else os.path.join(self.config.state_dir, MANIFEST_NAME)
        try:
            manifest = Manifest(path)
            manifest.count()
        except (sqlite3.Error, OSError) as exc:  # unreadable: every file simply runs again
            event(self._log, "manifest_unavailable", logging.WARNING, path=path, error=str(exc))
            return
        self._manifest = manifest
        self._mw = ManifestWriter(manifest)

    @property
    def manifest_path(self) -> str | None:
        """The manifest database this router reads and writes, or None."""
        return None if self._manifest is None else self._manifest.path

    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self._front, zmq.POLLIN)
        for sock in self._back_socks:
            poller.register(sock, zmq.POLLIN)
        poller.register(self._offload.wake_rx, zmq.POLLIN)
        next_beat = 0.0
        while not self._stop.is_set():
            if self._offload.backlog or self._registering:
                timeout = 0
            elif self._backlog or self._replies or self._dirty:
                timeout = 5  # events to send, or a full client to try again soon
            else:
                timeout = 50
            events = dict(poller.poll(timeout))
            for sock in self._back_socks:  # sidecars first: liveness must see their beats
                if sock in events:
                    self._safely("sidecar messages", self._executor.on_readable, sock)
            if self._front in events:
                self._safely("client messages", self._drain, self._front, self._on_client)
            if self._offload.wake_rx in events or self._offload.backlog:  # woken, or left over
                self._safely("completions", self._offload.run_completions, 2000, self._safely)
            if self._registering:
                self._safely("registration", self._register_some)
            now = time.monotonic()
            beat = now >= next_beat
            if beat:
                next_beat = now + self.config.heartbeat
                self._safely("metrics", self._refresh_metrics)
                self._safely("pings", self._ping_clients, now)
                self._safely("assemblies", self._expire_assemblies, now)
            self._safely("housekeeping", self._forget_finished, now)
            self._safely("supervision", self._executor.tick, time.monotonic(), beat)
            self._safely("dispatch", self._dispatch, time.monotonic())
            if self._dirty or self._backlog or self._replies:
                # events leave together, a few dozen times a second at most
                if self._replies or now - self._last_flush >= FLUSH_EVERY or len(self._dirty) > 16:
                    self._last_flush = now
                    self._safely("outboxes", self._flush_all)
            if self._jw is not None:
                self._jw.flush(every=FLUSH_EVERY)

    def _safely(self, what: str, fn: Callable, *args: Any) -> Any:
        """Run one step of the loop; an unexpected exception is logged and counted, never fatal."""
        try:
            return fn(*args)
        except Exception:
            self._internal_error(what)
            return None

    def _internal_error(self, what: str) -> None:
        self.counters["internal_errors"] += 1
        now = time.monotonic()
        if now - self._last_error_log.get(what, -10.0) >= 1.0:  # a repeating bug logs once a second
            self._last_error_log[what] = now
            self._log.error("router_error", exc_info=True, extra={"reason": what})

    def _refresh_metrics(self) -> None:
        self.metrics.set_queue(self._queue.by_priority())
        self.metrics.set_sidecars(self._executor.metrics_rows())
        self.metrics.set_memory(self._mem_in_use, self._budget)

    def start(self) -> threading.Thread:
        """Run :meth:`serve` in a daemon thread; return once it is listening."""
        t = threading.Thread(target=self.serve, name="pyimgopt-router", daemon=True)
        t.start()
        if not self._ready.wait(30):
            raise RuntimeError("router did not start")
        err = getattr(self, "_startup_error", None)
        if err is not None:
            t.join(5)
            raise err
        self._thread = t
        return t

    def request_stop(self) -> None:
        """Ask the loop to stop and return at once (safe in a signal handler)."""
        self._stop.set()

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the loop, shut down the pool and wait for the thread."""
        self._stop.set()
        t = getattr(self, "_thread", None)
        if t is not None:
            t.join(timeout)

    def is_alive(self) -> bool:
        """Whether the loop's thread runs."""
        t = getattr(self, "_thread", None)
        return t is not None and t.is_alive()


    def _close_all(self) -> None:
        self._executor.close_sockets()
        if self._front is not None:
            self._front.close(0)
        if self._offload is not None:
            self._offload.close()
        if self._jw is not None:
            self._jw.close()
        elif self._journal is not None:
            self._journal.close()
        if self._mw is not None:
            self._mw.close()
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
        if getattr(self, "_auth", None) is not None:
            self._auth.stop()

    def _shutdown(self) -> None:
        try:
            self._executor.shutdown()
        finally:
            self._close_all()
