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
rerun would find its input replaced). Cancel is ``Future.cancel``; a task
already running on a worker cannot be interrupted by Dask, so in path mode
it may still write its (complete, atomic) output. When the scheduler is
unreachable nothing is dispatched, the jobs in flight go back to the queue
(no attempt spent), and a new connection is tried every few seconds. It
never touches pixels.

This module owns set-up, submission, the task events, cancel and leases;
the connection, the cluster's shape and status live in :mod:`.dask_cluster`,
the collection of outcomes in :mod:`.dask_outcomes`.
"""

from __future__ import annotations

import collections
import itertools
import logging
import time
from typing import TYPE_CHECKING, Any

from ..errors import CancelledError, IOFailureError, JobTimeoutError, PyimgoptError
from ..logs import event
from .dask_cluster import MEMORY_RESOURCE, RECENT, ClusterLink, memory_request
from .dask_outcomes import Outcomes
from .inline import read_inline
from .model import Batch, Job

if TYPE_CHECKING:
    from .broker import Router

__all__ = ["DaskExecutor", "PREFETCH"]

#: Tasks in flight: twice the cluster's threads plus this many (so a worker
#: never waits for the router between two jobs); what is not sent stays in
#: the router's queue, under its priorities, pause and cancel.
PREFETCH = 2


class _Slot:
    """The cluster as one placement target of the router's dispatch."""

    name = "dask"


class DaskExecutor(ClusterLink, Outcomes):
    """Runs the router's jobs as tasks on a Dask distributed cluster."""

    degraded_reason = None

    #: Seconds a job runs before its task reports stages; None: the pool sidecar's
    #: threshold (``pyimgopt_sidecar.dask_task.PROGRESS_AFTER``), so quick jobs send none.
    progress_after: float | None = None

    #: True: the tasks of the jobs started in one turn of the router's loop are sent together
    #: (:meth:`_flush`); False: each at once, alone (the bench's before/after).
    batch_submit = True

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
        self._heard: collections.deque = collections.deque()  # task events not yet handled
        self._unsent: list[tuple] = []  # (job, send, batch, spec, data) for the next _flush
        # each send of a job's task has a number of its own (in its key, its spec and its
        # events): a job requeued "no attempt spent" and sent again keeps its attempt, so the
        # attempt cannot tell this run's events and outcome from an abandoned run's
        self._send_numbers = itertools.count(1)
        self._sends: dict[str, int] = {}  # job id -> the number of its task's current send

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
        futures = [f for f in self.futures.values() if f is not None]  # None: not sent yet
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
        """Hear what our tasks tell. The handler runs on the Dask client's thread: it only
        queues the message; the first one queued since the last drain posts one drain to the
        router's thread, which handles every message queued by then, in order (a burst of
        events costs one wake-up, not one each)."""
        told, post = self._heard, self.r._offload.post

        def heard(ev: Any) -> None:
            told.append(ev[1])
            if len(told) == 1:  # (deque appends and len are atomic under the GIL)
                post(self._drain_told)

        client.subscribe_topic(self._topic, heard)

    def _drain_told(self) -> None:
        told = self._heard
        while told:
            self._told(told.popleft())

    def _told(self, msg: Any) -> None:
        """A task of ours started (its lease starts now), ended a stage (clients are told, as
        for a pool sidecar's ``progress``; the lease starts again) or, by path, has its
        outcome. A message of a send that is over (or a lost one) changes nothing — also one
        of an abandoned run of a job requeued and sent again under the same attempt."""
        if not isinstance(msg, dict):
            return
        job = self.r._jobs.get(str(msg.get("job")))
        if job is None or not self._current(job, msg.get("send")) or self.futures.get(job.id) is None:
            return  # not this send's any more (cancelled, timed out, requeued, ended)
        kind = msg.get("kind")
        if kind == "start":
            job.deadline = time.monotonic() + self.config.lease
        elif kind == "progress" and isinstance(msg.get("stage"), str):
            job.deadline = time.monotonic() + self.config.lease
            self.r.job_progress(job, msg["stage"])
        elif kind == "outcome" and self.shared_files:
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
                "topic": self._topic, "job": job.id, "attempt": job.attempt,
                "send": next(self._send_numbers)}
        if self.progress_after is not None:
            spec["progress_after"] = self.progress_after
        self.futures[job.id] = None  # its place is taken while the input is read
        self._sends[job.id] = send = spec["send"]
        if self.shared_files:
            spec.update(input=job.input, output=job.output, expect=job.expect, outputs=job.outputs)
            self._submit(job, batch, spec, None)
            return True
        limit = int(batch.settings.get("max_input_bytes") or 256 * 1024 * 1024)
        self.r._offload.submit(read_inline, job.input, limit, job.expect,
                               then=lambda value, err: self._read(job, send, batch, spec, value, err))
        return True

    def _current(self, job: Job, send: Any) -> bool:
        """True when ``send`` is the send of ``job``'s task now in flight (or being read)."""
        return job.state == "running" and send is not None and self._sends.get(job.id) == send

    def _read(self, job: Job, send: int, batch: Batch, spec: dict, value: Any,
              err: BaseException | None) -> None:
        if not self._current(job, send) or job.id not in self.futures:
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
        """Queue ``job``'s task for the next :meth:`_flush` (the first one queued posts it:
        every job started in this turn of the router's loop goes in one graph)."""
        self._unsent.append((job, spec["send"], batch, spec, data))
        if len(self._unsent) == 1:
            if self.batch_submit:
                self.r._offload.post(self._flush)
            else:
                self._flush()

    def _flush(self) -> None:
        """Send the queued tasks: one ``Client.map`` (one graph, one message to the scheduler)
        per priority and memory request, instead of a ``Client.submit`` each. A graph has
        one user priority and one resource request for all its tasks (``Client.map`` takes a
        number and a dict, not one per task), so the tasks are grouped by both; the memory
        requests are rounded up to powers of two (:func:`.dask_cluster.memory_request`) so that jobs of
        different sizes still share a graph. Groups go in the router's order (largest job
        first, so usually the largest request first), each graph a new generation of the
        scheduler's FIFO (``fifo_timeout=0``): at equal priority, a task sent earlier runs
        earlier, and within a graph in the router's order. A job cancelled, timed out or
        requeued since it was queued is not sent."""
        unsent, self._unsent = self._unsent, []
        groups: dict[tuple, list] = {}
        for item in unsent:
            job, send = item[0], item[1]
            if not self._current(job, send) or self.futures.get(job.id, 0) is not None:
                continue  # its place was given back meanwhile (or it is sent already)
            mem = None
            if self._mem_resource and job.reserved and self._mem_largest > 0:
                mem = memory_request(float(job.reserved), self._mem_largest)
            groups.setdefault((item[2].priority, mem), []).append(item)
        uid = self.r._uid[:8]
        post = self.r._offload.post
        for (priority, mem), items in groups.items():
            kw: dict[str, Any] = {} if mem is None else {"resources": {MEMORY_RESOURCE: mem}}
            try:
                if self.client is None:
                    raise RuntimeError("the Dask client is closed")
                keys = [f"pyimgopt-{i[0].id}-a{i[3]['attempt']}-s{i[1]}-{uid}" for i in items]
                if len(items) == 1:
                    futs = [self.client.submit(self._fn, items[0][3], items[0][4], key=keys[0], pure=False,
                                               retries=0, priority=priority, fifo_timeout=0, **kw)]
                else:
                    futs = self.client.map(self._fn, [i[3] for i in items], [i[4] for i in items], key=keys,
                                           pure=False, retries=0, priority=priority, fifo_timeout=0, **kw)
            except Exception as exc:  # the client closed under us: back to the queue
                for job, *_ in items:
                    self._release(job)
                    event(self.r._log, "dask_submit_failed", logging.WARNING, job=job.id, reason=str(exc))
                    self.r.job_requeue(job)
                continue
            for (job, send, *_), fut in zip(items, futs):
                self.futures[job.id] = fut
                fut.add_done_callback(
                    lambda f, job=job, send=send: post(lambda: self._finished(job, send, f)))

    def _release(self, job: Job) -> None:
        self._sends.pop(job.id, None)  # events and outcomes of this send are over
        if self.futures.pop(job.id, "absent") != "absent" and self.shared_files:
            now = time.monotonic()
            self._ended.append((now, job.id))
            while self._ended and self._ended[0][0] < now - RECENT:
                self._ended.popleft()
        self.r.release_memory(job)
        job.sidecar = None

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
