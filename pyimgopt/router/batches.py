"""The batch desk: what clients ask of the router about batches.

Owns submit — chunks assembled into one batch, the authoritative per-job
checks against the connection's policy run on worker threads
(:mod:`.checks`), the journal rows (jobs refused at submit stored as
refused) made durable before the acknowledgement, then the jobs registered
a slice at a time so the loop keeps dispatching — attach and the replay of
finished files, recovery of unfinished batches from the journal (all at
start, or one when a client attaches to it), cancel, pause and resume, and
the ``status`` figures. A mixin of :class:`~.broker.Router`: it works on
the router's jobs, batches and queue, on the router's thread only.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Any

from .. import protocol
from ..errors import (
    CancelledError,
    CapabilityDeniedError,
    InternalError,
    IOFailureError,
    InvalidSettingsError,
    ProtocolError,
    PyimgoptError,
)
from ..logs import event
from ..manifest import Hinter, settings_key
from ..security import Policy
from . import checks
from .model import Batch, Job, str_keys

__all__ = ["BatchDesk", "MAX_PENDING_JOBS"]

#: Jobs one connection may have sent for batches not yet complete (chunks
#: still arriving or being checked): bounds what a client makes us hold.
MAX_PENDING_JOBS = 5_000_000
#: Seconds an unfinished chunked submit may wait for its next chunk.
ASSEMBLY_IDLE = 300.0
#: Jobs checked per worker task, and registered per loop turn.
CHECK_SLICE = 4000
REGISTER_SLICE = 500


@dataclass
class _Assembly:
    """A submit whose chunks are still arriving or whose jobs are being checked."""

    batch: str
    identity: bytes
    owner: str | None
    policy: Policy
    priority: int
    settings: dict
    in_place: bool
    req: str
    options: dict = field(default_factory=dict)  # force, dry_run
    specs: list = field(default_factory=list)
    last: float = field(default_factory=time.monotonic)
    parts: list = field(default_factory=list)  # checked slices, by index
    waiting: int = 0


@dataclass
class _Registration:
    """Jobs of a batch still to be entered into the router's tables, a slice per loop turn."""

    batch: Batch
    jobs: collections.deque  # Job objects, in order
    refused: dict  # job id -> error (ended as they are registered)
    queue: bool  # queue the unfinished ones (False: a finished or cancelled batch)
    then: Any = None  # called once every job is registered


class BatchDesk:
    """Submit, attach, recover, cancel/pause/resume and status (mixed into Router)."""

    # -- submit ------------------------------------------------------------------------

    def _desk_init(self) -> None:
        self._assembling: dict[str, _Assembly] = {}
        self._restoring: set[str] = set()
        self._registering: collections.deque[_Registration] = collections.deque()
        self._pending_jobs: collections.Counter[bytes] = collections.Counter()

    def _batch_id_taken(self, bid: str) -> bool:
        return bid in self._batches or bid in self._assembling

    def _submit(self, identity: bytes, msg: protocol.Message, policy: Policy,
                owner: str | None = None) -> None:
        def refuse(err: PyimgoptError) -> None:
            self._send_client(identity, "error", req=msg["req"], error=protocol.pack_error(err))

        try:
            settings = protocol.unpack_settings(msg["settings"])
            policy.capabilities.check_settings(settings, in_place=msg["in_place"],
                                               priority=msg["priority"])
        except (ProtocolError, InvalidSettingsError, CapabilityDeniedError) as exc:
            refuse(exc)
            return
        bid = msg["batch"]
        if not bid or len(bid) > 64:
            refuse(ProtocolError("a batch id of 1 to 64 characters is required", stage="protocol"))
            return
        if self._batch_id_taken(bid):
            refuse(ProtocolError(f"batch id {bid} is already in use", stage="protocol"))
            return
        asm = _Assembly(bid, identity, owner, policy, msg["priority"], msg["settings"], msg["in_place"],
                        msg["req"], options={k: True for k in ("force", "dry_run") if msg.get(k)})
        self._assembling[bid] = asm
        self._add_chunk(asm, msg["jobs"], bool(msg.get("more")), msg["req"])

    def _jobs_chunk(self, identity: bytes, msg: protocol.Message) -> None:
        asm = self._assembling.get(msg["batch"])
        if asm is None or asm.identity != identity or asm.waiting or asm.parts:
            self._send_client(identity, "error", req=msg["req"], error=protocol.pack_error(IOFailureError(
                f"no submit of batch {msg['batch']} is waiting for jobs on this connection",
                stage="submit")))
            return
        self._add_chunk(asm, msg["jobs"], msg["more"], msg["req"])

    def _add_chunk(self, asm: _Assembly, jobs: list, more: bool, req: str) -> None:
        asm.last = time.monotonic()
        asm.specs.extend((j["input"], j.get("output")) for j in jobs)
        self._pending_jobs[asm.identity] += len(jobs)
        limit = min(asm.policy.capabilities.max_batch_files, MAX_PENDING_JOBS)
        if len(asm.specs) > limit or self._pending_jobs[asm.identity] > MAX_PENDING_JOBS:
            self._drop_assembly(asm)
            what = ("capability 'max_batch_files' " + str(limit) if len(asm.specs) > limit
                    else f"{MAX_PENDING_JOBS} jobs pending on one connection")
            self._send_client(asm.identity, "error", req=req, error=protocol.pack_error(
                CapabilityDeniedError(f"batch of more than {limit} files exceeds {what}",
                                      stage="capabilities")))
            return
        if more:
            self._send_client(asm.identity, "reply", req=req, ok=True, data={"received": len(asm.specs)})
            return
        asm.req = req
        self._check_assembly(asm)

    def _drop_assembly(self, asm: _Assembly) -> None:
        if self._assembling.pop(asm.batch, None) is not None:
            self._pending_jobs[asm.identity] -= len(asm.specs)
            if self._pending_jobs[asm.identity] <= 0:
                del self._pending_jobs[asm.identity]

    def _expire_assemblies(self, now: float) -> None:
        for asm in list(self._assembling.values()):
            if not asm.waiting and not asm.parts and now - asm.last > ASSEMBLY_IDLE:
                self._drop_assembly(asm)

    def _check_assembly(self, asm: _Assembly) -> None:
        """Check the jobs on worker threads, a slice per task; :meth:`_checked` gathers them."""
        specs = asm.specs
        slices = [(i, specs[i:i + CHECK_SLICE]) for i in range(0, len(specs), CHECK_SLICE)] or [(0, [])]
        asm.parts = [None] * len(slices)
        asm.waiting = len(slices)
        _, hint = self._manifest_hint(asm.settings, asm.options)
        for n, (start, part) in enumerate(slices):
            self._offload.submit(checks.check_jobs, asm.batch, start, part, asm.policy, asm.in_place,
                                 asm.settings.get("format") == "auto", hint,
                                 then=lambda value, err, n=n, asm=asm: self._checked(asm, n, value, err))

    def _fail_assembly(self, asm: _Assembly, err: BaseException) -> None:
        """A bug in the checks: the submit fails ``internal``, the router logs it and goes on."""
        self._drop_assembly(asm)
        self._send_client(asm.identity, "error", req=asm.req, error=protocol.pack_error(
            InternalError(f"the router failed checking batch {asm.batch}: {type(err).__name__}",
                          stage="router")))
        raise err

    def _checked(self, asm: _Assembly, n: int, value: Any, err: BaseException | None) -> None:
        if self._assembling.get(asm.batch) is not asm:
            return  # dropped meanwhile
        if err is not None:
            self._fail_assembly(asm, err)
        asm.parts[n] = value
        asm.waiting -= 1
        if asm.waiting:
            return
        self._offload.submit(checks.finish_batch, asm.batch, asm.parts, asm.settings,
                             then=lambda value, err: self._finished_checks(asm, value, err))

    def _finished_checks(self, asm: _Assembly, value: Any, err: BaseException | None) -> None:
        if self._assembling.get(asm.batch) is not asm:
            return
        if err is not None:
            self._fail_assembly(asm, err)
        accepted, refused, total_bytes, rows = value
        try:
            asm.policy.capabilities.check_batch(len(asm.specs), total_bytes)
        except CapabilityDeniedError as exc:
            self._drop_assembly(asm)
            self._send_client(asm.identity, "error", req=asm.req, error=protocol.pack_error(exc))
            return
        if self._journal is None:
            self._admit(asm, accepted, refused)
            return
        # durable before the submit is acknowledged; refused jobs are stored as refused
        self._jw.call("add_batch", asm.batch, asm.owner, asm.priority, asm.settings, asm.in_place, rows,
                      asm.options, then=lambda _v, e: self._journaled(asm, accepted, refused, e))

    def _journaled(self, asm: _Assembly, accepted: list[Job], refused: dict,
                   err: BaseException | None) -> None:
        if self._assembling.get(asm.batch) is not asm:
            return
        if err is not None:
            self._drop_assembly(asm)
            self._send_client(asm.identity, "error", req=asm.req, error=protocol.pack_error(
                IOFailureError(f"journal write failed: {err}", stage="journal", retryable=True)))
            return
        self._admit(asm, accepted, refused)

    def _admit(self, asm: _Assembly, jobs: list[Job], refused: dict) -> None:
        """The batch exists from now on: acknowledge it, then register its jobs a slice at a time."""
        self._drop_assembly(asm)
        batch = Batch(asm.batch, asm.identity, asm.priority, asm.settings, asm.in_place, [],
                      total=len(jobs))
        batch.owner = asm.owner
        batch.options = asm.options
        batch.key, _ = self._manifest_hint(asm.settings, asm.options)
        self._batches[batch.id] = batch
        self._send_client(asm.identity, "accepted", req=asm.req, batch=batch.id, total=batch.total)
        event(self._log, "batch_submitted", batch=batch.id, count=batch.total)
        if self._executor.degraded_reason:
            self._event(batch, "degraded", reason=self._executor.degraded_reason)
        self._registering.append(_Registration(batch, collections.deque(jobs), refused, queue=True))
        if not jobs:
            self._finish_batch(batch)

    def _register_some(self, budget: int = REGISTER_SLICE) -> None:
        """Enter up to ``budget`` jobs of pending registrations into the tables and the queue."""
        while self._registering and budget > 0:
            reg = self._registering[0]
            batch = reg.batch
            while reg.jobs and budget > 0:
                job = reg.jobs.popleft()
                budget -= 1
                self._jobs[job.id] = job
                batch.jobs.append(job.id)
                err = reg.refused.pop(job.id, None)
                if err is not None:
                    self._end_job(job, err, journal=False)  # stored as refused already
                elif job.state == "queued" and reg.queue:
                    if batch.cancelled:
                        self._end_job(job, CancelledError("cancelled", path=job.input, stage="queue"))
                    elif job.early is not None:  # unchanged, found at submit: no sidecar needed
                        result, job.early = job.early, None
                        if batch.options.get("dry_run"):
                            result["dry_run"] = True
                        self.job_done(job, result)
                    else:
                        self._queue.push(job.id, batch.id, batch.priority, size=job.size)
                        self._event(batch, "queued", job.id, input=job.input)
            if not reg.jobs:
                self._registering.popleft()
                if reg.then is not None:
                    reg.then()
                self._maybe_finish(batch)

    def _registered(self, batch: Batch) -> bool:
        return not any(reg.batch is batch for reg in self._registering)

    # -- attach ---------------------------------------------------------------------------

    def _attach(self, identity: bytes, msg: protocol.Message, owner: str | None) -> None:
        """Point a batch's events at this connection and replay what already finished."""
        bid = msg["batch"]
        batch = self._batches.get(bid)
        if batch is not None:
            self._reattach(identity, msg["req"], batch, owner)
            return
        if self._journal is None or bid in self._restoring:
            self._unknown(identity, msg["req"], bid)
            return
        self._restoring.add(bid)
        # Read on the journal's thread, rebuild on a worker, register here.
        self._jw.call("load_batch", bid,
                      then=lambda value, err: self._loaded(identity, msg["req"], bid, owner, value, err))

    def _unknown(self, identity: bytes, req: str, bid: str) -> None:
        self._send_client(identity, "error", req=req, error=protocol.pack_error(
            IOFailureError(f"unknown batch {bid}", stage="attach")))

    def _loaded(self, identity: bytes, req: str, bid: str, owner: str | None, value: Any,
                err: BaseException | None) -> None:
        if err is not None:
            self._restoring.discard(bid)
            self._send_client(identity, "error", req=req, error=protocol.pack_error(IOFailureError(
                f"cannot read batch {bid} from the journal: {err}", stage="journal", retryable=True)))
            return
        if value is None or value[0]["owner"] != owner:
            self._restoring.discard(bid)
            self._unknown(identity, req, bid)  # another key's batch: as if it did not exist
            return
        row, rows = value
        self._offload.submit(checks.restore_jobs, row, rows, True, self._policy_for(owner),
                             self._manifest_hint(row["settings"], row.get("options") or {})[1],
                             then=lambda v, e: self._restored(identity, req, row, v, e))

    def _restored(self, identity: bytes, req: str, row: dict, value: Any, err: BaseException | None) -> None:
        self._restoring.discard(row["id"])
        if err is not None:
            self._send_client(identity, "error", req=req, error=protocol.pack_error(InternalError(
                f"the router failed restoring batch {row['id']}: {type(err).__name__}", stage="router")))
            raise err
        if row["id"] in self._batches:  # attached twice at once: the first one registered it
            self._reattach(identity, req, self._batches[row["id"]], row["owner"])
            return
        batch = self._restore(row, value)
        self._registering[-1].then = lambda: self._reattach(identity, req, batch, row["owner"])

    def _reattach(self, identity: bytes, req: str, batch: Batch, owner: str | None) -> None:
        if batch.owner != owner:
            self._unknown(identity, req, batch.id)
            return
        if not self._registered(batch):  # still entering its jobs: answer when it is done
            for reg in self._registering:
                if reg.batch is batch:
                    prev = reg.then
                    reg.then = (lambda prev=prev: (prev and prev(),
                                                   self._reattach(identity, req, batch, owner)))
            return
        self._forget_events(batch.client, batch.id)  # the replay below carries everything again
        self._forget_events(identity, batch.id)
        batch.client = identity
        self._send_client(identity, "accepted", req=req, batch=batch.id, total=batch.total)
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

    # -- recovery -----------------------------------------------------------------------

    def _restore(self, row: dict, restored: tuple[list[Job], list[tuple]]) -> Batch:
        """A batch from the journal, its jobs (as :func:`checks.restore_jobs` left them)
        registered a slice at a time: unfinished ones queued again, unless it was cancelled."""
        jobs, updates = restored
        batch = Batch(row["id"], None, row["priority"], row["settings"], bool(row["in_place"]), [],
                      total=len(jobs))
        batch.owner = row["owner"]
        batch.options = dict(row.get("options") or {})
        batch.key, _ = self._manifest_hint(row["settings"], batch.options)
        batch.paused = row["state"] == "paused"
        batch.cancelled = row["state"] == "cancelled"
        batch.finished = row["state"] == "done"
        for job in jobs:
            if job.state == "done":
                batch.done += 1
                res = job.result or {}
                if res.get("bytes_in") and res.get("bytes_out") is not None:
                    batch.bytes_in += res["bytes_in"]
                    batch.bytes_out += res["bytes_out"]
            elif job.state in ("failed", "cancelled"):
                batch.failed += 1
        self._batches[batch.id] = batch
        for method, *args in updates:
            self._jw.call(method, *args)
        self._registering.append(_Registration(batch, collections.deque(jobs), {},
                                               queue=not batch.finished))
        return batch

    def _recover(self) -> None:
        """At start: requeue what every unfinished batch left; never redo what is done."""
        for row in self._journal.unfinished():
            rows = row.pop("jobs")
            hint = self._manifest_hint(row["settings"], row.get("options") or {})[1]
            self._restore(row, checks.restore_jobs(row, rows, True, self._policy_for(row["owner"]),
                                                   hint))

    def _manifest_hint(self, settings: dict, options: dict):
        """``(settings key, hint function)`` for a batch: what the manifest knows is
        checked per job on a worker thread (paths and ``stat`` only). ``(None,
        None)`` without a manifest or with ``force``; a dry run reads the
        manifest (it reports ``unchanged`` as a real run would) but never writes it."""
        manifest = getattr(self, "_manifest", None)
        if manifest is None:
            return None, None
        try:
            key = settings_key(protocol.unpack_settings(settings))
        except ProtocolError:
            return None, None
        if options.get("force"):
            return key, None
        return key, Hinter(manifest, key, getattr(self, "_mw", None))

    # -- cancel, pause, resume ----------------------------------------------------------

    def _cancel(self, batch: Batch) -> None:
        batch.cancelled = True
        if self._jw is not None:
            self._jw.call("batch_state", batch.id, "cancelled")
        for jid in self._queue.jobs_of(batch.id):
            self._queue.remove(jid)
            self._end_job(self._jobs[jid], CancelledError("cancelled before it started",
                                                          path=self._jobs[jid].input, stage="queue"))
        for jid in batch.jobs:
            job = self._jobs[jid]
            if (job.state == "running" and job.sidecar is not None) or job.state == "writing":
                self._executor.abort(job)  # "writing": Dask may still be fetching its outcome
        self._event(batch, "cancelled")
        self._maybe_finish(batch)

    def _pause(self, batch: Batch) -> None:
        batch.paused = True
        if self._jw is not None:
            self._jw.call("batch_state", batch.id, "paused")
        self._event(batch, "paused")

    def _resume(self, batch: Batch) -> None:
        batch.paused = False
        if self._jw is not None:
            self._jw.call("batch_state", batch.id, "active")
        self._event(batch, "resumed")

    # -- status ---------------------------------------------------------------------------

    def status(self, batch_id: str | None = None, owner: str | None = None) -> dict:
        """Figures for ``status``: batches, queue, sidecars, memory, counters.

        A remote caller ``owner`` (a CurveZMQ key, or the keyless TCP
        connections) sees its own batches and nothing global: no queue,
        sidecars, memory, counters or metrics.
        """
        batches = [self._batches[batch_id]] if batch_id in self._batches else (
            [] if batch_id else list(self._batches.values()))
        if owner is not None:
            batches = [b for b in batches if b.owner == owner]
        rows = [
            {"batch": b.id, "total": b.total, "done": b.done, "failed": b.failed,
             "paused": b.paused, "cancelled": b.cancelled, "finished": b.finished,
             "priority": b.priority, "bytes_in": b.bytes_in, "bytes_out": b.bytes_out}
            for b in batches
        ]
        if owner is not None:
            return {"batches": rows}
        return {
            "batches": rows,
            "queue": {str(k): v for k, v in self._queue.by_priority().items()},
            **self._executor.describe(),
            "memory": {"budget": self._budget, "in_use": self._mem_in_use},
            "journal": None if self._journal is None else self._journal.folder,
            "counters": dict(self.counters),
            "metrics": str_keys(self.metrics.snapshot()),
        }
