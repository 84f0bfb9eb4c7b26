"""The sidecar executor: where the router's jobs run — ZeroMQ sidecars.

Owns the sidecar endpoint's sockets, the registry of sidecars — pool
processes (:mod:`.pool`), remote sidecars, the degraded in-process worker
(on an ``inproc`` socket of its own, so no peer can pass for it) —
credit-based placement (never more jobs than a sidecar's
advertised slots; least-recently-used idle sidecar first), the messages to
and from sidecars (their liveness, losses and the pool's supervision in
:mod:`.liveness`), memory grants (a sidecar that estimates from the header
that a job needs more than reserved asks first), and inline jobs for
sidecars that cannot see our files (their reads and writes on worker
threads). The router decides *what* runs (:mod:`.broker`); this executor
decides *where*, and reports progress, results, failures and losses back
through the router's ``job_*`` callbacks.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import TYPE_CHECKING, Any

import zmq
from zmq.utils.monitor import parse_monitor_message

from .. import protocol
from ..auth import make_server
from ..errors import ProtocolError, PyimgoptError
from ..logs import event
from .inline import read_inline, write_back
from .model import Batch, Job, SidecarRecord
from .liveness import SidecarLiveness
from .pool import LocalPool

if TYPE_CHECKING:
    from .broker import Router

__all__ = ["SidecarExecutor", "START_JOB_MEMORY"]

#: The largest job (its header estimate: roughly 1.5 MP) the in-process worker
#: takes while it covers the pool's start; a bigger one is handed back to the
#: queue for a sidecar. Small jobs end quickly, so the router's thread, which
#: shares that process's GIL, keeps dispatching to the sidecars coming up.
START_JOB_MEMORY = 64 * 1024 * 1024


def _is_net(ep: str) -> bool:
    return not ep.startswith(("ipc://", "inproc://"))


class SidecarExecutor(SidecarLiveness):
    """Runs the router's jobs on ZeroMQ sidecars (a local pool and remote ones)."""

    def __init__(self, router: Router) -> None:
        self.r = router
        self.config = router.config
        self.sidecars: dict[bytes, SidecarRecord] = {}
        self.pool = LocalPool(self)
        self.inproc_endpoint = f"inproc://pyimgopt-sidecars-{router._uid}"
        self._back = self._local_back = self._inproc = self._monitor = None
        self._keyed: zmq.Socket | None = None
        self._private_dir: str | None = None
        self.endpoint = router.sidecar_endpoint
        self._sidecar_keys: frozenset[str] = frozenset()
        self._asked: dict[bytes, float] = {}  # unknown peers asked to register, when
        self._modes: dict[str, int] = {}  # inline in-place jobs: the input's mode for the write
        self._supervised = 0.0  # when tick last reaped, checked liveness and leases

    @property
    def degraded_reason(self) -> str | None:
        return self.pool.degraded_reason

    # -- set-up and sockets ------------------------------------------------------------

    def setup(self, sidecar_keys: frozenset[str]) -> list[zmq.Socket]:
        """Bind the sidecar endpoint (and private ones for the pool); return sockets to poll."""
        cfg = self.config
        ctx = self.r._ctx
        self._sidecar_keys = sidecar_keys
        self._back = ctx.socket(zmq.ROUTER)
        protocol.configure_socket(self._back, max_queued=256)
        self._back.setsockopt(zmq.ROUTER_HANDOVER, 1)
        # ZeroMQ's own heartbeats: answered by the peer's I/O thread even while
        # its Python holds the GIL, missed by a stopped or vanished peer.
        self._back.setsockopt(zmq.HEARTBEAT_IVL, max(100, int(cfg.heartbeat * 1000)))
        self._back.setsockopt(zmq.HEARTBEAT_TIMEOUT, max(500, int(cfg.liveness * 1000)))
        self._monitor = self._back.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        if cfg.curve_secret is not None and _is_net(self.endpoint):
            make_server(self._back, cfg.curve_secret)
            self._keyed = self._back  # the one socket whose peers may hold keys
        self._back.bind(self.endpoint)
        # The local pool never needs keys: when the sidecar endpoint is a
        # network one, it gets a private ipc socket.
        self._local_back = self._back
        self._pool_endpoint = self.endpoint
        if _is_net(self.endpoint):
            self._private_dir = tempfile.mkdtemp(prefix="pyimgopt-pool-")
            os.chmod(self._private_dir, 0o700)
            self._local_back = ctx.socket(zmq.ROUTER)
            protocol.configure_socket(self._local_back, max_queued=256)
            self._pool_endpoint = f"ipc://{self._private_dir}/sidecars"
            self._local_back.bind(self._pool_endpoint)
        # The in-process worker has a socket of its own: whatever arrives
        # there is that thread, whatever pid another peer claims.
        self._inproc = ctx.socket(zmq.ROUTER)
        protocol.configure_socket(self._inproc)
        self._inproc.bind(self.inproc_endpoint)
        if self.endpoint.endswith(":0"):
            self.endpoint = self._back.getsockopt_string(zmq.LAST_ENDPOINT)
        self._started = time.monotonic()
        socks = [self._back, self._inproc, self._monitor]
        if self._local_back is not self._back:
            socks.append(self._local_back)
        return socks

    def close_sockets(self) -> None:
        """Close whatever :meth:`setup` opened (also after a failed set-up)."""
        if self._monitor is not None:
            try:
                self._back.disable_monitor()
            except zmq.ZMQError:
                pass
        for sock in (self._monitor, self._back, self._local_back, self._inproc):
            if sock is not None and not sock.closed:
                sock.close(0)
        if self._private_dir:
            import shutil

            shutil.rmtree(self._private_dir, ignore_errors=True)
            self._private_dir = None

    def on_readable(self, sock: zmq.Socket) -> None:
        """Handle what arrived on one of the sockets :meth:`setup` returned."""
        if sock is self._monitor:
            self._on_monitor()
            return
        self.r._drain(sock, lambda identity, msg, user, frame: self._on_sidecar(
            identity, msg, user, sock, frame), client=False, keyed=sock is self._keyed)

    def _on_monitor(self) -> None:
        while True:
            try:
                frames = self._monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            ev = parse_monitor_message(frames)
            if ev["event"] != zmq.EVENT_DISCONNECTED:
                continue
            fd = ev["value"]
            for sc in list(self.sidecars.values()):
                if sc.fd == fd and not sc.pool and not sc.local:
                    self._lose(sc, f"connection to sidecar {sc.name} lost")

    def send(self, identity: bytes, msg_type: str, bulk: list | None = None, sock: Any = None,
             **fields: Any) -> None:
        sc = self.sidecars.get(identity)
        if sock is None:
            sock = sc.sock if sc is not None and sc.sock is not None else self._back
        try:
            sock.send_multipart([identity, *protocol.encode(msg_type, bulk=bulk or (), **fields)],
                                zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

    # -- messages from sidecars ------------------------------------------------------

    def _on_sidecar(self, identity: bytes, msg: protocol.Message, user: str | None,
                    sock: zmq.Socket, frame: Any) -> None:
        r = self.r
        t = msg.type
        if user is not None and user not in self._sidecar_keys:
            return  # a client's key on the sidecar endpoint: not a sidecar
        if user is None and sock is self._back and _is_net(self.endpoint):
            return  # no key over the network (insecure_loopback): never a sidecar
        sc = self.sidecars.get(identity)
        if t == "ready":
            local = sock is self._inproc
            pool = not local and sock is self._local_back and self.pool.owns(msg["pid"])
            fd = None
            if not local and not pool:
                try:
                    fd = frame.get(zmq.SRCFD)
                except (zmq.ZMQError, AttributeError, TypeError):
                    fd = None
            old = self.sidecars.get(identity)
            if old is not None and old.busy:
                self._lose(old, f"sidecar {old.name} announced itself again")
            self.sidecars[identity] = SidecarRecord(identity, max(1, msg["slots"]), msg["pid"], msg["name"],
                                                    local=local, inline=bool(msg.get("inline")),
                                                    sock=sock, pool=pool, fd=fd,
                                                    start_only=local and self.pool.degraded_reason is None)
            self._asked.pop(identity, None)
            if pool:
                self.pool.ready(msg["pid"])
            return
        if sc is None:
            # not (or no longer) one of ours — lost while it was silent, or it
            # reconnected: ask it to register anew (once a second at most)
            now = time.monotonic()
            if t in ("heartbeat", "progress", "result", "failed", "need") and \
                    now - self._asked.get(identity, 0.0) >= 1.0:
                self._asked[identity] = now
                self.send(identity, "register", sock=sock)
            return
        sc.last_seen = time.monotonic()
        if t == "heartbeat":
            sc.rss = msg["rss"]
            if sc.stale:
                sc.stale &= set(msg["busy"])
            return
        if t == "shutdown":
            sc.retiring = True
            r.counters["recycles"] += 1
            r.metrics.recycle()
            event(r._log, "sidecar_recycled", sidecar=sc.name)
            if not sc.busy:
                self.sidecars.pop(identity, None)
            return
        if t not in ("progress", "result", "failed", "need"):
            return
        jid = msg["job"]
        if jid in sc.stale and t in ("result", "failed"):
            sc.stale.discard(jid)  # a job given up on (lease) has ended: the slot is free again
            return
        job = r._jobs.get(jid)
        if job is None or job.sidecar != identity or job.attempt != msg["attempt"] or job.state != "running":
            return  # a stale answer (an earlier attempt, a job already requeued): ignored
        batch = r._batches[job.batch]
        if t == "progress":
            job.deadline = time.monotonic() + self.config.lease
            r.job_progress(job, msg["stage"])
            return
        if t == "need":
            if sc.start_only and msg["mem"] > START_JOB_MEMORY:
                job.mem = msg["mem"]  # too big to run beside the router: a sidecar takes it
                ok = False
            else:
                ok = r.job_need(job, msg["mem"])
            if not ok:  # back to the queue, to wait until it fits; the sidecar drops it
                self._release(job, sc)
                r.job_requeue(job)
            self.send(identity, "grant", job=jid, attempt=msg["attempt"], ok=ok)
            return
        self._release(job, sc)
        sc.jobs_done += 1
        if t == "result":
            if job.inline:
                if not msg.bulk:
                    r.job_failed(job, ProtocolError("inline result without its image frame",
                                                    path=job.input, stage="protocol"), retry=False)
                    return
                write_back(r, job, batch, self._modes.pop(job.id, None), msg["result"], msg.bulk[0])
                return
            r.job_done(job, msg["result"])
            return
        err = protocol.unpack_error(msg["error"])
        if err.stage == "dispatch":  # the sidecar was full or recycling: not the job's fault
            sc.retiring = True
            r.job_requeue(job)
            return
        r.job_failed(job, err)


    def _release(self, job: Job, sc: SidecarRecord | None) -> None:
        if sc is not None:
            sc.busy.discard(job.id)
            if not sc.busy and not sc.stale:
                sc.last_idle = time.monotonic()
                if sc.retiring:
                    self.sidecars.pop(sc.identity, None)
        self.r.release_memory(job)
        job.sidecar = None

    # -- placement -----------------------------------------------------------------------

    def free_slots(self) -> list[SidecarRecord]:
        """Sidecars with a free slot, idle ones first, least recently used first (the
        in-process worker covering the pool's start last)."""
        free = [s for s in self.sidecars.values() if not s.retiring and self.has_room(s)
                and (not s.start_only or self.pool.covering)]
        free.sort(key=lambda s: (s.start_only, len(s.busy) > 0, s.last_idle))
        return free

    @staticmethod
    def small_jobs_only(sc: SidecarRecord) -> int | None:
        """The memory estimate above which ``sc`` hands a job back (None: any job).

        The dispatcher offers such a worker the smallest first attempts only.
        """
        return START_JOB_MEMORY if sc.start_only else None

    def degrade(self) -> None:
        """The in-process worker now takes every job (no pool)."""
        for sc in self.sidecars.values():
            sc.start_only = False

    def has_room(self, sc: SidecarRecord) -> bool:
        return len(sc.busy) + len(sc.stale) < sc.slots and sc.identity in self.sidecars

    @staticmethod
    def name_of(sc: SidecarRecord) -> str:
        return sc.name

    def start(self, job: Job, batch: Batch, sc: SidecarRecord, now: float) -> bool:
        """Send ``job`` to ``sc`` (an inline one once its bytes are read, off this thread)."""
        job.sidecar = sc.identity
        job.started = now
        job.deadline = now + self.config.lease
        job.inline = sc.inline
        sc.busy.add(job.id)
        fields = dict(job=job.id, attempt=job.attempt, lease_ms=int(self.config.lease * 1000),
                      in_place=batch.in_place, settings=batch.settings, inline=sc.inline,
                      mem=min(job.reserved, START_JOB_MEMORY) if sc.start_only else job.reserved,
                      known=job.known, force=bool(batch.options.get("force")),
                      dry_run=bool(batch.options.get("dry_run")))
        if not sc.inline:
            self.send(sc.identity, "job", input=job.input, output=job.output, expect=job.expect,
                      outputs=job.outputs, **fields)
            return True
        limit = int(batch.settings.get("max_input_bytes") or 256 * 1024 * 1024)
        attempt = job.attempt
        self.r._offload.submit(read_inline, job.input, limit, job.expect,
                               then=lambda value, err: self._read(job, attempt, sc, fields, value, err))
        return True

    def _read(self, job: Job, attempt: int, sc: SidecarRecord, fields: dict, value: Any,
              err: BaseException | None) -> None:
        if job.state != "running" or job.attempt != attempt or job.sidecar != sc.identity:
            return  # cancelled, lost or requeued meanwhile
        if err is not None:
            self._release(job, sc)
            if isinstance(err, PyimgoptError):
                self.r.job_failed(job, err, retry=False)
                return
            raise err
        data, mode = value
        self._modes[job.id] = mode
        self.send(sc.identity, "job", bulk=[data], input=None, output=None, expect=None, outputs=None,
                  **fields)

    def abort(self, job: Job) -> None:
        """Ask the sidecar running ``job`` to stop it (nothing half-written remains)."""
        if job.sidecar is not None:
            self.send(job.sidecar, "abort", job=job.id)

    def describe(self) -> dict:
        """The executor's part of ``status``."""
        return {
            "sidecars": [
                {"name": s.name, "pid": s.pid, "slots": s.slots, "busy": len(s.busy), "rss": s.rss,
                 "jobs_done": s.jobs_done, "local": s.local, "pool": s.pool}
                for s in self.sidecars.values() if not s.start_only
            ],
            # the in-process worker while it covers the pool's start (not a sidecar)
            "start_worker": next(({"busy": len(s.busy), "jobs_done": s.jobs_done}
                                  for s in self.sidecars.values() if s.start_only), None),
            "pool_pids": sorted(self.pool.procs),
            "degraded": self.pool.degraded_reason,
        }

    def metrics_rows(self) -> list[dict]:
        return [{"name": sc.name, "rss": sc.rss} for sc in self.sidecars.values()]

    def start_pool(self) -> None:
        """Called once the router is set up: degrade at once when no pool is wanted;
        otherwise start the pool and let the in-process worker cover its start."""
        if self.r._target == 0 and self.config.pool:
            self.pool.go_degraded("workers=0: processing in-process")
            return
        if self.config.pool and self.config.inprocess_start:
            self.pool.cover_start()
        self.pool.keep_up(time.monotonic(), self._pool_endpoint, 0)

    def shutdown(self) -> None:
        """Tell every sidecar to stop, wait for the pool, stop the in-process worker."""
        for sc in list(self.sidecars.values()):
            self.send(sc.identity, "shutdown", reason="router stopping")
        self.pool.shutdown()
