"""The sidecar executor: where the router's jobs run — ZeroMQ sidecars.

Owns the sidecar endpoint's sockets, the registry of sidecars (local pool
processes, remote sidecars, the degraded in-process worker), their
liveness, credit-based placement (never more jobs than a sidecar's
advertised slots; least-recently-used idle sidecar first), the messages to
and from sidecars, inline jobs for sidecars that cannot see our files, and
pool supervision (spawn, respawn, recycle, degrade). The router decides
*what* runs (:mod:`.broker`); this executor decides *where*, and reports
progress, results, failures and losses back through the router's
``job_*`` callbacks.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import TYPE_CHECKING, Any

import zmq

from .. import protocol
from ..errors import (
    JobTimeoutError,
    ProtocolError,
    PyimgoptError,
)
from ..logs import event
from ..pipeline.encode import EXTENSIONS
from ..pipeline.write import atomic_write, expected_parent, read_input, remove_stale_temps
from ..auth import make_server
from .model import Batch, Job, SidecarRecord

if TYPE_CHECKING:
    from .broker import Router

__all__ = ["SidecarExecutor"]


def _is_net(ep: str) -> bool:
    return not ep.startswith(("ipc://", "inproc://"))


class SidecarExecutor:
    """Runs the router's jobs on ZeroMQ sidecars (a local pool and remote ones)."""

    def __init__(self, router: Router) -> None:
        self.r = router
        self.config = router.config
        self.sidecars: dict[bytes, SidecarRecord] = {}
        self.procs: dict[int, subprocess.Popen] = {}
        self._spawned_at: dict[int, float] = {}
        self._degraded: threading.Thread | None = None
        self.degraded_reason: str | None = None
        self._inproc_backend = f"inproc://pyimgopt-sidecars-{router._uid}"
        self._back = self._local_back = None
        self._private_dir: str | None = None
        self.endpoint = router.sidecar_endpoint
        self._sidecar_keys: frozenset[str] = frozenset()

    # -- set-up and sockets ------------------------------------------------------------

    def setup(self, sidecar_keys: frozenset[str]) -> list[zmq.Socket]:
        """Bind the sidecar endpoint (and a private one for the pool); return sockets to poll."""
        cfg = self.config
        ctx = self.r._ctx
        self._sidecar_keys = sidecar_keys
        self._back = ctx.socket(zmq.ROUTER)
        protocol.configure_socket(self._back)
        self._back.setsockopt(zmq.ROUTER_HANDOVER, 1)
        if cfg.curve_secret is not None and _is_net(self.endpoint):
            make_server(self._back, cfg.curve_secret)
        self._back.bind(self.endpoint)
        # The local pool and the in-process worker never need keys: when the
        # sidecar endpoint is a network one, they get a private ipc socket.
        self._local_back = self._back
        self._pool_endpoint = self.endpoint
        if _is_net(self.endpoint):
            self._private_dir = tempfile.mkdtemp(prefix="pyimgopt-pool-")
            os.chmod(self._private_dir, 0o700)
            self._local_back = ctx.socket(zmq.ROUTER)
            protocol.configure_socket(self._local_back)
            self._pool_endpoint = f"ipc://{self._private_dir}/sidecars"
            self._local_back.bind(self._pool_endpoint)
        self._local_back.bind(self._inproc_backend)
        if self.endpoint.endswith(":0"):
            self.endpoint = self._back.getsockopt_string(zmq.LAST_ENDPOINT)
        self._started = time.monotonic()
        return [self._back] + ([self._local_back] if self._local_back is not self._back else [])

    def close_sockets(self) -> None:
        """Close whatever :meth:`setup` opened (also after a failed set-up)."""
        for sock in {self._back, self._local_back} - {None}:
            sock.close(0)
        if self._private_dir:
            import shutil

            shutil.rmtree(self._private_dir, ignore_errors=True)
            self._private_dir = None

    def on_readable(self, sock: zmq.Socket) -> None:
        """Handle what arrived on one of the sockets :meth:`setup` returned."""
        self.r._drain(sock, lambda identity, msg, user: self._on_sidecar(identity, msg, user, sock),
                      client=False)

    def send(self, identity: bytes, msg_type: str, **fields: Any) -> None:
        sc = self.sidecars.get(identity)
        sock = sc.sock if sc is not None and sc.sock is not None else self._back
        try:
            sock.send_multipart([identity, *protocol.encode(msg_type, **fields)], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

    # -- messages from sidecars ------------------------------------------------------

    def _on_sidecar(self, identity: bytes, msg: protocol.Message, user: str | None,
                    sock: zmq.Socket) -> None:
        r = self.r
        t = msg.type
        if user is not None and user not in self._sidecar_keys:
            return  # a client's key on the sidecar endpoint: not a sidecar
        sc = self.sidecars.get(identity)
        if t == "ready":
            local = msg["pid"] == os.getpid()
            self.sidecars[identity] = SidecarRecord(identity, max(1, msg["slots"]), msg["pid"], msg["name"],
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
            r.counters["recycles"] += 1
            r.metrics.recycle()
            event(r._log, "sidecar_recycled", sidecar=sc.name)
            if not sc.busy:
                self.sidecars.pop(identity, None)
            return
        job = r._jobs.get(msg["job"]) if t in ("progress", "result", "failed") else None
        if job is None or job.sidecar != identity or job.attempt != msg["attempt"] or job.state != "running":
            return  # a stale answer (an earlier attempt, a job already requeued): ignored
        batch = r._batches[job.batch]
        if t == "progress":
            job.deadline = time.monotonic() + self.config.lease
            r.job_progress(job, msg["stage"])
            return
        self._release(job, sc)
        sc.jobs_done += 1
        if t == "result":
            result = msg["result"]
            if job.inline:
                try:
                    result = self._write_inline(job, batch, result, msg.bulk)
                except PyimgoptError as exc:
                    r.job_failed(job, exc)
                    return
            r.job_done(job, result)
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
            if not sc.busy:
                sc.last_idle = time.monotonic()
                if sc.retiring:
                    self.sidecars.pop(sc.identity, None)
        self.r._mem_in_use -= job.mem or 0
        job.sidecar = None

    # -- inline jobs (sidecars that cannot see our files) -----------------------------

    def _read_inline(self, job: Job, batch: Batch) -> bytes:
        """The input bytes for a sidecar that cannot see our files (checked as a local read)."""
        limit = int(batch.settings.get("max_input_bytes") or 256 * 1024 * 1024)
        want = None if job.expect is None else (job.expect["dev"], job.expect["ino"])
        data, st = read_input(job.input, limit, expect=want)
        job.mode = st.st_mode
        return data

    def _write_inline(self, job: Job, batch: Batch, result: dict, bulk: tuple) -> dict:
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

    # -- losses --------------------------------------------------------------------------

    def _lose(self, sc: SidecarRecord, why: str) -> None:
        """A sidecar died or went silent: kill it if ours, requeue or poison its jobs."""
        r = self.r
        self.sidecars.pop(sc.identity, None)
        r.counters["sidecars_lost"] += 1
        r.metrics.sidecar_lost()
        # With no job on it, a lost sidecar costs nothing (e.g. a recycled one whose
        # goodbye was overtaken by its exit): information, not a warning.
        event(r._log, "sidecar_lost", logging.WARNING if sc.busy else logging.INFO,
              sidecar=sc.name, count=len(sc.busy), reason=why)
        proc = self.procs.get(sc.pid)
        if proc is not None and proc.poll() is None:
            proc.kill()
        if proc is not None:
            try:
                proc.wait(5)  # dead for sure before its half-written files are removed
            except subprocess.TimeoutExpired:
                pass
        for jid in list(sc.busy):
            job = r._jobs[jid]
            self._release(job, None)
            if proc is not None and proc.poll() is not None:
                batch = r._batches[job.batch]
                target = job.input if batch.in_place else job.output
                if target:
                    remove_stale_temps(target)
                    if batch.settings.get("format") == "auto":  # the writer may have renamed it
                        stem = os.path.splitext(target)[0]
                        for ext in EXTENSIONS.values():
                            remove_stale_temps(stem + ext)
            r.job_lost(job, why)

    # -- pool supervision ----------------------------------------------------------------

    def _spawn(self) -> None:
        r = self.r
        cmd = [sys.executable, "-m", "pyimgopt_sidecar", "--connect", self._pool_endpoint,
               "--heartbeat", str(self.config.heartbeat), "--parent", str(os.getpid())]
        if self.config.max_jobs_per_sidecar:
            cmd += ["--max-jobs", str(self.config.max_jobs_per_sidecar)]
        if self.config.max_rss:
            cmd += ["--max-rss-mb", str(max(1, self.config.max_rss // (1024 * 1024)))]
        if self.config.sidecar_address_space:
            cmd += ["--max-address-space-mb", str(self.config.sidecar_address_space // (1024 * 1024))]
        if self.config.cpu_per_job:
            cmd += ["--cpu-per-job", str(self.config.cpu_per_job)]
        cmd += [str(a) for a in self.config.sidecar_args]
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
            self.go_degraded(f"cannot start sidecars ({exc}); processing in-process")
            return
        self.procs[proc.pid] = proc
        self._spawned_at[proc.pid] = time.monotonic()
        r.counters["spawned"] += 1
        event(r._log, "sidecar_spawned", count=proc.pid)

    def go_degraded(self, reason: str) -> None:
        """Run the sidecar job loop in a thread of this process (no pool)."""
        if self._degraded is not None:
            return
        from pyimgopt_sidecar.worker import Sidecar  # the same job loop, in a thread, over inproc

        self.degraded_reason = reason
        worker = Sidecar(self._inproc_backend, context=self.r._ctx, name="in-process",
                         heartbeat=self.config.heartbeat, router_timeout=1e9)
        self._degraded_worker = worker
        self._degraded = threading.Thread(target=worker.run, name="pyimgopt-inprocess", daemon=True)
        self._degraded.start()
        self.r.announce_degraded(reason)

    def start_pool(self) -> None:
        """Called once the router is set up: degrade at once when no pool is wanted."""
        if self.r._target == 0 and self.config.pool:
            self.go_degraded("workers=0: processing in-process")

    def tick(self, now: float, beat: bool) -> None:
        """Heartbeats out (when ``beat``), liveness, leases and pool supervision."""
        r = self.r
        cfg = self.config
        if beat:
            for sc in list(self.sidecars.values()):
                self.send(sc.identity, "heartbeat", rss=0, busy=sorted(sc.busy))
        for pid, proc in list(self.procs.items()):
            if proc.poll() is not None:
                for sc in list(self.sidecars.values()):
                    if sc.pid == pid:  # _lose needs the process to clean up after it
                        self._lose(sc, f"sidecar {pid} exited with code {proc.returncode}")
                del self.procs[pid]
                self._spawned_at.pop(pid, None)
        for sc in list(self.sidecars.values()):
            if not sc.local and now - sc.last_seen > cfg.liveness:
                self._lose(sc, f"sidecar {sc.name} silent for {now - sc.last_seen:.1f} s")
                continue
            for jid in list(sc.busy):
                job = r._jobs[jid]
                if now > job.deadline:
                    if sc.local:
                        self._release(job, sc)
                        r.job_failed(job, JobTimeoutError("job lease expired", path=job.input),
                                     retry=False)
                    else:
                        self._lose(sc, f"job lease expired on {sc.name}")
                    break
        if r._target > 0 and self._degraded is None and cfg.pool:
            live = len([p for p in self.procs.values() if p.poll() is None])
            for _ in range(r._target - live):
                self._spawn()
            # No sidecar ever came up: degrade rather than wait forever.
            if (not self.sidecars and r.counters["spawned"] >= 3 * r._target
                    and now - self._started > cfg.spawn_grace):
                self.go_degraded("no sidecar could start; processing in-process")

    # -- placement -----------------------------------------------------------------------

    def free_slots(self) -> list[SidecarRecord]:
        """Sidecars with a free slot, idle ones first, least recently used first."""
        free = [s for s in self.sidecars.values() if not s.retiring and len(s.busy) < s.slots]
        free.sort(key=lambda s: (len(s.busy) > 0, s.last_idle))
        return free

    def has_room(self, sc: SidecarRecord) -> bool:
        return len(sc.busy) < sc.slots and sc.identity in self.sidecars

    def start(self, job: Job, batch: Batch, sc: SidecarRecord, now: float) -> bool:
        """Send ``job`` to ``sc``; False when it ended at once (an inline read failed)."""
        r = self.r
        job.sidecar = sc.identity
        job.started = now
        job.deadline = now + self.config.lease
        sc.busy.add(job.id)
        r._mem_in_use += job.mem or 0
        bulk: list[bytes] = []
        job.inline = sc.inline
        if sc.inline:
            try:
                bulk = [self._read_inline(job, batch)]
            except PyimgoptError as exc:
                self._release(job, sc)
                r.job_failed(job, exc, retry=False)
                return False
        self.send(sc.identity, "job", bulk=bulk, job=job.id, attempt=job.attempt,
                  lease_ms=int(self.config.lease * 1000),
                  input=None if sc.inline else job.input,
                  output=None if sc.inline else job.output,
                  in_place=batch.in_place, settings=batch.settings,
                  inline=sc.inline, expect=None if sc.inline else job.expect)
        return True

    def abort(self, job: Job) -> None:
        """Ask the sidecar running ``job`` to stop it (nothing half-written remains)."""
        if job.sidecar is not None:
            self.send(job.sidecar, "abort", job=job.id)

    def describe(self) -> dict:
        """The executor's part of ``status``."""
        return {
            "sidecars": [
                {"name": s.name, "pid": s.pid, "slots": s.slots, "busy": len(s.busy), "rss": s.rss,
                 "jobs_done": s.jobs_done, "local": s.local}
                for s in self.sidecars.values()
            ],
            "pool_pids": sorted(self.procs),
            "degraded": self.degraded_reason,
        }

    def metrics_rows(self) -> list[dict]:
        return [{"name": sc.name, "rss": sc.rss} for sc in self.sidecars.values()]

    def shutdown(self) -> None:
        """Tell every sidecar to stop, wait for the pool, stop the in-process worker."""
        for sc in list(self.sidecars.values()):
            self.send(sc.identity, "shutdown", reason="router stopping")
        deadline = time.monotonic() + 5
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait(5)
        if self._degraded is not None:
            self._degraded.join(5)
        self.close_sockets()
