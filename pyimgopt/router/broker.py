"""The broker: the router's event loop over clients and sidecars.

Owns the two ROUTER sockets (clients, sidecars), batches and jobs in memory,
dispatch (credit-based: never more jobs than a sidecar's advertised slots;
least-recently-used idle sidecar first; order from :class:`JobQueue`),
liveness (sidecar heartbeats, per-job leases renewed by progress), retries
with backoff, poison detection, memory admission, pause/cancel/resume, pool
supervision (spawn, respawn, recycle) and the degraded in-process worker.
It never touches pixels: sidecars run the pipeline.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import zmq

from .. import protocol
from ..errors import (
    CancelledError,
    CapabilityDeniedError,
    IOFailureError,
    InvalidSettingsError,
    JobTimeoutError,
    ProtocolError,
    PyimgoptError,
    ScopeDeniedError,
    WorkerLostError,
)
from ..pipeline.encode import EXTENSIONS
from ..pipeline.write import (atomic_write, expected_parent, parent_anchor, read_input,
                              remove_stale_temps)
from ..auth import Authenticator, check_ipc_bind, check_tcp_bind, make_server, peer_key
from ..security import Policy, clobbered_inputs, printable_path, utf8_name
from ..journal import Journal
from ..logs import event, get_logger
from ..metrics import RouterMetrics, serve_metrics
from ..result import Result
from .queue import JobQueue
from .resources import available_memory, estimate_job_memory, memory_budget, usable_cpus

__all__ = ["Router", "RouterConfig"]


@dataclass
class RouterConfig:
    """Tunables of a router; the defaults suit a desktop or a server."""

    workers: int | None = None  # None: usable CPUs; 0: in-process (degraded) only
    pool: bool = True  # False: start no sidecars at all, wait for sidecars that connect
    max_jobs_per_sidecar: int | None = 500
    max_rss: int | None = 1024 * 1024 * 1024
    memory_cap: int | None = None
    memory_reserve: int = 256 * 1024 * 1024
    heartbeat: float = 0.5
    liveness: float = 5.0
    lease: float = 300.0
    max_attempts: int = 3
    poison_kills: int = 3
    spawn_grace: float = 20.0
    # Who may do what: the policy of clients on the local (ipc/inproc, 0700)
    # endpoints — None means trusted — and one policy per authorised CurveZMQ
    # client key id; an authorised key without an entry may do nothing.
    local_policy: Policy | None = None
    key_policies: dict[str, Policy] = field(default_factory=dict)
    # CurveZMQ: the router's secret key file, and folders of the public keys
    # of clients and of sidecars it admits. Required for any tcp:// endpoint,
    # unless insecure_loopback is set and the endpoint is on 127.0.0.1.
    curve_secret: str | None = None
    authorized_clients: list[str] = field(default_factory=list)
    authorized_sidecars: list[str] = field(default_factory=list)
    insecure_loopback: bool = False
    # The journal (SQLite, WAL) in this folder: batches survive a router crash
    # and resume on the next start. None: no journal (an ephemeral router).
    state_dir: str | None = None
    retention_days: float = 30.0  # finished batches older than this are pruned
    metrics_port: int | None = None  # serve Prometheus /metrics on 127.0.0.1:PORT (0: any free port)
    sidecar_address_space: int | None = 8 * 1024**3  # RLIMIT_AS of pool sidecars
    cpu_per_job: float | None = 300.0  # CPU seconds one job may use in a pool sidecar


@dataclass
class _Job:
    id: str
    batch: str
    input: str
    output: str | None
    attempt: int = 0
    kills: int = 0
    state: str = "queued"
    sidecar: bytes | None = None
    deadline: float = 0.0
    not_before: float = 0.0
    mem: int | None = None
    started: float = 0.0
    expect: dict | None = None
    inline: bool = False
    mode: int | None = None
    result: dict | None = None  # kept for replay to a client that reattaches
    error: dict | None = None


@dataclass
class _Batch:
    id: str
    client: bytes
    priority: int
    settings: dict
    in_place: bool
    jobs: list[str]
    done: int = 0
    failed: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    paused: bool = False
    cancelled: bool = False
    started: float = field(default_factory=time.monotonic)
    finished: bool = False
    last_progress: float = 0.0
    owner: str | None = None  # CurveZMQ key id of the submitter (None: local)
    finished_at: float = 0.0

    @property
    def total(self) -> int:
        return len(self.jobs)


@dataclass
class _Sidecar:
    identity: bytes
    slots: int
    pid: int
    name: str
    busy: set[str] = field(default_factory=set)
    last_seen: float = field(default_factory=time.monotonic)
    last_idle: float = field(default_factory=time.monotonic)
    rss: int = 0
    jobs_done: int = 0
    retiring: bool = False
    local: bool = False
    inline: bool = False
    sock: Any = None  # the ROUTER socket this sidecar is connected to


def _str_keys(value: Any) -> Any:
    """The same data with every map key a string (msgpack bodies allow no others)."""
    if isinstance(value, dict):
        return {str(k): _str_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_str_keys(v) for v in value]
    return value


class Router:
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
        self._inproc_backend = f"inproc://pyimgopt-sidecars-{uuid.uuid4().hex}"
        self._queue = JobQueue()
        self._jobs: dict[str, _Job] = {}
        self._batches: dict[str, _Batch] = {}
        self._sidecars: dict[bytes, _Sidecar] = {}
        self._procs: dict[int, subprocess.Popen] = {}
        self._spawned_at: dict[int, float] = {}
        self._mem_in_use = 0
        self._budget = memory_budget(self.config.memory_cap, self.config.memory_reserve)
        self._degraded: threading.Thread | None = None
        self._degraded_reason: str | None = None
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
            for name in ("_front", "_back", "_local_back"):
                sock = getattr(self, name, None)
                if sock is not None:
                    sock.close(0)
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
        self._sidecar_keys: frozenset[str] = frozenset()
        self._client_keys: frozenset[str] = frozenset()
        if curve:
            self._client_keys = Authenticator(self._ctx, authorized=cfg.authorized_clients)._load()
            self._sidecar_keys = Authenticator(self._ctx, authorized=cfg.authorized_sidecars)._load()
            self._auth = Authenticator(
                self._ctx, authorized=[*cfg.authorized_clients, *cfg.authorized_sidecars])
            self._auth.start()
        def is_net(ep: str) -> bool:
            return not ep.startswith(("ipc://", "inproc://"))

        self._front = self._ctx.socket(zmq.ROUTER)
        self._back = self._ctx.socket(zmq.ROUTER)
        for sock, ep in ((self._front, self.client_endpoint), (self._back, self.sidecar_endpoint)):
            protocol.configure_socket(sock)
            sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
            if curve and is_net(ep):  # local ipc stays unauthenticated: its 0700 folder is the lock
                make_server(sock, cfg.curve_secret)
        self._front.bind(self.client_endpoint)
        self._back.bind(self.sidecar_endpoint)
        # The local pool and the in-process worker never need keys: when the
        # sidecar endpoint is a network one, they get a private ipc socket.
        self._local_back = self._back
        self._pool_endpoint = self.sidecar_endpoint
        self._private_dir = None
        if is_net(self.sidecar_endpoint):
            self._private_dir = tempfile.mkdtemp(prefix="pyimgopt-pool-")
            os.chmod(self._private_dir, 0o700)
            self._local_back = self._ctx.socket(zmq.ROUTER)
            protocol.configure_socket(self._local_back)
            self._pool_endpoint = f"ipc://{self._private_dir}/sidecars"
            self._local_back.bind(self._pool_endpoint)
        self._local_back.bind(self._inproc_backend)
        if self.client_endpoint.endswith(":0"):
            self.client_endpoint = self._front.getsockopt_string(zmq.LAST_ENDPOINT)
        if self.sidecar_endpoint.endswith(":0"):
            self.sidecar_endpoint = self._back.getsockopt_string(zmq.LAST_ENDPOINT)
        self._journal = None
        if cfg.state_dir:
            self._journal = Journal(cfg.state_dir)
            self._journal.prune(cfg.retention_days * 86400)
            self._recover()
        if cfg.metrics_port is not None:
            self.metrics_server, _ = serve_metrics(self.metrics, cfg.metrics_port)
        self._started = time.monotonic()
        if self._target == 0 and self.config.pool:
            self._go_degraded("workers=0: processing in-process")
        self._ready.set()

    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self._front, zmq.POLLIN)
        poller.register(self._back, zmq.POLLIN)
        if self._local_back is not self._back:
            poller.register(self._local_back, zmq.POLLIN)
        next_beat = 0.0
        try:
            while not self._stop.is_set():
                events = dict(poller.poll(50))
                for back in {self._back, self._local_back}:
                    if back in events:
                        self._drain(back, self._on_sidecar)
                if self._front in events:
                    self._drain(self._front, self._on_client)
                now = time.monotonic()
                if now >= next_beat:
                    for sc in list(self._sidecars.values()):
                        self._send_sidecar(sc.identity, "heartbeat", rss=0, busy=sorted(sc.busy))
                    next_beat = now + self.config.heartbeat
                    self.metrics.set_queue(self._queue.by_priority())
                    self.metrics.set_sidecars([{"name": sc.name, "rss": sc.rss}
                                               for sc in self._sidecars.values()])
                    self.metrics.set_memory(self._mem_in_use, self._budget)
                self._supervise(now)
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

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the loop, shut down the pool and wait for the thread."""
        self._stop.set()
        t = getattr(self, "_thread", None)
        if t is not None:
            t.join(timeout)

    # -- messaging -------------------------------------------------------------------

    def _drain(self, sock: zmq.Socket, handler) -> None:
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
                if sock is self._front:
                    self._send_client(identity, "error", req=None, error=protocol.pack_error(exc))
                continue
            try:
                if sock is self._front:
                    handler(identity, msg, user)
                else:
                    handler(identity, msg, user, sock)
            except ProtocolError as exc:
                self.counters["protocol_errors"] += 1
                self.metrics.protocol_error()
                if sock is self._front:
                    self._send_client(identity, "error", req=msg.get("req"), error=protocol.pack_error(exc))

    def _policy_for(self, user: str | None) -> Policy:
        """The policy bound to a connection: never what the client says about itself."""
        if user is None:
            return self.config.local_policy or Policy.trusted()
        if user not in self._client_keys:  # e.g. a sidecar's key used as a client
            return Policy.from_dict({})
        return self.config.key_policies.get(user) or Policy.from_dict({})

    def _send_client(self, identity: bytes, msg_type: str, **fields: Any) -> None:
        try:
            self._front.send_multipart([identity, *protocol.encode(msg_type, **fields)], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass  # a client that went away, or a full pipe: events are best effort

    def _send_sidecar(self, identity: bytes, msg_type: str, **fields: Any) -> None:
        sc = self._sidecars.get(identity)
        sock = sc.sock if sc is not None and sc.sock is not None else self._back
        try:
            sock.send_multipart([identity, *protocol.encode(msg_type, **fields)], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

    def _event(self, batch: _Batch, kind: str, job: str | None = None, **data: Any) -> None:
        self._send_client(batch.client, "event", batch=batch.id, kind=kind, job=job, data=data)

    # -- clients ---------------------------------------------------------------------

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

    def _submit(self, identity: bytes, msg: protocol.Message, policy: Policy,
                user_key: str | None = None) -> None:
        def refuse(err: PyimgoptError) -> None:
            self._send_client(identity, "error", req=msg["req"], error=protocol.pack_error(err))

        try:
            settings = protocol.unpack_settings(msg["settings"])
            policy.capabilities.check_settings(settings, in_place=msg["in_place"],
                                               priority=msg["priority"])
        except (ProtocolError, InvalidSettingsError, CapabilityDeniedError) as exc:
            refuse(exc)
            return
        bid = msg["batch"] or uuid.uuid4().hex
        if bid in self._batches:
            refuse(ProtocolError(f"batch id {bid} is already in use", stage="protocol"))
            return
        # The authoritative checks: every path against the scopes bound to this
        # connection, canonicalised here whatever the client sent.
        accepted: list[_Job] = []
        refused: list[tuple[_Job, PyimgoptError]] = []
        total_bytes = 0
        for spec in msg["jobs"]:
            jid = f"{bid}:{next(self._ids)}"
            try:
                for key in ("input", "output"):
                    if spec.get(key) is not None and not utf8_name(spec[key]):
                        raise IOFailureError(f"{key} file name is not valid UTF-8: rename it",
                                             path=printable_path(spec[key]), stage="scope")
                if not msg["in_place"] and spec.get("output") is None:
                    raise ScopeDeniedError("no output path and in_place not set: refused",
                                           path=str(spec["input"]), stage="scope")
                inp, out = policy.check_job(spec["input"], spec.get("output"), in_place=msg["in_place"])
                if not msg["in_place"] and (out is None or out == inp):
                    raise CapabilityDeniedError("output is the input itself but in_place is not set",
                                                path=str(spec["input"]), stage="scope")
                st = os.stat(inp)
                expect = {"dev": st.st_dev, "ino": st.st_ino}
                if out is not None:  # the folder the write must happen under
                    anchor = parent_anchor(out)
                    if anchor is not None:
                        expect.update(parent_dev=anchor[0], parent_ino=anchor[1], parent_depth=anchor[2])
                total_bytes += st.st_size
                accepted.append(_Job(jid, bid, inp, None if msg["in_place"] else out, expect=expect))
            except PyimgoptError as exc:
                refused.append((_Job(jid, bid, printable_path(str(spec["input"])), None, state="failed"), exc))
            except OSError as exc:
                refused.append((_Job(jid, bid, printable_path(str(spec["input"])), None, state="failed"),
                                ScopeDeniedError(f"cannot check input: {exc.strerror}",
                                                 path=printable_path(str(spec["input"])), stage="scope")))
        clash = clobbered_inputs([(j.input, j.output) for j in accepted],
                                 any_extension=settings.format == "auto")
        for i in sorted(clash, reverse=True):
            job = accepted.pop(i)
            refused.append((_Job(job.id, bid, job.input, None, state="failed"), ScopeDeniedError(
                f"output {job.output} would replace another input of this batch", path=job.input,
                stage="scope")))
        try:
            policy.capabilities.check_batch(len(msg["jobs"]), total_bytes)
        except CapabilityDeniedError as exc:
            refuse(exc)
            return
        batch = _Batch(bid, identity, msg["priority"], msg["settings"], msg["in_place"], [])
        batch.owner = user_key
        if self._journal is not None:  # durable before the submit is acknowledged
            rows = [{"id": j.id, "seq": i, "input": j.input, "output": j.output, "expect": j.expect,
                     "status": "queued"} for i, j in enumerate(accepted)]
            rows += [{"id": j.id, "seq": len(accepted) + i, "input": j.input, "output": None,
                      "status": "queued"} for i, (j, _) in enumerate(refused)]
            try:
                self._journal.add_batch(bid, owner=user_key, priority=msg["priority"],
                                        settings=msg["settings"], in_place=msg["in_place"], jobs=rows)
            except Exception as exc:
                refuse(IOFailureError(f"journal write failed: {exc}", stage="journal",
                                      retryable=True))
                return
        self._batches[bid] = batch
        for job in accepted:
            self._jobs[job.id] = job
            batch.jobs.append(job.id)
            self._queue.push(job.id, bid, batch.priority)
        for job, _ in refused:
            self._jobs[job.id] = job
            batch.jobs.append(job.id)
        self._send_client(identity, "accepted", req=msg["req"], batch=bid, total=batch.total)
        event(self._log, "batch_submitted", batch=bid, count=batch.total)
        if self._degraded_reason:
            self._event(batch, "degraded", reason=self._degraded_reason)
        for job, err in refused:
            self._end_job(job, err)
        for job in accepted:
            self._event(batch, "queued", job.id, input=job.input)
        if not batch.jobs:
            self._finish_batch(batch)

    def _attach(self, identity: bytes, msg: protocol.Message, user: str | None) -> None:
        """Point a batch's events at this connection and replay what already finished."""
        batch = self._batches.get(msg["batch"])
        if batch is None and self._journal is not None:
            batch = self._load_finished(msg["batch"])
        if batch is None or (user is not None and batch.owner != user):
            self._send_client(identity, "error", req=msg["req"], error=protocol.pack_error(
                IOFailureError(f"unknown batch {msg['batch']}", stage="attach")))
            return
        batch.client = identity
        self._send_client(identity, "accepted", req=msg["req"], batch=batch.id, total=batch.total)
        for jid in batch.jobs:
            job = self._jobs[jid]
            if job.state == "done" and job.result is not None:
                self._event(batch, "result", jid, result=job.result)
            elif job.state in ("failed", "cancelled") and job.error is not None:
                self._event(batch, "failed", jid, error=job.error, input=job.input)
        finished = batch.done + batch.failed
        self._event(batch, "batch_progress", done=batch.done, failed=batch.failed, total=batch.total,
                    bytes_in=batch.bytes_in, bytes_out=batch.bytes_out,
                    saved=batch.bytes_in - batch.bytes_out, eta=None if finished < batch.total else 0.0)
        if batch.finished:
            self._event(batch, "batch_done", done=batch.done, failed=batch.failed, total=batch.total,
                        bytes_in=batch.bytes_in, bytes_out=batch.bytes_out, seconds=0.0)

    def _load_finished(self, batch_id: str) -> _Batch | None:
        """A batch finished before this router started, rebuilt from the journal for replay."""
        row = self._journal.batch(batch_id)
        if row is None:
            return None
        batch = self._restore(row, self._journal.jobs(batch_id))
        return batch

    def _restore(self, row: dict, jobs: list[dict]) -> _Batch:
        batch = _Batch(row["id"], b"", row["priority"], row["settings"], bool(row["in_place"]), [])
        batch.owner = row["owner"]
        batch.paused = row["state"] == "paused"
        batch.cancelled = row["state"] == "cancelled"
        self._batches[batch.id] = batch
        for j in jobs:
            job = _Job(j["id"], batch.id, j["input"], j["output"], attempt=j["attempts"],
                       expect=j["expect"])
            self._jobs[job.id] = job
            batch.jobs.append(job.id)
            if j["status"] == "done":
                job.state, job.result = "done", j["result"] or {}
                batch.done += 1
                if job.result.get("bytes_in") and job.result.get("bytes_out") is not None:
                    batch.bytes_in += job.result["bytes_in"]
                    batch.bytes_out += job.result["bytes_out"]
            elif j["status"] in ("failed", "cancelled"):
                job.state, job.error = j["status"], j["error"] or {}
                batch.failed += 1
            else:
                job.state = j["status"]
        batch.finished = row["state"] == "done"
        return batch

    def _recover(self) -> None:
        """At start: requeue what was not finished; never redo what is done."""
        for row in self._journal.unfinished():
            batch = self._restore(row, row["jobs"])
            for jid in batch.jobs:
                job = self._jobs[jid]
                if job.state == "done" and not batch.in_place:
                    out = (job.result or {}).get("output")
                    if out and not os.path.exists(out):  # the output vanished: do it again
                        batch.done -= 1
                        job.state, job.result = "queued", None
                        self._journal.job_queued(jid)
                if job.state not in ("queued", "running"):
                    continue
                target = job.input if batch.in_place else job.output
                if job.state == "running" and target:
                    remove_stale_temps(target)  # the old router's sidecars are gone with it
                if batch.in_place and self._replaced(job):
                    result = Result(input=job.input, output=job.input, status="optimized",
                                    notes=("replaced before the router restarted",)).to_dict()
                    job.state, job.result = "done", result
                    self._journal.job_done(jid, result)
                    batch.done += 1
                    continue
                if batch.cancelled:
                    job.state = "queued"
                    self._end_job(job, CancelledError("cancelled", path=job.input, stage="queue"))
                    continue
                job.state = "queued"
                self._journal.job_queued(jid)
                self._queue.push(jid, batch.id, batch.priority)
            if batch.done + batch.failed >= batch.total:
                self._finish_batch(batch)

    @staticmethod
    def _replaced(job: _Job) -> bool:
        """An in-place input whose inode changed was already replaced by its optimised version."""
        if not job.expect:
            return False
        try:
            st = os.stat(job.input)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) != (job.expect["dev"], job.expect["ino"])

    def _cancel(self, batch: _Batch) -> None:
        batch.cancelled = True
        if self._journal is not None:
            self._journal.batch_state(batch.id, "cancelled")
        for jid in self._queue.jobs_of(batch.id):
            self._queue.remove(jid)
            self._end_job(self._jobs[jid], CancelledError("cancelled before it started",
                                                          path=self._jobs[jid].input, stage="queue"))
        for jid in batch.jobs:
            job = self._jobs[jid]
            if job.state == "running" and job.sidecar is not None:
                self._send_sidecar(job.sidecar, "abort", job=jid)
        self._event(batch, "cancelled")
        self._maybe_finish(batch)

    def _pause(self, batch: _Batch) -> None:
        batch.paused = True
        if self._journal is not None:
            self._journal.batch_state(batch.id, "paused")
        self._event(batch, "paused")

    def _resume(self, batch: _Batch) -> None:
        batch.paused = False
        if self._journal is not None:
            self._journal.batch_state(batch.id, "active")
        self._event(batch, "resumed")

    def status(self, batch_id: str | None = None, owner: str | None = None) -> dict:
        """Figures for ``status``: batches, queue, sidecars, memory, counters.

        A remote (CurveZMQ) caller ``owner`` sees only its own batches.
        """
        batches = [self._batches[batch_id]] if batch_id in self._batches else (
            [] if batch_id else list(self._batches.values()))
        if owner is not None:
            batches = [b for b in batches if b.owner == owner]
        return {
            "batches": [
                {"batch": b.id, "total": b.total, "done": b.done, "failed": b.failed,
                 "paused": b.paused, "cancelled": b.cancelled, "finished": b.finished,
                 "priority": b.priority, "bytes_in": b.bytes_in, "bytes_out": b.bytes_out}
                for b in batches
            ],
            "queue": {str(k): v for k, v in self._queue.by_priority().items()},
            "sidecars": [
                {"name": s.name, "pid": s.pid, "slots": s.slots, "busy": len(s.busy), "rss": s.rss,
                 "jobs_done": s.jobs_done, "local": s.local}
                for s in self._sidecars.values()
            ],
            "pool_pids": sorted(self._procs),
            "memory": {"budget": self._budget, "in_use": self._mem_in_use},
            "degraded": self._degraded_reason,
            "counters": dict(self.counters),
            "metrics": _str_keys(self.metrics.snapshot()),
        }

    # -- sidecars --------------------------------------------------------------------

    def _on_sidecar(self, identity: bytes, msg: protocol.Message, user: str | None = None,
                    sock: zmq.Socket | None = None) -> None:
        t = msg.type
        if user is not None and user not in self._sidecar_keys:
            return  # a client's key on the sidecar endpoint: not a sidecar
        sc = self._sidecars.get(identity)
        if t == "ready":
            local = msg["pid"] == os.getpid()
            self._sidecars[identity] = _Sidecar(identity, max(1, msg["slots"]), msg["pid"], msg["name"],
                                                local=local, inline=bool(msg.get("inline")),
                                                sock=sock or self._back)
            return
        if sc is None:
            return  # not (or no longer) one of ours: it will time out
        sc.last_seen = time.monotonic()
        if t == "heartbeat":
            sc.rss = msg["rss"]
            return
        if t == "shutdown":
            sc.retiring = True
            self.counters["recycles"] += 1
            self.metrics.recycle()
            event(self._log, "sidecar_recycled", sidecar=sc.name)
            if not sc.busy:
                self._sidecars.pop(identity, None)
            return
        job = self._jobs.get(msg["job"]) if t in ("progress", "result", "failed") else None
        if job is None or job.sidecar != identity or job.attempt != msg["attempt"] or job.state != "running":
            return  # a stale answer (an earlier attempt, a job already requeued): ignored
        batch = self._batches[job.batch]
        if t == "progress":
            job.deadline = time.monotonic() + self.config.lease
            self._event(batch, "progress", job.id, stage=msg["stage"])
            return
        self._release(job, sc)
        sc.jobs_done += 1
        if t == "result":
            result = msg["result"]
            if job.inline:
                try:
                    result = self._write_inline(job, batch, result, msg.bulk)
                except PyimgoptError as exc:
                    self._end_job(job, exc)
                    return
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
            return
        err = protocol.unpack_error(msg["error"])
        if err.stage == "dispatch":  # the sidecar was full or recycling: not the job's fault
            sc.retiring = True
            job.attempt -= 1
            job.state = "queued"
            self._queue.push(job.id, job.batch, batch.priority, front=True)
            return
        if err.retryable and job.attempt < self.config.max_attempts and not batch.cancelled:
            self._retry(job, err)
        else:
            self._end_job(job, err)

    def _release(self, job: _Job, sc: _Sidecar | None) -> None:
        if sc is not None:
            sc.busy.discard(job.id)
            if not sc.busy:
                sc.last_idle = time.monotonic()
                if sc.retiring:
                    self._sidecars.pop(sc.identity, None)
        self._mem_in_use -= job.mem or 0
        job.sidecar = None

    def _retry(self, job: _Job, err: PyimgoptError) -> None:
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

    def _end_job(self, job: _Job, err: PyimgoptError) -> None:
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

    def _progress_event(self, batch: _Batch) -> None:
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

    def _maybe_finish(self, batch: _Batch) -> None:
        if not batch.finished and batch.done + batch.failed >= batch.total:
            self._finish_batch(batch)

    def _finish_batch(self, batch: _Batch) -> None:
        batch.finished = True
        batch.finished_at = time.monotonic()
        if self._journal is not None:
            self._journal.batch_state(batch.id, "done")
        self._event(batch, "batch_done", done=batch.done, failed=batch.failed, total=batch.total,
                    bytes_in=batch.bytes_in, bytes_out=batch.bytes_out,
                    seconds=time.monotonic() - batch.started)

    def _read_inline(self, job: _Job, batch: _Batch) -> bytes:
        """The input bytes for a sidecar that cannot see our files (checked as a local read)."""
        limit = int(batch.settings.get("max_input_bytes") or 256 * 1024 * 1024)
        want = None if job.expect is None else (job.expect["dev"], job.expect["ino"])
        data, st = read_input(job.input, limit, expect=want)
        job.mode = st.st_mode
        return data

    def _write_inline(self, job: _Job, batch: _Batch, result: dict, bulk: tuple) -> dict:
        """Write what a remote sidecar sent back, under this router's checks; return the result."""
        if not bulk:
            raise ProtocolError("inline result without its image frame", path=job.input, stage="protocol")
        result = dict(result)
        result["input"] = job.input
        if batch.in_place:
            dst = job.input
        else:
            dst = job.output
            fmt_in, fmt_out = result.get("format_in"), result.get("format_out")
            if batch.settings.get("format") == "auto" and fmt_out and fmt_out != fmt_in:
                dst = os.path.splitext(dst)[0] + EXTENSIONS[fmt_out]
        if not (batch.in_place and result.get("status") == "skipped"):
            parent, depth = expected_parent(job.expect)
            atomic_write(dst, bulk[0], mode=job.mode if batch.in_place else None, expect_parent=parent,
                         create_depth=depth)
        result["output"] = dst
        return result

    def _lose(self, sc: _Sidecar, why: str) -> None:
        """A sidecar died or went silent: kill it if ours, requeue or poison its jobs."""
        self._sidecars.pop(sc.identity, None)
        self.counters["sidecars_lost"] += 1
        self.metrics.sidecar_lost()
        # With no job on it, a lost sidecar costs nothing (e.g. a recycled one whose
        # goodbye was overtaken by its exit): information, not a warning.
        event(self._log, "sidecar_lost", logging.WARNING if sc.busy else logging.INFO,
              sidecar=sc.name, count=len(sc.busy), reason=why)
        proc = self._procs.get(sc.pid)
        if proc is not None and proc.poll() is None:
            proc.kill()
        if proc is not None:
            try:
                proc.wait(5)  # dead for sure before its half-written files are removed
            except subprocess.TimeoutExpired:
                pass
        for jid in list(sc.busy):
            job = self._jobs[jid]
            self._release(job, None)
            if proc is not None and proc.poll() is not None:
                batch = self._batches[job.batch]
                target = job.input if batch.in_place else job.output
                if target:
                    remove_stale_temps(target)
                    if batch.settings.get("format") == "auto":  # the writer may have renamed it
                        stem = os.path.splitext(target)[0]
                        for ext in EXTENSIONS.values():
                            remove_stale_temps(stem + ext)
            job.kills += 1
            if job.kills >= self.config.poison_kills:
                self._end_job(job, WorkerLostError(
                    f"poison: this file took down {job.kills} sidecars ({why})",
                    path=job.input, stage="sidecar", retryable=False))
            elif self._batches[job.batch].cancelled:
                self._end_job(job, CancelledError("cancelled", path=job.input, stage="sidecar"))
            else:
                self._retry(job, WorkerLostError(why, path=job.input, stage="sidecar"))

    # -- supervision and dispatch ----------------------------------------------------

    def _spawn(self) -> None:
        cmd = [sys.executable, "-m", "sidecar", "--connect", self._pool_endpoint,
               "--heartbeat", str(self.config.heartbeat), "--parent", str(os.getpid())]
        if self.config.max_jobs_per_sidecar:
            cmd += ["--max-jobs", str(self.config.max_jobs_per_sidecar)]
        if self.config.max_rss:
            cmd += ["--max-rss-mb", str(max(1, self.config.max_rss // (1024 * 1024)))]
        if self.config.sidecar_address_space:
            cmd += ["--max-address-space-mb", str(self.config.sidecar_address_space // (1024 * 1024))]
        if self.config.cpu_per_job:
            cmd += ["--cpu-per-job", str(self.config.cpu_per_job)]
        # One codec thread per sidecar (oxipng's rayon pool, AVIF's encoder):
        # the pool owns the parallelism, so the cores are not oversubscribed.
        # glibc: two arenas; buffers under 32 MiB come from the heap and are reused
        # job after job, the top of the heap goes back to the OS past 64 MiB. (A
        # lone MALLOC_TRIM_THRESHOLD_ also freezes the mmap threshold at 128 KiB,
        # so every image buffer was a fresh mmap that faulted in: ~10 % slower.)
        env = {**os.environ, "MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": str(32 * 1024 * 1024),
               "MALLOC_TRIM_THRESHOLD_": str(64 * 1024 * 1024),
               "RAYON_NUM_THREADS": "1", "PYIMGOPT_CODEC_THREADS": "1"}
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, env=env)
        except OSError as exc:
            self._go_degraded(f"cannot start sidecars ({exc}); processing in-process")
            return
        self._procs[proc.pid] = proc
        self._spawned_at[proc.pid] = time.monotonic()
        self.counters["spawned"] += 1
        event(self._log, "sidecar_spawned", count=proc.pid)

    def _go_degraded(self, reason: str) -> None:
        if self._degraded is not None:
            return
        from sidecar.worker import Sidecar  # the same job loop, in a thread, over inproc

        self._degraded_reason = reason
        worker = Sidecar(self._inproc_backend, context=self._ctx, name="in-process",
                         heartbeat=self.config.heartbeat, router_timeout=1e9, allow_crash_hook=False)
        self._degraded_worker = worker
        self._degraded = threading.Thread(target=worker.run, name="pyimgopt-inprocess", daemon=True)
        self._degraded.start()
        for batch in self._batches.values():
            if not batch.finished:
                self._event(batch, "degraded", reason=reason)

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

    def _supervise(self, now: float) -> None:
        cfg = self.config
        self._forget_finished(now)
        for pid, proc in list(self._procs.items()):
            if proc.poll() is not None:
                for sc in list(self._sidecars.values()):
                    if sc.pid == pid:  # _lose needs the process to clean up after it
                        self._lose(sc, f"sidecar {pid} exited with code {proc.returncode}")
                del self._procs[pid]
                self._spawned_at.pop(pid, None)
        for sc in list(self._sidecars.values()):
            if not sc.local and now - sc.last_seen > cfg.liveness:
                self._lose(sc, f"sidecar {sc.name} silent for {now - sc.last_seen:.1f} s")
                continue
            for jid in list(sc.busy):
                job = self._jobs[jid]
                if now > job.deadline:
                    if sc.local:
                        self._release(job, sc)
                        self._end_job(job, JobTimeoutError("job lease expired", path=job.input))
                    else:
                        self._lose(sc, f"job lease expired on {sc.name}")
                    break
        if self._target > 0 and self._degraded is None and cfg.pool:
            live = len([p for p in self._procs.values() if p.poll() is None])
            for _ in range(self._target - live):
                self._spawn()
            # No sidecar ever came up: degrade rather than wait forever.
            if (not self._sidecars and self.counters["spawned"] >= 3 * self._target
                    and now - self._started > cfg.spawn_grace):
                self._go_degraded("no sidecar could start; processing in-process")

    def _eligible(self, now: float):
        def check(jid: str, bid: str) -> bool:
            batch = self._batches[bid]
            job = self._jobs[jid]
            return not batch.paused and job.not_before <= now
        return check

    def _dispatch(self, now: float) -> None:
        if not len(self._queue):
            return
        free = [s for s in self._sidecars.values() if not s.retiring and len(s.busy) < s.slots]
        if not free:
            return
        free.sort(key=lambda s: (len(s.busy) > 0, s.last_idle))  # idle first, least recently used
        pressure = available_memory() < self.config.memory_reserve
        for sc in free:
            while len(sc.busy) < sc.slots:
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
                job.sidecar = sc.identity
                job.started = now
                job.deadline = now + self.config.lease
                sc.busy.add(job.id)
                self._mem_in_use += job.mem or 0
                bulk: list[bytes] = []
                job.inline = sc.inline
                if sc.inline:
                    try:
                        bulk = [self._read_inline(job, batch)]
                    except PyimgoptError as exc:
                        self._release(job, sc)
                        job.state = "running"  # _end_job counts it once
                        self._end_job(job, exc)
                        continue
                self._send_sidecar(sc.identity, "job", bulk=bulk, job=job.id, attempt=job.attempt,
                                   lease_ms=int(self.config.lease * 1000),
                                   input=None if sc.inline else job.input,
                                   output=None if sc.inline else job.output,
                                   in_place=batch.in_place, settings=batch.settings,
                                   inline=sc.inline, expect=None if sc.inline else job.expect)
                if self._journal is not None:
                    self._journal.job_running(job.id, job.attempt)
                self._event(batch, "started", job.id, sidecar=sc.name, attempt=job.attempt, input=job.input)

    def _shutdown(self) -> None:
        for sc in list(self._sidecars.values()):
            self._send_sidecar(sc.identity, "shutdown", reason="router stopping")
        deadline = time.monotonic() + 5
        for proc in self._procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait(5)
        if self._degraded is not None:
            self._degraded.join(5)
        self._front.close(0)
        self._back.close(0)
        if self._local_back is not self._back:
            self._local_back.close(0)
        if self._private_dir:
            import shutil

            shutil.rmtree(self._private_dir, ignore_errors=True)
        if self._journal is not None:
            self._journal.close()
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
        if getattr(self, "_auth", None) is not None:
            self._auth.stop()
