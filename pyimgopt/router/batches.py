"""The batch desk: what clients ask of the router about batches.

Owns submit (the authoritative per-job checks against the connection's
policy, the journal row before the acknowledgement), attach and the replay
of finished files, recovery of unfinished batches from the journal at start,
cancel, pause and resume, and the ``status`` figures. A mixin of
:class:`~.broker.Router`: it works on the router's jobs, batches and queue,
on the router's thread.
"""

from __future__ import annotations

import os
import uuid

from .. import protocol
from ..errors import (
    CancelledError,
    CapabilityDeniedError,
    IOFailureError,
    InvalidSettingsError,
    ProtocolError,
    PyimgoptError,
    ScopeDeniedError,
)
from ..logs import event
from ..pipeline.write import parent_anchor, remove_stale_temps
from ..result import Result
from ..security import Policy, clobbered_inputs, printable_path, utf8_name
from .model import Batch, Job, str_keys

__all__ = ["BatchDesk"]


class BatchDesk:
    """Submit, attach, recover, cancel/pause/resume and status (mixed into Router)."""

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
        accepted: list[Job] = []
        refused: list[tuple[Job, PyimgoptError]] = []
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
                accepted.append(Job(jid, bid, inp, None if msg["in_place"] else out, expect=expect))
            except PyimgoptError as exc:
                refused.append((Job(jid, bid, printable_path(str(spec["input"])), None, state="failed"), exc))
            except OSError as exc:
                refused.append((Job(jid, bid, printable_path(str(spec["input"])), None, state="failed"),
                                ScopeDeniedError(f"cannot check input: {exc.strerror}",
                                                 path=printable_path(str(spec["input"])), stage="scope")))
        clash = clobbered_inputs([(j.input, j.output) for j in accepted],
                                 any_extension=settings.format == "auto")
        for i in sorted(clash, reverse=True):
            job = accepted.pop(i)
            refused.append((Job(job.id, bid, job.input, None, state="failed"), ScopeDeniedError(
                f"output {job.output} would replace another input of this batch", path=job.input,
                stage="scope")))
        try:
            policy.capabilities.check_batch(len(msg["jobs"]), total_bytes)
        except CapabilityDeniedError as exc:
            refuse(exc)
            return
        batch = Batch(bid, identity, msg["priority"], msg["settings"], msg["in_place"], [])
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
        if self._executor.degraded_reason:
            self._event(batch, "degraded", reason=self._executor.degraded_reason)
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

    def _load_finished(self, batch_id: str) -> Batch | None:
        """A batch finished before this router started, rebuilt from the journal for replay."""
        row = self._journal.batch(batch_id)
        if row is None:
            return None
        batch = self._restore(row, self._journal.jobs(batch_id))
        return batch

    def _restore(self, row: dict, jobs: list[dict]) -> Batch:
        batch = Batch(row["id"], b"", row["priority"], row["settings"], bool(row["in_place"]), [])
        batch.owner = row["owner"]
        batch.paused = row["state"] == "paused"
        batch.cancelled = row["state"] == "cancelled"
        self._batches[batch.id] = batch
        for j in jobs:
            job = Job(j["id"], batch.id, j["input"], j["output"], attempt=j["attempts"],
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
    def _replaced(job: Job) -> bool:
        """An in-place input whose inode changed was already replaced by its optimised version."""
        if not job.expect:
            return False
        try:
            st = os.stat(job.input)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) != (job.expect["dev"], job.expect["ino"])

    def _cancel(self, batch: Batch) -> None:
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
                self._executor.abort(job)
        self._event(batch, "cancelled")
        self._maybe_finish(batch)

    def _pause(self, batch: Batch) -> None:
        batch.paused = True
        if self._journal is not None:
            self._journal.batch_state(batch.id, "paused")
        self._event(batch, "paused")

    def _resume(self, batch: Batch) -> None:
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
            **self._executor.describe(),
            "memory": {"budget": self._budget, "in_use": self._mem_in_use},
            "counters": dict(self.counters),
            "metrics": str_keys(self.metrics.snapshot()),
        }
