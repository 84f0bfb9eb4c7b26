"""The broker: the router's event loop, and what runs next.

Owns the client endpoint's socket and what goes out on it (replies, and
per client connection an ordered outbox of events — results, failures and
the end held while a slow client's connection is full, informational events
dropped instead; a ``ping`` to clients with open
batches when nothing else was sent), the loop that polls it, the executor's
sockets and the completions of work done off this thread (:mod:`.offload`,
the journal's writer), the life of every job once it exists (dispatch order
from :class:`JobQueue`, memory admission, the attempt count, retries with
backoff, poison detection, results and failures, progress events, the end
of a batch), and start/stop of the whole router. Nothing slow runs on its
thread; an unexpected exception in any step is logged, answered
``internal`` where a client asked, and the loop goes on. What clients ask
about batches lives in :mod:`.batches` (mixed in); *where* a job runs is the
executor's business (:mod:`.sidecars`), reached through
``start``/``abort``/``tick`` and answering through the ``job_*`` callbacks
here. It never touches pixels.
"""

from __future__ import annotations

import collections
import errno
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import zmq

from .. import protocol
from ..errors import (
    CancelledError,
    InternalError,
    ProtocolError,
    PyimgoptError,
    WorkerLostError,
)
from ..auth import Authenticator, authorized_keys, check_ipc_bind, check_tcp_bind, make_server, peer_key
from ..security import Policy
from ..journal import JournalWriter, open_journal, prune_runs
from ..logs import event, get_logger
from ..metrics import RouterMetrics, serve_metrics
from .batches import BatchDesk
from .config import RouterConfig
from .model import Batch, Job
from .offload import Offload
from .queue import JobQueue
from .resources import available_memory, memory_budget, usable_cpus
from .sidecars import SidecarExecutor, _is_net

__all__ = ["Router", "RouterConfig", "INSECURE_OWNER", "MUST_DELIVER"]

#: The owner of batches submitted over a TCP endpoint without CurveZMQ
#: (``insecure_loopback``): such clients share one identity, and one policy.
INSECURE_OWNER = "insecure-tcp"

#: Event kinds a client must receive (held while its connection is full);
#: the others (queued, started, progress, retrying, batch_progress) are
#: dropped rather than held.
MUST_DELIVER = frozenset({"result", "failed", "batch_done", "cancelled", "paused", "resumed", "degraded"})

#: Seconds between two hand-overs of events to clients and of writes to the
#: journal's thread (each wakes another thread: fewer, bigger ones cost less).
FLUSH_EVERY = 0.02
#: Events sent together in one ``events`` message, at most.
EVENTS_PER_MESSAGE = 256
#: Seconds of silence towards a client with open batches before a ``ping``.
PING_EVERY = 1.0
#: Reserved for a job whose memory need is not known yet (its sidecar
#: estimates it from the header and asks for more when it needs more).
BASE_GRANT = 32 * 1024 * 1024


class Router(BatchDesk):
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
        self._executor = SidecarExecutor(self)
        self._journal = None
        self._jw: JournalWriter | None = None
        self._offload: Offload | None = None
        self._front = None
        self._replies: dict[bytes, collections.deque] = {}  # identity -> frames held back
        # per client connection, the events waiting to go, in order: (batch, kind, job, data)
        self._outbox: dict[bytes, collections.deque] = {}
        self._backlog: set[bytes] = set()  # clients whose connection is full: only what must arrive waits
        self._dirty: set[bytes] = set()  # clients with events queued this loop turn
        self._last_sent: dict[bytes, float] = {}
        self._last_error_log: dict[str, float] = {}
        self._mem_checked = -1.0
        self._last_flush = 0.0
        self._pressure = False
        self._desk_init()

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
            if cfg.recover:
                self._recover()
        if cfg.metrics_port is not None:
            self.metrics_server, _ = serve_metrics(self.metrics, cfg.metrics_port)
        self._started = time.monotonic()
        self._executor.start_pool()
        self._ready.set()

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
            self._safely("completions", self._offload.run_completions, 2000, self._safely)
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

    # -- messaging -------------------------------------------------------------------

    def _drain(self, sock: zmq.Socket, handler, *, client: bool = True) -> None:
        for _ in range(1000):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            if len(frames) < 2:
                continue
            identity, body = frames[0].bytes, frames[1:]
            user = peer_key(body[0])  # CurveZMQ key id the ZAP handler approved, or None
            try:
                msg = protocol.decode(body)
            except ProtocolError as exc:
                self.counters["protocol_errors"] += 1
                self.metrics.protocol_error()
                if client:
                    self._send_client(identity, "error", req=None, error=protocol.pack_error(exc))
                continue
            try:
                handler(identity, msg, user, body[0])
            except ProtocolError as exc:
                self.counters["protocol_errors"] += 1
                self.metrics.protocol_error()
                if client:
                    self._send_client(identity, "error", req=msg.get("req"), error=protocol.pack_error(exc))
            except Exception as exc:  # a bug: this request fails, the router goes on
                self._internal_error(f"{msg.type} handler")
                if client and msg.get("req") is not None:
                    self._send_client(identity, "error", req=msg.get("req"), error=protocol.pack_error(
                        InternalError(f"the router failed on {msg.type}: {type(exc).__name__}",
                                      stage="router")))

    def _owner_of(self, user: str | None) -> str | None:
        """Who a client connection is: its CurveZMQ key id, :data:`INSECURE_OWNER`
        for a keyless connection over TCP (``insecure_loopback``), or None for
        the local (ipc/inproc, 0700 folder) endpoint."""
        if user is None and self._front_insecure:
            return INSECURE_OWNER
        return user

    def _policy_for(self, owner: str | None) -> Policy:
        """The policy bound to a connection: never what the client says about itself."""
        if owner is None:  # the local (ipc/inproc) endpoints, inside a 0700 folder
            return self.config.local_policy or Policy.trusted()
        if owner == INSECURE_OWNER:  # anyone on this machine could be on the other end
            return self.config.insecure_policy or Policy.from_dict({})
        return self.config.key_policies.get(owner) or Policy.from_dict({})

    def _try_send(self, frames: list) -> str:
        """Send without blocking: ``"sent"``, ``"full"`` (the peer's queue) or ``"gone"``."""
        try:
            self._front.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:
            return "full"
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EAGAIN:
                return "full"
            if exc.errno != errno.EHOSTUNREACH:
                self._log.debug("client send failed: %s", exc)
            return "gone"
        self._last_sent[frames[0]] = time.monotonic()
        return "sent"

    def _send_client(self, identity: bytes, msg_type: str, **fields: Any) -> None:
        """A reply: delivered in order, held while the client's connection is full."""
        frames = [identity, *protocol.encode(msg_type, **fields)]
        held = self._replies.get(identity)
        if held is not None:
            held.append(frames)
            return
        if self._try_send(frames) == "full":
            self._replies[identity] = collections.deque([frames])

    def _event(self, batch: Batch, kind: str, job: str | None = None, **data: Any) -> None:
        """Queue an event for the batch's client; it leaves with the others of this loop turn."""
        identity = batch.client
        if identity is None:
            return  # nobody attached: a client that attaches gets the finished files replayed
        if identity in self._backlog and kind not in MUST_DELIVER:
            return  # behind held results: news of this kind waits for nobody
        out = self._outbox.get(identity)
        if out is None:
            out = self._outbox[identity] = collections.deque()
        out.append((batch.id, kind, job, data))
        self._dirty.add(identity)

    def _flush(self, identity: bytes, budget: int = 16) -> None:
        """Send what a client's outbox holds, in order, several events a message,
        until its connection is full (at most ``budget`` messages: the rest next turn)."""
        out = self._outbox.get(identity)
        while out:
            if budget <= 0:
                self._dirty.add(identity)
                return
            budget -= 1
            n = min(len(out), EVENTS_PER_MESSAGE)
            if n == 1:
                bid, kind, job, data = out[0]
                body = protocol.encode("event", batch=bid, kind=kind, job=job, data=data)
            else:
                body = protocol.encode("events", events=[list(out[i]) for i in range(n)])
            sent = self._try_send([identity, *body])
            if sent == "full":
                if identity not in self._backlog:  # from now on only what must arrive waits
                    self._backlog.add(identity)
                    kept = [e for e in out if e[1] in MUST_DELIVER]
                    out.clear()
                    out.extend(kept)
                return
            if sent == "gone":  # the client left; one that attaches gets a replay
                out.clear()
                for batch in self._batches.values():
                    if batch.client == identity:
                        batch.client = None
                break
            for _ in range(n):
                out.popleft()
        self._outbox.pop(identity, None)
        self._backlog.discard(identity)

    def _forget_events(self, identity: bytes | None, batch_id: str) -> None:
        """Drop the events of one batch still waiting for ``identity`` (a replay follows)."""
        out = self._outbox.get(identity) if identity is not None else None
        if out:
            kept = [e for e in out if e[0] != batch_id]
            out.clear()
            out.extend(kept)

    def _flush_all(self) -> None:
        for identity in list(self._replies):
            held = self._replies[identity]
            while held:
                sent = self._try_send(held[0])
                if sent == "full":
                    break
                held.popleft()  # sent, or nobody to send it to
            if not held:
                del self._replies[identity]
        pending = self._backlog | self._dirty
        self._dirty = set()
        for identity in pending:
            self._flush(identity)

    def _ping_clients(self, now: float) -> None:
        """Tell clients with open batches the router is alive, when nothing else was sent."""
        waiting = {b.client for b in self._batches.values() if not b.finished and b.client is not None}
        for identity in waiting:
            if now - self._last_sent.get(identity, 0.0) >= PING_EVERY and identity not in self._replies:
                self._try_send([identity, *protocol.encode("ping")])
        for identity in [i for i, t in self._last_sent.items() if now - t > 600 and i not in waiting]:
            del self._last_sent[identity]

    def _on_client(self, identity: bytes, msg: protocol.Message, user: str | None = None,
                   _frame: Any = None) -> None:
        owner = self._owner_of(user)
        t = msg.type
        if t == "hello":
            return
        if t == "submit":
            self._submit(identity, msg, self._policy_for(owner), owner)
            return
        if t == "jobs":
            self._jobs_chunk(identity, msg)
            return
        if t == "status":
            self._send_client(identity, "reply", req=msg["req"], ok=True,
                              data=self.status(msg["batch"], owner=owner))
            return
        if t == "attach":
            self._attach(identity, msg, owner)
            return
        if t in ("cancel", "pause", "resume"):
            batch = self._batches.get(msg["batch"])
            if batch is not None and batch.owner != owner:
                batch = None  # another key's batch: as if it did not exist
            if batch is None:
                self._send_client(identity, "reply", req=msg["req"], ok=False,
                                  data={"message": f"unknown batch {msg['batch']}"})
                return
            getattr(self, f"_{t}")(batch)
            self._send_client(identity, "reply", req=msg["req"], ok=True, data={})
            return
        raise ProtocolError(f"message type {t!r} is not for the client endpoint", stage="protocol")

    def announce_degraded(self, reason: str) -> None:
        """Tell every open batch that work now runs in-process."""
        for batch in self._batches.values():
            if not batch.finished:
                self._event(batch, "degraded", reason=reason)

    # -- the life of a job (callbacks of the executor) -----------------------------------

    def job_progress(self, job: Job, stage: str) -> None:
        """A stage of a running job ended: clients are told (the executor renewed its lease)."""
        self._event(self._batches[job.batch], "progress", job.id, stage=stage)

    def job_need(self, job: Job, need: int) -> bool:
        """A running job's sidecar estimated it needs ``need`` bytes: may it go on?

        Yes when the extra fits the memory budget, or when nothing else runs
        (a job alone always runs: the sidecar's own limits bound it). No
        puts the job back in the queue, its need now known, to wait until it
        fits; the caller frees its slot.
        """
        job.mem = need
        extra = need - job.reserved
        others = self._mem_in_use - job.reserved
        if extra <= 0 or others <= 0 or self._mem_in_use + extra <= self._budget:
            if extra > 0:
                self._mem_in_use += extra
                job.reserved = need
            return True
        return False

    def job_done(self, job: Job, result: dict) -> None:
        """A job's output is written (and fsynced): record it, tell the client."""
        batch = self._batches[job.batch]
        job.state = "done"
        job.result = result
        if self._jw is not None:  # the output is already written and fsynced
            self._jw.call("job_done", job.id, result)
        batch.done += 1
        if result.get("bytes_in") and result.get("bytes_out") is not None:
            batch.bytes_in += result["bytes_in"]
            batch.bytes_out += result["bytes_out"]
        self.counters["jobs_done"] += 1
        self.metrics.job_finished(result)
        self._event(batch, "result", job.id, result=result)
        self._progress_event(batch)
        self._maybe_finish(batch)

    def job_failed(self, job: Job, err: PyimgoptError, *, retry: bool = True) -> None:
        """A job failed: retried when retryable (and ``retry``), else ended."""
        batch = self._batches[job.batch]
        if retry and err.retryable and job.attempt < self.config.max_attempts and not batch.cancelled:
            self._retry(job, err)
        else:
            self._end_job(job, err)

    def job_requeue(self, job: Job) -> None:
        """``job`` did not start after all (no free slot, or not enough memory yet):
        queue it again at the front, no attempt spent."""
        batch = self._batches[job.batch]
        job.attempt -= 1
        job.state = "queued"
        if batch.cancelled:
            self._end_job(job, CancelledError("cancelled", path=job.input, stage="queue"))
            return
        self._queue.push(job.id, job.batch, batch.priority, front=True)

    def job_lost(self, job: Job, why: str) -> None:
        """The worker running ``job`` died under it: retry, or fail it as poison."""
        job.kills += 1
        if job.kills >= self.config.poison_kills:
            self._end_job(job, WorkerLostError(
                f"poison: this file took down {job.kills} sidecars ({why})",
                path=job.input, stage="sidecar", retryable=False))
        elif self._batches[job.batch].cancelled:
            self._end_job(job, CancelledError("cancelled", path=job.input, stage="sidecar"))
        else:
            self._retry(job, WorkerLostError(why, path=job.input, stage="sidecar"))

    def release_memory(self, job: Job) -> None:
        """Give back what ``job`` held of the memory budget."""
        self._mem_in_use -= job.reserved
        job.reserved = 0

    def _retry(self, job: Job, err: PyimgoptError) -> None:
        batch = self._batches[job.batch]
        job.state = "queued"
        if self._jw is not None:
            self._jw.call("job_queued", job.id)
        job.not_before = time.monotonic() + min(5.0, 0.1 * 2 ** max(0, job.attempt - 1))
        self._queue.push(job.id, job.batch, batch.priority, front=True)
        self.counters["retries"] += 1
        self.metrics.retry()
        event(self._log, "job_retrying", batch=job.batch, job=job.id, error_code=err.code)
        self._event(batch, "retrying", job.id, attempt=job.attempt, error=protocol.pack_error(err))

    def _end_job(self, job: Job, err: PyimgoptError, *, journal: bool = True) -> None:
        batch = self._batches[job.batch]
        job.state = "cancelled" if isinstance(err, CancelledError) else "failed"
        job.error = protocol.pack_error(err)
        if journal and self._jw is not None:
            self._jw.call("job_failed", job.id, job.error, job.state == "cancelled")
        batch.failed += 1
        self.counters["jobs_failed"] += 1
        self.metrics.job_failed(err.code, err.stage)
        event(self._log, "job_failed", logging.INFO, batch=job.batch, job=job.id, error_code=err.code,
              stage=err.stage)
        self._event(batch, "failed", job.id, error=job.error, input=job.input)
        self._progress_event(batch)
        self._maybe_finish(batch)

    def _progress_event(self, batch: Batch) -> None:
        finished = batch.done + batch.failed
        now = time.monotonic()
        # At most ten a second (and always the last one): a host redraws a bar
        # from these, and a flood of tiny jobs should not mean a flood of events.
        if finished < batch.total and now - batch.last_progress < 0.1:
            return
        batch.last_progress = now
        elapsed = time.monotonic() - batch.started
        eta = (elapsed / finished) * (batch.total - finished) if finished else None
        self._event(batch, "batch_progress", done=batch.done, failed=batch.failed, total=batch.total,
                    bytes_in=batch.bytes_in, bytes_out=batch.bytes_out,
                    saved=batch.bytes_in - batch.bytes_out, eta=eta)

    def _maybe_finish(self, batch: Batch) -> None:
        if not batch.finished and batch.done + batch.failed >= batch.total and self._registered(batch):
            self._finish_batch(batch)

    def _finish_batch(self, batch: Batch) -> None:
        batch.finished = True
        batch.finished_at = time.monotonic()
        if self._jw is not None:
            self._jw.call("batch_state", batch.id, "done")
        self._event(batch, "batch_done", done=batch.done, failed=batch.failed, total=batch.total,
                    bytes_in=batch.bytes_in, bytes_out=batch.bytes_out,
                    seconds=time.monotonic() - batch.started)

    def _forget_finished(self, now: float) -> None:
        """Drop finished batches from memory after a while (the journal keeps them for replay)."""
        if now - getattr(self, "_last_forget", 0.0) < 60.0:
            return
        self._last_forget = now
        keep = 600.0 if self._journal is not None else 3600.0
        for bid, batch in list(self._batches.items()):
            if batch.finished and now - batch.finished_at > keep:
                for jid in batch.jobs:
                    self._jobs.pop(jid, None)
                del self._batches[bid]

    # -- dispatch --------------------------------------------------------------------------

    def _eligible(self, now: float):
        def check(jid: str, bid: str) -> bool:
            batch = self._batches[bid]
            job = self._jobs[jid]
            return not batch.paused and job.not_before <= now
        return check

    @staticmethod
    def _first_grant(job: Job) -> int:
        """What to reserve for ``job`` before its sidecar has read its header."""
        return job.mem if job.mem is not None else BASE_GRANT + 8 * job.size

    def _dispatch(self, now: float) -> None:
        if not len(self._queue):
            return
        free = self._executor.free_slots()
        if not free:
            return
        if now - self._mem_checked > 0.25:  # /proc/meminfo, a few times a second at most
            self._mem_checked = now
            self._pressure = available_memory() < self.config.memory_reserve
        pressure = self._pressure
        for slot in free:
            while self._executor.has_room(slot):
                job = None
                for jid in self._queue.candidates(self._eligible(now)):
                    cand = self._jobs[jid]
                    grant = self._first_grant(cand)
                    running = self._mem_in_use > 0
                    if running and (pressure or self._mem_in_use + grant > self._budget):
                        return  # hold back: it does not fit while others run
                    job = cand
                    break
                if job is None:
                    return
                self._queue.take(job.id)
                batch = self._batches[job.batch]
                job.attempt += 1
                job.state = "running"
                job.reserved = self._first_grant(job)
                self._mem_in_use += job.reserved
                if not self._executor.start(job, batch, slot, now):
                    continue
                if self._jw is not None:
                    self._jw.call("job_running", job.id, job.attempt)
                self._event(batch, "started", job.id, sidecar=self._executor.name_of(slot),
                            attempt=job.attempt, input=job.input)

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
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
        if getattr(self, "_auth", None) is not None:
            self._auth.stop()

    def _shutdown(self) -> None:
        try:
            self._executor.shutdown()
        finally:
            self._close_all()
