"""The Dask executor: where the router's jobs run — a Dask distributed cluster.

Owns the router's Dask client, the jobs in flight on the cluster (one Dask
task each, :func:`pyimgopt_sidecar.dask_task.run_job`), how many may be in
flight (twice the cluster's worker threads plus a little, so the router
keeps its priorities, pause and cancel for everything not yet sent), and the
hand-back of each task's outcome to the router's thread. By path when the
workers are declared to share the router's files (``files=shared``: the
worker opens the very file — device, inode — approved at submit and writes
under the approved folder, as a pool sidecar does); by bytes otherwise (the
router reads each input and writes each output itself, on its worker
threads, under its checks, as for remote sidecars: :mod:`.inline`).

Dask places and balances; the router decides what runs and keeps the
journal. Retries stay in the router (tasks are submitted with
``retries=0``); a worker that dies is rescheduled by Dask's scheduler within
its ``allowed-failures``, and a task Dask gives up on (``KilledWorker``)
comes back here as poison. A job whose worker may have died has its
temporary files swept (when it ends, or at once if it ended in the last
few seconds: Dask may have rerun it elsewhere before the loss was seen).
Each task tells the router when it starts (the lease starts then: a task
waiting behind others on its worker has up to twice the lease) and, by
path, its outcome as soon as it has it (Dask's event stream): a worker that
dies after a task finished loses nothing, and the router drops the task
at once, so Dask never reruns a job that is already done (an in-place
rerun would find its input replaced). Cancel is ``Future.cancel``; a task already running on a worker cannot be
interrupted by Dask, so in path mode it may still write its (complete,
atomic) output. When the scheduler is unreachable nothing is dispatched,
the jobs in flight go back to the queue (no attempt spent), and a new
connection is tried every few seconds. It never touches pixels.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import TYPE_CHECKING, Any

from .. import protocol
from ..errors import (
    CancelledError,
    InternalError,
    IOFailureError,
    JobTimeoutError,
    ProtocolError,
    PyimgoptError,
)
from ..files import clean_after_lost_writer
from ..logs import event
from .inline import read_inline, write_back
from .model import Batch, Job

if TYPE_CHECKING:
    from .broker import Router

__all__ = ["DaskExecutor", "PREFETCH"]

#: Tasks in flight: twice the cluster's threads plus this many (so a worker
#: never waits for the router between two jobs); what is not sent stays in
#: the router's queue, under its priorities, pause and cancel.
PREFETCH = 2

#: A worker's loss is seen within this many seconds (the cluster is looked at
#: once a second): path jobs that ended this recently are swept when it is.
RECENT = 10.0

#: Seconds between two attempts to reach a scheduler that went away.
RECONNECT_EVERY = 5.0

#: Seconds to fetch a finished task's outcome from its worker.
FETCH_TIMEOUT = 60.0

#: The worker resource a job's memory estimate is asked for, when every worker declares it
#: (``dask worker --resources MEMORY=8e9``).
MEMORY_RESOURCE = "MEMORY"

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


class _Slot:
    """The cluster as one placement target of the router's dispatch."""

    name = "dask"


class DaskExecutor:
    """Runs the router's jobs as tasks on a Dask distributed cluster."""

    degraded_reason = None

    def __init__(self, router: Router, address: str, *, shared_files: bool = False) -> None:
        self.r = router
        self.config = router.config
        self.address = address
        self.shared_files = shared_files
        self.endpoint = "dask://" + address.removeprefix("tcp://")
        self.client: Any = None
        self._fn: Any = None
        self._slot = _Slot()
        self.futures: dict[str, Any] = {}  # job id -> its Dask future
        self._suspects: set[str] = set()  # jobs in flight when a worker vanished
        self._ended: collections.deque[tuple[float, str]] = collections.deque()  # path jobs ended lately
        self._workers: dict[str, dict] = {}
        self._threads = 0
        self._mem_resource = False
        self._mem_largest = 0.0  # the largest MEMORY a worker declares
        self._asking = False
        self._next_info = 0.0
        self._connecting = False
        self._next_connect = 0.0
        self._to_fetch: list[tuple[Job, Batch, Any]] = []  # finished tasks whose outcome is not here yet
        self._fetching = False
        self._awaiting: dict[str, tuple[Job, Any]] = {}  # finished tasks whose outcome is being fetched
        self._modes: dict[str, int] = {}
        self._dashboard: str | None = None

    # -- set-up ------------------------------------------------------------------------

    def setup(self, sidecar_keys: frozenset[str]) -> list:
        """Connect to the scheduler (IOFailureError when it cannot be reached); no sockets to poll."""
        import distributed

        from pyimgopt_sidecar.dask_task import run_job

        self._fn = run_job
        try:
            self.client = distributed.Client(self.address, timeout=10, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise IOFailureError(f"cannot reach the Dask scheduler at {self.endpoint}: {exc}",
                                 stage="executor") from None
        self._subscribe(self.client)
        self._on_info(self.client.scheduler_info(), None)
        try:
            self._dashboard = self.client.dashboard_link
        except Exception:  # no dashboard (bokeh missing): nothing to show
            self._dashboard = None
        return []

    def close_sockets(self) -> None:
        """Close the Dask client (also after a failed set-up)."""
        if self.client is not None:
            try:
                self.client.close(timeout=5)
            except Exception:
                pass
            self.client = None

    def on_readable(self, sock: Any) -> None:  # no sockets of its own: completions come via offload
        return None

    def start_pool(self) -> None:
        """Nothing to start: Dask's workers are started by whoever runs the cluster."""

    def shutdown(self) -> None:
        """Cancel what is in flight (the router is stopping; the journal requeues it)."""
        futures = list(self.futures.values())
        self.futures.clear()
        if futures and self.client is not None:
            try:
                self.client.cancel(futures)
            except Exception:
                pass

    @property
    def _topic(self) -> str:
        return "pyimgopt-" + self.r._uid

    def _subscribe(self, client: Any) -> None:
        """Hear what our tasks tell (on the client's thread: handed to the router's thread)."""
        post = self.r._offload.post
        client.subscribe_topic(self._topic, lambda ev: post(lambda: self._told(ev[1])))

    def _told(self, msg: Any) -> None:
        """A task of ours started (its lease starts now) or, by path, has its outcome."""
        if not isinstance(msg, dict):
            return
        job = self.r._jobs.get(str(msg.get("job")))
        if (job is None or job.attempt != msg.get("attempt") or job.state != "running"
                or self.futures.get(job.id) is None):
            return  # not this attempt's any more (cancelled, timed out, requeued, ended)
        if msg.get("kind") == "start":
            job.deadline = time.monotonic() + self.config.lease
        elif msg.get("kind") == "outcome" and self.shared_files:
            # the outcome is here: the task is dropped (Dask will not run it again if its
            # worker dies now) and the job ends as its first run said
            fut = self.futures[job.id]
            self._release(job)
            self._swept_if_suspect(job)
            self._outcome(job, self.r._batches[job.batch], msg.get("reply"))
            try:
                fut.release()
            except Exception:
                pass

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

    # -- placement -------------------------------------------------------------------------

    def capacity(self) -> int:
        """How many tasks may be in flight now (0 while no worker is known)."""
        if not self._threads or self.client is None or self.client.status != "running":
            return 0
        return 2 * self._threads + PREFETCH

    def free_slots(self) -> list[_Slot]:
        """The cluster, when it has room for another task."""
        return [self._slot] if self.has_room(self._slot) else []

    def has_room(self, slot: _Slot) -> bool:
        return len(self.futures) < self.capacity()

    @staticmethod
    def name_of(slot: _Slot) -> str:
        return slot.name

    def start(self, job: Job, batch: Batch, slot: _Slot, now: float) -> bool:
        """Send ``job`` to the cluster (in bytes mode once its input is read, off this thread)."""
        job.sidecar = b"dask"
        job.started = now
        # the lease starts again when the task tells it started; meanwhile it may wait behind
        # about one task per worker thread (twice the threads are in flight)
        job.deadline = now + 2 * self.config.lease
        job.inline = not self.shared_files
        spec = {"settings": batch.settings, "in_place": batch.in_place, "known": job.known,
                "force": bool(batch.options.get("force")), "dry_run": bool(batch.options.get("dry_run")),
                "topic": self._topic, "job": job.id, "attempt": job.attempt}
        self.futures[job.id] = None  # its place is taken while the input is read
        if self.shared_files:
            spec.update(input=job.input, output=job.output, expect=job.expect, outputs=job.outputs)
            self._submit(job, batch, spec, None)
            return True
        limit = int(batch.settings.get("max_input_bytes") or 256 * 1024 * 1024)
        attempt = job.attempt
        self.r._offload.submit(read_inline, job.input, limit, job.expect,
                               then=lambda value, err: self._read(job, attempt, batch, spec, value, err))
        return True

    def _read(self, job: Job, attempt: int, batch: Batch, spec: dict, value: Any,
              err: BaseException | None) -> None:
        if job.state != "running" or job.attempt != attempt or job.id not in self.futures:
            return  # cancelled or requeued meanwhile
        if err is not None:
            self._release(job)
            if isinstance(err, PyimgoptError):
                self.r.job_failed(job, err, retry=False)
                return
            raise err
        data, mode = value
        self._modes[job.id] = mode
        self._submit(job, batch, spec, data)

    def _submit(self, job: Job, batch: Batch, spec: dict, data: bytes | None) -> None:
        attempt = job.attempt
        kw: dict[str, Any] = {}
        if self._mem_resource and job.reserved and self._mem_largest > 0:
            # never more than the largest worker declares: Dask would never schedule it
            # (a job larger than that gets the largest worker to itself)
            kw["resources"] = {MEMORY_RESOURCE: min(float(job.reserved), self._mem_largest)}
        try:
            fut = self.client.submit(self._fn, spec, data, key=f"pyimgopt-{job.id}-a{attempt}-{self.r._uid[:8]}",
                                     pure=False, retries=0, priority=batch.priority, **kw)
        except Exception as exc:  # the client closed under us: back to the queue
            self._release(job)
            event(self.r._log, "dask_submit_failed", logging.WARNING, job=job.id, reason=str(exc))
            self.r.job_requeue(job)
            return
        self.futures[job.id] = fut
        post = self.r._offload.post
        fut.add_done_callback(lambda f: post(lambda: self._finished(job, attempt, f)))

    def _release(self, job: Job) -> None:
        if self.futures.pop(job.id, "absent") != "absent" and self.shared_files:
            now = time.monotonic()
            self._ended.append((now, job.id))
            while self._ended and self._ended[0][0] < now - RECENT:
                self._ended.popleft()
        self.r.release_memory(job)
        job.sidecar = None

    # -- outcomes --------------------------------------------------------------------------

    def _finished(self, job: Job, attempt: int, fut: Any) -> None:
        """A task ended (on the router's thread): hand its outcome to the router once."""
        if self.futures.get(job.id) is not fut or job.attempt != attempt or job.state != "running":
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

    def _swept_if_suspect(self, job: Job) -> None:
        if job.id in self._suspects:
            self._suspects.discard(job.id)
            self._sweep(job.id)  # a worker that died may have been writing it

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

    def _sweep(self, jid: str) -> None:
        """Remove what a dead worker may have left half-written for job ``jid`` (path mode)."""
        job = self.r._jobs.get(jid)
        batch = None if job is None else self.r._batches.get(job.batch)
        if not self.shared_files or batch is None:
            return
        target = job.input if batch.in_place else job.output
        if target and clean_after_lost_writer(target, batch.settings.get("format") == "auto"):
            event(self.r._log, "dask_temps_swept", job=jid)

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


    # -- cancel, leases, supervision --------------------------------------------------------

    def abort(self, job: Job) -> None:
        """Cancel ``job``'s task; the job ends as cancelled (a running task may still finish;
        a finished one whose outcome is still being fetched is not waited for)."""
        if job.id in self._awaiting:
            _, fut = self._awaiting.pop(job.id)
            self._modes.pop(job.id, None)
            job.state = "running"  # the fetch's answer, when it comes, is ignored
            self.r._offload.submit(fut.cancel, then=lambda value, err: None)
            self.r.job_failed(job, CancelledError("cancelled", path=job.input, stage="dask"), retry=False)
            return
        if job.id not in self.futures:
            return
        fut = self.futures.get(job.id)
        self._release(job)
        self._modes.pop(job.id, None)
        if fut is not None:
            self.r._offload.submit(fut.cancel, then=lambda value, err: None)
        attempt = job.attempt

        def end() -> None:
            if job.state == "running" and job.attempt == attempt:
                self.r.job_failed(job, CancelledError("cancelled", path=job.input, stage="dask"), retry=False)

        self.r._offload.post(end)  # after the cancel's own bookkeeping, as a sidecar's answer would be

    def tick(self, now: float, beat: bool) -> None:
        """Refresh the cluster's shape (once a second, off this thread), reconnect to a
        scheduler that went away (every few seconds), enforce leases."""
        if self.client is not None and self.client.status in ("closed", "closing", "failed"):
            if not self._connecting and now >= self._next_connect:
                self._reconnect()
        elif now >= self._next_info:
            self._next_info = now + 1.0
            self._ask_info()
        for jid in list(self.futures):
            job = self.r._jobs.get(jid)
            if job is not None and job.state == "running" and now > job.deadline:
                fut = self.futures.get(jid)
                self._release(job)
                self._modes.pop(jid, None)
                if fut is not None:
                    self.r._offload.submit(fut.cancel, then=lambda value, err: None)
                self.r.job_failed(job, JobTimeoutError("job lease expired", path=job.input), retry=False)
        for jid, (job, fut) in list(self._awaiting.items()):
            if job.state == "writing" and now > job.deadline:  # its outcome never came
                del self._awaiting[jid]
                self._modes.pop(jid, None)
                job.state = "running"
                self.r._offload.submit(fut.cancel, then=lambda value, err: None)
                self.r.job_failed(job, JobTimeoutError("job lease expired while its outcome was "
                                                       "fetched from its Dask worker", path=job.input),
                                  retry=False)

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
