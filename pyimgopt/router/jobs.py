"""The life of a job in the router: dispatch, results, failures, retries, the end.

Owns what happens to a job once it exists: dispatch order (from the queue)
with memory admission (a first reservation, then what the sidecar's header
estimate asks for), the attempt count, retries with backoff, poison
detection, results and failures with their journal rows and events, the
progress of a batch and its end, and forgetting finished batches. The
executor calls back here (``job_progress``, ``job_need``, ``job_done``,
``job_failed``, ``job_requeue``, ``job_lost``, ``release_memory``). A mixin
of :class:`~.broker.Router`, on the router's thread only.
"""

from __future__ import annotations

import logging
import time

from .. import protocol
from ..errors import CancelledError, PyimgoptError, WorkerLostError
from ..logs import event
from ..manifest import record_of
from .model import Batch, Job
from .resources import available_memory

__all__ = ["JobLife", "BASE_GRANT"]

#: Reserved for a job whose memory need is not known yet (its sidecar
#: estimates it from the header and asks for more when it needs more).
BASE_GRANT = 32 * 1024 * 1024


class JobLife:
    """Dispatch and the callbacks of the executor (mixed into Router)."""

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
        if self._mw is not None and batch.key is not None and not batch.options.get("dry_run"):
            rec = record_of(result, batch.in_place)
            if rec is not None:
                self._mw.put(batch.key, rec)
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

    def _eligible(self, now: float, small: int | None = None):
        def check(jid: str, bid: str) -> bool:
            batch = self._batches[bid]
            job = self._jobs[jid]
            return not batch.paused and job.not_before <= now
        if small is None:
            return check

        def first_and_small(jid: str, bid: str) -> bool:
            # only what never ran (a file that killed a sidecar never runs in this
            # process) and is not known to be bigger than ``small``
            job = self._jobs[jid]
            return (job.attempt == 0 and job.kills == 0 and (job.mem is None or job.mem <= small)
                    and check(jid, bid))
        return first_and_small

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
            # optional on an executor: only the local sidecars' in-process start worker takes small jobs
            small_only = getattr(self._executor, "small_jobs_only", None)
            small = None if small_only is None else small_only(slot)
            while self._executor.has_room(slot):
                job = None
                for jid in self._queue.candidates(self._eligible(now, small), smallest=small is not None):
                    cand = self._jobs[jid]
                    grant = self._first_grant(cand)
                    running = self._mem_in_use > 0
                    if running and (pressure or self._mem_in_use + grant > self._budget):
                        return  # hold back: it does not fit while others run
                    job = cand
                    break
                if job is None:
                    break
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
