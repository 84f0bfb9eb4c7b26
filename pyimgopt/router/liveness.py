"""Liveness of the router's ZeroMQ sidecars, their losses, and the pool's supervision.

Liveness tells "busy on a long job" from "dead": a pool sidecar is alive
while it heartbeats *or* its CPU time advances (read from ``/proc``: a codec
that holds the GIL stops the heartbeat thread, not the CPU); a remote one
while it heartbeats or, when busy, while its connection answers ZeroMQ's own
heartbeats (answered by libzmq's I/O thread, which needs no GIL). A
stopped or hung sidecar does neither and is lost after ``liveness``; a job
is also bounded by its lease. A lost remote sidecar that speaks again is
asked to register anew.

Owns that decision (:meth:`SidecarLiveness.tick`: heartbeats out, the
``/proc`` look at a pool sidecar's CPU time, reaping the pool, leases, the
pool's size) and what a loss does (:meth:`SidecarLiveness._lose`: kill it
if ours, remove its half-written files, requeue or poison its jobs). A mixin
of :class:`~.sidecars.SidecarExecutor`, on the router's thread only.
"""

from __future__ import annotations

import logging
import os

from ..errors import JobTimeoutError
from ..files import EXTENSIONS, remove_stale_temps
from ..logs import event
from .model import SidecarRecord
from .pool import proc_stat

__all__ = ["SidecarLiveness", "SUPERVISE_EVERY"]

#: Seconds between two rounds of supervision (reaping, liveness, leases, the
#: pool's size) between heartbeats: the router's loop turns once per message,
#: hundreds of times a second with small files; a round costs system calls.
SUPERVISE_EVERY = 0.05


class SidecarLiveness:
    """Liveness, losses and supervision (mixed into SidecarExecutor)."""

    # -- losses --------------------------------------------------------------------------

    def _lose(self, sc: SidecarRecord, why: str, *, clean: bool = False, exited: bool = False) -> None:
        """A sidecar died or went silent: kill it if ours, requeue or poison its jobs.

        ``clean``: it said goodbye (recycling) and exited 0 — a job sent to it
        meanwhile never started, so it goes back to the queue as it was.
        ``exited``: it is a pool process already reaped (dead for sure).
        """
        r = self.r
        if self.sidecars.get(sc.identity) is sc:
            del self.sidecars[sc.identity]
        if not clean:
            r.counters["sidecars_lost"] += 1
            r.metrics.sidecar_lost()
        # With no job on it, a lost sidecar costs nothing (e.g. a recycled one whose
        # goodbye was overtaken by its exit): information, not a warning.
        event(r._log, "sidecar_lost", logging.WARNING if sc.busy and not clean else logging.INFO,
              sidecar=sc.name, count=len(sc.busy), reason=why)
        dead = exited or (sc.pool and self.pool.kill(sc.pid))
        for jid in list(sc.busy):
            job = r._jobs[jid]
            self._release(job, None)
            self._modes.pop(job.id, None)
            if dead:  # its half-written files can go: nobody writes them any more
                batch = r._batches[job.batch]
                target = job.input if batch.in_place else job.output
                if target:
                    remove_stale_temps(target)
                    if batch.settings.get("format") == "auto":  # the writer may have renamed it
                        stem = os.path.splitext(target)[0]
                        for ext in EXTENSIONS.values():
                            remove_stale_temps(stem + ext)
            if clean:
                r.job_requeue(job)
            else:
                r.job_lost(job, why)

    # -- liveness and supervision --------------------------------------------------------

    def tick(self, now: float, beat: bool) -> None:
        """Heartbeats out (when ``beat``); liveness, leases and pool supervision on a beat
        and otherwise at most every :data:`SUPERVISE_EVERY` seconds."""
        r = self.r
        cfg = self.config
        if beat:
            for sc in list(self.sidecars.values()):
                self.send(sc.identity, "heartbeat", rss=0, busy=sorted(sc.busy))
                if sc.pool:
                    self._cpu_progress(sc, now)
            for ident in [i for i, t in self._asked.items() if now - t > 60]:
                del self._asked[ident]
        elif now - self._supervised < SUPERVISE_EVERY:
            return  # the loop turns once per message: supervision needs no such pace
        self._supervised = now
        for pid, code in self.pool.reap(now):
            for sc in list(self.sidecars.values()):
                if sc.pid == pid and sc.pool:  # reaped: dead for sure
                    self._lose(sc, f"sidecar {pid} exited with code {code}",
                               clean=sc.retiring and code == 0, exited=True)
        for sc in list(self.sidecars.values()):
            silent = now - sc.last_seen
            if not sc.local and silent > cfg.liveness:
                # a busy remote sidecar whose connection still answers ZeroMQ's
                # heartbeats is working (a native call holds its GIL): the lease bounds it
                if not (sc.busy and sc.fd is not None):
                    self._lose(sc, f"sidecar {sc.name} silent for {silent:.1f} s")
                    continue
            for jid in list(sc.busy):
                job = r._jobs[jid]
                if now > job.deadline:
                    if sc.local:  # a thread cannot be killed: its slot stays taken until it ends
                        self._release(job, sc)
                        sc.stale.add(jid)
                        r.job_failed(job, JobTimeoutError("job lease expired", path=job.input), retry=False)
                    else:
                        self._lose(sc, f"job lease expired on {sc.name}")
                    break
        live = sum(1 for sc in self.sidecars.values() if sc.pool)
        self.pool.keep_up(now, self._pool_endpoint, live)
        if not self.pool.covering:
            for sc in [s for s in self.sidecars.values() if s.start_only and not s.busy and not s.stale]:
                self.send(sc.identity, "shutdown", reason="the pool is up")  # its thread ends
                del self.sidecars[sc.identity]

    def _cpu_progress(self, sc: SidecarRecord, now: float) -> None:
        """A pool sidecar whose CPU time advanced is alive, heartbeat or not."""
        st = proc_stat(sc.pid)
        if st is None:
            return
        state, cpu = st
        if state not in ("T", "t", "Z", "X") and cpu > sc.cpu >= 0:
            sc.last_seen = max(sc.last_seen, now)
        sc.cpu = cpu
