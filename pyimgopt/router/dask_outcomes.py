"""The Dask executor's outcomes: from a finished task to the router's ``job_*`` callbacks.

Owns, as :class:`Outcomes` (mixed into :class:`.dask_executor.DaskExecutor`),
what happens on the router's thread once a task ends: a finished task's
outcome is fetched from its worker off that thread, up to
:data:`FETCH_BATCH` at a time and never waited on longer than
:data:`FETCH_TIMEOUT` (:func:`_gather`), under a lease of its own (state
``writing``); a task that raised is sorted into a lost worker (run again), a
task Dask gave up on (``KilledWorker``: poison) or a cluster that cannot run
our task at all (failed, not retried); a cancelled task or a lost scheduler
puts the job back in the queue. The outcome itself ends the job: by path as
the worker said, by bytes through :func:`.inline.write_back` (the router
writes).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from .. import protocol
from ..errors import InternalError, ProtocolError
from ..logs import event
from .inline import write_back
from .model import Batch, Job

__all__ = ["Outcomes", "FETCH_TIMEOUT", "FETCH_BATCH"]

#: Seconds to fetch a finished task's outcome from its worker.
FETCH_TIMEOUT = 60.0

#: Outcomes fetched from the workers in one call, at most.
FETCH_BATCH = 256


def _gather(client: Any, futures: list) -> list[tuple[bool, Any]]:
    """The outcomes of finished tasks, ``(True, value)`` or ``(False, exception)`` each
    (one call for all; one call each when any of them fails). Waits about
    :data:`FETCH_TIMEOUT` seconds at most: a result whose worker died is recomputed by
    Dask, which waits forever when no worker can run it — that one comes back as
    ``TimeoutError``. Blocks: a worker thread's job."""
    import distributed

    deadline = time.monotonic() + FETCH_TIMEOUT
    try:
        # Client.gather has no time-out: wait (bounded) until all are here, then take them
        distributed.wait(futures, timeout=FETCH_TIMEOUT)
        return [(True, v) for v in client.gather(futures, errors="raise", direct=False)]
    except Exception:
        out: list[tuple[bool, Any]] = []
        for f in futures:
            try:
                out.append((True, f.result(max(0.05, deadline - time.monotonic()))))
            except Exception as exc:
                out.append((False, exc))
        return out


class Outcomes:
    """Finished tasks to job outcomes (a mixin of DaskExecutor)."""

    def _finished(self, job: Job, send: int, fut: Any) -> None:
        """The task of ``job``'s send number ``send`` ended (on the router's thread): hand its
        outcome to the router once, unless that send is over."""
        if self.futures.get(job.id) is not fut or not self._current(job, send):
            return  # cancelled, timed out or requeued meanwhile: already accounted for
        self._release(job)
        batch = self.r._batches[job.batch]
        self._swept_if_suspect(job)
        status = fut.status
        if status == "finished":
            # the outcome lives on the worker: fetched off this thread, many at a time,
            # under a lease of its own (a fetch may wait on a worker that died)
            self._await(job, fut)
            self._to_fetch.append((job, batch, fut))
            if not self._fetching:
                self._fetch_some()
            return
        if status == "cancelled" or self.client is None or self.client.status != "running":
            # the scheduler forgot it (restarted, or we lost it): not the job's fault
            event(self.r._log, "dask_task_lost", logging.WARNING, job=job.id, status=status)
            self._modes.pop(job.id, None)
            self.r.job_requeue(job)
            return
        # the task raised: what it raised is fetched off this thread
        self._await(job, fut)
        self.r._offload.submit(fut.exception, FETCH_TIMEOUT,
                               then=lambda value, err: self._raised(job, value or err))

    def _await(self, job: Job, fut: Any) -> None:
        """``job``'s task finished: its outcome is fetched next (state ``writing``); the
        lease starts again, and cancel or the lease may still end the job meanwhile."""
        job.state = "writing"
        job.deadline = time.monotonic() + self.config.lease
        self._awaiting[job.id] = (job, fut)

    def _raised(self, job: Job, exc: BaseException | None) -> None:
        """A task ended in an exception: Dask gave up on a worker-killing file, or the
        cluster could not run our task at all (run_job itself never raises)."""
        if job.state != "writing" or self._awaiting.pop(job.id, None) is None:
            return
        job.state = "running"
        name = type(exc).__name__
        if name == "KilledWorker":
            self._lost(job, f"{name}: {exc}", killed=True)
        elif exc is None or isinstance(exc, (OSError, TimeoutError)) or name.startswith("Comm"):
            self._lost(job, f"{name}: {exc}")  # the connection to its worker failed: run it again
        else:  # e.g. pyimgopt missing or too old on the worker: every retry would fail the same way
            self.r.job_failed(job, InternalError(
                f"the Dask task failed on its worker ({name}: {exc}); do the workers run the "
                "same pyimgopt as the router?", path=job.input, stage="executor"), retry=False)

    def _fetch_some(self) -> None:
        items, self._to_fetch = self._to_fetch[:FETCH_BATCH], self._to_fetch[FETCH_BATCH:]
        self._fetching = True
        client = self.client
        self.r._offload.submit(_gather, client, [f for _, _, f in items],
                               then=lambda values, err: self._gathered(items, values, err))

    def _gathered(self, items: list, values: Any, err: BaseException | None) -> None:
        self._fetching = False
        for i, (job, batch, _) in enumerate(items):
            if err is not None:
                self._fetched(job, batch, None, err)
            else:
                ok, value = values[i]
                self._fetched(job, batch, value if ok else None, None if ok else value)
        if self._to_fetch:
            self._fetch_some()

    def _fetched(self, job: Job, batch: Batch, reply: Any, err: BaseException | None) -> None:
        if job.state != "writing" or self._awaiting.pop(job.id, None) is None:
            return  # cancelled or timed out while its outcome was being fetched
        job.state = "running"
        if err is not None:  # its worker died before we had the answer: run it again
            self._lost(job, f"result lost: {type(err).__name__}: {err}")
            return
        self._outcome(job, batch, reply)

    def _lost(self, job: Job, why: str, *, killed: bool = False) -> None:
        self._modes.pop(job.id, None)
        if killed:  # Dask's scheduler saw it take down worker after worker: poison
            job.kills = max(job.kills, self.config.poison_kills - 1)
        self.r.job_lost(job, f"dask: {why}")

    def _outcome(self, job: Job, batch: Batch, reply: Any) -> None:
        if not isinstance(reply, dict) or not ("result" in reply or "error" in reply):
            self.r.job_failed(job, ProtocolError("a Dask task answered something that is not a job "
                                                 "outcome", path=job.input, stage="protocol"), retry=False)
            return
        mode = self._modes.pop(job.id, None)
        if "error" in reply:
            self.r.job_failed(job, protocol.unpack_error(reply["error"]))
            return
        if self.shared_files:
            self.r.job_done(job, reply["result"])
            return
        data = reply.get("data")
        if not isinstance(data, bytes):
            self.r.job_failed(job, ProtocolError("bytes result without its image", path=job.input,
                                                 stage="protocol"), retry=False)
            return
        write_back(self.r, job, batch, mode, reply["result"], data)
