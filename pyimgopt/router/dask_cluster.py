"""The Dask executor's link to its cluster: the scheduler connection and the workers' shape.

Owns, as :class:`ClusterLink` (mixed into :class:`.dask_executor.DaskExecutor`),
reconnecting to a scheduler that went away (off the router's thread, every
:data:`RECONNECT_EVERY` seconds; nothing is dispatched meanwhile), the
cluster's shape as the scheduler reports it once a second (workers, their
threads, their ``MEMORY`` resource and memory limits, which become the
router's memory budget), and what a lost worker leaves behind: the jobs in
flight when it vanished are *suspects*, swept of temporary files when they
end, and path jobs that ended in the last :data:`RECENT` seconds are swept at
once (Dask may have rerun them elsewhere before the loss was seen); what a
task asks of a worker's ``MEMORY`` (:func:`memory_request`); and the
executor's part of the router's ``status``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ..files import clean_after_lost_writer
from ..logs import event
from .model import Job

__all__ = ["ClusterLink", "MEMORY_RESOURCE", "RECENT", "RECONNECT_EVERY", "memory_request"]

#: A worker's loss is seen within this many seconds (the cluster is looked at
#: once a second): path jobs that ended this recently are swept when it is.
RECENT = 10.0

#: Seconds between two attempts to reach a scheduler that went away.
RECONNECT_EVERY = 5.0

#: The worker resource a job's memory estimate is asked for, when every worker declares it
#: (``dask worker --resources MEMORY=8e9``).
MEMORY_RESOURCE = "MEMORY"


def memory_request(estimate: float, largest: float) -> float:
    """What a task asks of a worker's ``MEMORY`` resource for a job estimated at ``estimate``
    bytes, when the largest worker declares ``largest``: the estimate rounded up to a power of
    two (so the tasks of one turn fall into a few requests, one graph each: :meth:`.dask_executor.DaskExecutor._flush`),
    capped at ``largest``. Never less than the estimate, except for a job estimated larger
    than every worker: it asks for the largest, and so gets that worker to itself instead of
    waiting forever for a worker Dask will never find."""
    if estimate >= largest:
        return float(largest)
    need = max(1, int(-(-estimate // 1)))  # whole bytes, rounded up
    return min(float(1 << (need - 1).bit_length()), largest)


class ClusterLink:
    """The scheduler connection and the cluster's shape (a mixin of DaskExecutor)."""

    # -- the scheduler going away ---------------------------------------------------------

    def _reconnect(self) -> None:
        """Dask's client gave up on a scheduler that went away: connect anew, off this thread."""
        import distributed

        self._connecting = True
        self._workers, self._threads = {}, 0
        old, address = self.client, self.address

        def connect() -> Any:
            try:
                old.close(timeout=2)
            except Exception:
                pass
            return distributed.Client(address, timeout=10, set_as_default=False)

        self.r._offload.submit(connect, then=self._connected)

    def _connected(self, client: Any, err: BaseException | None) -> None:
        self._connecting = False
        if err is not None:
            self._next_connect = time.monotonic() + RECONNECT_EVERY
            event(self.r._log, "dask_scheduler_unreachable", logging.WARNING, executor=self.endpoint,
                  reason=f"{type(err).__name__}: {err}")
            return
        if self.client is None:  # stopped meanwhile
            client.close(timeout=2)
            return
        self.client = client
        self._subscribe(client)
        event(self.r._log, "dask_scheduler_reconnected", executor=self.endpoint)
        self._ask_info()

    # -- the cluster's shape -------------------------------------------------------------

    def _ask_info(self) -> None:
        if self._asking or self.client is None:
            return
        self._asking = True
        self.r._offload.submit(self.client.scheduler_info, then=self._on_info)

    def _on_info(self, info: Any, err: BaseException | None) -> None:
        self._asking = False
        if err is not None or not isinstance(info, dict):
            if self._threads:
                event(self.r._log, "dask_scheduler_unreachable", logging.WARNING, executor=self.endpoint,
                      reason=str(err))
            self._workers, self._threads = {}, 0
            return
        workers = info.get("workers") or {}
        gone = set(self._workers) - set(workers)
        if gone:
            # Dask reruns what they held elsewhere. What was in flight is swept when it ends;
            # what ended since we last looked (maybe rerun elsewhere meanwhile) is swept now.
            self._suspects.update(self.futures)
            horizon = time.monotonic() - RECENT
            for when, jid in self._ended:
                if when >= horizon and jid not in self.futures:
                    self._sweep(jid)
            self.r.counters["sidecars_lost"] += len(gone)
            for _ in gone:
                self.r.metrics.sidecar_lost()
            event(self.r._log, "dask_workers_lost", logging.WARNING, workers=sorted(gone),
                  in_flight=len(self.futures))
        self._workers = workers
        self._threads = sum(int(w.get("nthreads") or 0) for w in workers.values())
        self._mem_resource = bool(workers) and all(
            MEMORY_RESOURCE in (w.get("resources") or {}) for w in workers.values())
        self._mem_largest = max((float((w.get("resources") or {}).get(MEMORY_RESOURCE) or 0)
                                 for w in workers.values()), default=0.0)
        limits = [int(w.get("memory_limit") or 0) for w in workers.values()]
        if limits and all(limits):
            # memory lives on the workers, not here: admission follows their limits
            self.r._budget = sum(limits)

    def _swept_if_suspect(self, job: Job) -> None:
        if job.id in self._suspects:
            self._suspects.discard(job.id)
            self._sweep(job.id)  # a worker that died may have been writing it

    def _sweep(self, jid: str) -> None:
        """Remove what a dead worker may have left half-written for job ``jid`` (path mode)."""
        job = self.r._jobs.get(jid)
        batch = None if job is None else self.r._batches.get(job.batch)
        if not self.shared_files or batch is None:
            return
        target = job.input if batch.in_place else job.output
        if target and clean_after_lost_writer(target, batch.settings.get("format") == "auto"):
            event(self.r._log, "dask_temps_swept", job=jid)

    # -- status -----------------------------------------------------------------------------

    def describe(self) -> dict:
        """The executor's part of ``status``: the cluster's workers and what is in flight."""
        return {
            "executor": self.endpoint,
            "sidecars": [
                {"name": addr, "pid": None, "slots": int(w.get("nthreads") or 0), "busy": 0,
                 "rss": int((w.get("metrics") or {}).get("memory") or 0), "jobs_done": 0,
                 "local": False, "pool": False}
                for addr, w in sorted(self._workers.items())
            ],
            "dask": {"workers": len(self._workers), "threads": self._threads, "in_flight": len(self.futures),
                     "files": "shared" if self.shared_files else "bytes", "dashboard": self._dashboard},
            "pool_pids": [],
            "degraded": None,
        }

    def metrics_rows(self) -> list[dict]:
        return []
