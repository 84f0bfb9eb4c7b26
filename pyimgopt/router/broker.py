"""The broker: the router's event loop, and what runs next.

Owns the client endpoint's socket, the loop that polls it and the
executor's sockets, the life of every job once it exists (dispatch order
from :class:`JobQueue`, memory admission, the attempt count, retries with
backoff, poison detection, results and failures, progress events, the end of
a batch) and start/stop of the whole router. What clients ask about batches
lives in :mod:`.batches` (mixed in); *where* a job runs is the executor's
business (:mod:`.sidecars`), reached through ``start``/``abort``/``tick``
and answering through the ``job_*`` callbacks here. It never touches pixels.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from typing import Any

import zmq

from .. import protocol
from ..errors import (
    CancelledError,
    ProtocolError,
    PyimgoptError,
    WorkerLostError,
)
from ..auth import Authenticator, authorized_keys, check_ipc_bind, check_tcp_bind, make_server, peer_key
from ..security import Policy
from ..journal import Journal
from ..logs import event, get_logger
from ..metrics import RouterMetrics, serve_metrics
from .batches import BatchDesk
from .config import RouterConfig
from .model import Batch, Job
from .queue import JobQueue
from .resources import available_memory, estimate_job_memory, memory_budget, usable_cpus
from .sidecars import SidecarExecutor, _is_net

__all__ = ["Router", "RouterConfig"]


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
        self._ids = itertools.count(1)
        self.counters: dict[str, int] = {
            "jobs_done": 0, "jobs_failed": 0, "retries": 0, "recycles": 0,
            "sidecars_lost": 0, "protocol_errors": 0, "spawned": 0,
        }
        target = self.config.workers
        self._target = usable_cpus() if target is None else max(0, int(target))
        self.metrics = RouterMetrics()
        self.metrics_server = None
        self._log = get_logger("router")
        self._executor = SidecarExecutor(self)

    # -- public ----------------------------------------------------------------------

    def serve(self) -> None:
        """Run the loop until :meth:`stop`; always cleans up its sidecars.

        A set-up failure (refused tcp bind, bad keys, endpoint in use) is kept
        for :meth:`start` to raise in the caller's thread.
        """
        try:
            self._setup()
        except BaseException as exc:
            self._startup_error = exc
            self._ready.set()
            if getattr(self, "_front", None) is not None:
                self._front.close(0)
            self._executor.close_sockets()
            if getattr(self, "_auth", None) is not None:
                self._auth.stop()
            return
        self._loop()

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
        self._front = self._ctx.socket(zmq.ROUTER)
        protocol.configure_socket(self._front)
        self._front.setsockopt(zmq.ROUTER_HANDOVER, 1)
        if curve and _is_net(self.client_endpoint):  # local ipc stays unauthenticated: its 0700 folder is the lock
            make_server(self._front, cfg.curve_secret)
        self._front.bind(self.client_endpoint)
        self._back_socks = self._executor.setup(sidecar_keys)
        if self.client_endpoint.endswith(":0"):
            self.client_endpoint = self._front.getsockopt_string(zmq.LAST_ENDPOINT)
        self.sidecar_endpoint = self._executor.endpoint
        self._journal = None
        if cfg.state_dir:
            self._journal = Journal(cfg.state_dir)
            self._journal.prune(cfg.retention_days * 86400)
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
        next_beat = 0.0
        try:
            while not self._stop.is_set():
                events = dict(poller.poll(50))
                for sock in self._back_socks:
                    if sock in events:
                        self._executor.on_readable(sock)
                if self._front in events:
                    self._drain(self._front, self._on_client)
                now = time.monotonic()
                beat = now >= next_beat
                if beat:
                    next_beat = now + self.config.heartbeat
                    self.metrics.set_queue(self._queue.by_priority())
                    self.metrics.set_sidecars(self._executor.metrics_rows())
                    self.metrics.set_memory(self._mem_in_use, self._budget)
                self._forget_finished(now)
                self._executor.tick(now, beat)
                self._dispatch(now)
        finally:
            self._shutdown()

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
                handler(identity, msg, user)
            except ProtocolError as exc:
                self.counters["protocol_errors"] += 1
                self.metrics.protocol_error()
                if client:
                    self._send_client(identity, "error", req=msg.get("req"), error=protocol.pack_error(exc))

    def _policy_for(self, user: str | None) -> Policy:
        """The policy bound to a connection: never what the client says about itself."""
        if user is None:  # the local (ipc/inproc) endpoints, inside a 0700 folder
            return self.config.local_policy or Policy.trusted()
        return self.config.key_policies.get(user) or Policy.from_dict({})

    def _send_client(self, identity: bytes, msg_type: str, **fields: Any) -> None:
        try:
            self._front.send_multipart([identity, *protocol.encode(msg_type, **fields)], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass  # a client that went away, or a full pipe: events are best effort

    def _event(self, batch: Batch, kind: str, job: str | None = None, **data: Any) -> None:
        self._send_client(batch.client, "event", batch=batch.id, kind=kind, job=job, data=data)

    def _on_client(self, identity: bytes, msg: protocol.Message, user: str | None = None) -> None:
        t = msg.type
        if t == "hello":
            return
        if t == "submit":
            self._submit(identity, msg, self._policy_for(user), user)
            return
        if t == "status":
            self._send_client(identity, "reply", req=msg["req"], ok=True,
                              data=self.status(msg["batch"], owner=user))
            return
        if t == "attach":
            self._attach(identity, msg, user)
            return
        if t in ("cancel", "pause", "resume"):
            batch = self._batches.get(msg["batch"])
            if batch is not None and user is not None and batch.owner != user:
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
        """A stage of a running job ended: its lease is renewed (by the executor), clients told."""
        self._event(self._batches[job.batch], "progress", job.id, stage=stage)

    def job_done(self, job: Job, result: dict) -> None:
        """A job's output is written (and fsynced): record it, tell the client."""
        batch = self._batches[job.batch]
        job.state = "done"
        job.result = result
        if self._journal is not None:  # the output is already written and fsynced
            self._journal.job_done(job.id, result)
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
        """The executor could not start ``job`` (no free slot after all): queue it again, no attempt spent."""
        batch = self._batches[job.batch]
        job.attempt -= 1
        job.state = "queued"
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

    def _retry(self, job: Job, err: PyimgoptError) -> None:
        batch = self._batches[job.batch]
        job.state = "queued"
        if self._journal is not None:
            self._journal.job_queued(job.id)
        job.not_before = time.monotonic() + min(5.0, 0.1 * 2 ** max(0, job.attempt - 1))
        self._queue.push(job.id, job.batch, batch.priority, front=True)
        self.counters["retries"] += 1
        self.metrics.retry()
        event(self._log, "job_retrying", batch=job.batch, job=job.id, error_code=err.code)
        self._event(batch, "retrying", job.id, attempt=job.attempt, error=protocol.pack_error(err))

    def _end_job(self, job: Job, err: PyimgoptError) -> None:
        batch = self._batches[job.batch]
        job.state = "cancelled" if isinstance(err, CancelledError) else "failed"
        job.error = protocol.pack_error(err)
        if self._journal is not None:
            self._journal.job_failed(job.id, job.error, cancelled=job.state == "cancelled")
        batch.failed += 1
        self.counters["jobs_failed"] += 1
        self.metrics.job_failed(err.code, err.stage)
        event(self._log, "job_failed", batch=job.batch, job=job.id, error_code=err.code,
              stage=err.stage)
        self._event(batch, "failed", job.id, error=protocol.pack_error(err), input=job.input)
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
        if not batch.finished and batch.done + batch.failed >= batch.total:
            self._finish_batch(batch)

    def _finish_batch(self, batch: Batch) -> None:
        batch.finished = True
        batch.finished_at = time.monotonic()
        if self._journal is not None:
            self._journal.batch_state(batch.id, "done")
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

    def _dispatch(self, now: float) -> None:
        if not len(self._queue):
            return
        free = self._executor.free_slots()
        if not free:
            return
        pressure = available_memory() < self.config.memory_reserve
        for sc in free:
            while self._executor.has_room(sc):
                job = None
                for jid in self._queue.candidates(self._eligible(now)):
                    cand = self._jobs[jid]
                    if cand.mem is None:
                        cand.mem = estimate_job_memory(cand.input)
                    running = self._mem_in_use > 0
                    if running and (pressure or self._mem_in_use + cand.mem > self._budget):
                        return  # hold back: it does not fit while others run
                    job = cand
                    break
                if job is None:
                    return
                self._queue.take(job.id)
                batch = self._batches[job.batch]
                job.attempt += 1
                job.state = "running"
                if not self._executor.start(job, batch, sc, now):
                    continue
                if self._journal is not None:
                    self._journal.job_running(job.id, job.attempt)
                self._event(batch, "started", job.id, sidecar=sc.name, attempt=job.attempt, input=job.input)

    def _shutdown(self) -> None:
        self._executor.shutdown()
        self._front.close(0)
        if self._journal is not None:
            self._journal.close()
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
        if getattr(self, "_auth", None) is not None:
            self._auth.stop()
