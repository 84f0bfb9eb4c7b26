"""One pyimgopt job as a Dask task: what a Dask worker runs for the router.

Owns :func:`run_job`, the function the router's Dask executor submits for
each job: the same pipeline call a ZeroMQ sidecar makes, by path (the worker
sees the router's files: the input must be the very file — device, inode —
the router approved, written through the checked folder) or by bytes (the
worker sees nothing of ours: image bytes in, output bytes out, the router
writes). It never raises for a job's own failure: the outcome comes back as
plain data — ``{"result": ...}`` (with ``"data"`` in bytes mode) or
``{"error": ...}`` in the wire's dict forms — so Dask's own errors (a worker
lost, a task cancelled) are the only exceptions the router sees.

When the spec names a ``topic``, the task also tells the router through
Dask's event stream (``Worker.log_event``, which reaches the router's
client before Dask hears the task finished): ``{"kind": "start"}`` when it
starts running (the router's lease starts then), and in path mode its
outcome, ``{"kind": "outcome", "reply": ...}`` — so the router has it even
if this worker dies before the result is fetched, and Dask need never run
the task again (a rerun of an in-place job would find its input already
replaced). In between, the stages a pool sidecar reports (decode, resize,
encode) as ``{"kind": "progress", "stage": ...}``, under the pool's rule: only
once the job has run ``progress_after`` seconds (the spec's, else the pool's
:data:`PROGRESS_AFTER`), so a quick job sends none. Every event is best
effort: one that is lost changes nothing but what a client is shown.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

from pyimgopt import protocol
from pyimgopt.errors import InternalError, PyimgoptError
from pyimgopt.pipeline import optimize_bytes, optimize_file

from .worker import _REPORTED_STAGES, PROGRESS_AFTER

__all__ = ["run_job", "PROGRESS_AFTER"]


def _tell(spec: dict[str, Any], kind: str, **fields: Any) -> None:
    """Log an event for the router (best effort: never fails the job)."""
    topic = spec.get("topic")
    if not topic:
        return
    try:
        from distributed import get_worker

        get_worker().log_event(topic, {"kind": kind, "job": spec.get("job"), "attempt": spec.get("attempt"),
                                       "send": spec.get("send"), **fields})
    except Exception:  # not on a worker (a direct call), or the worker is closing
        pass


def run_job(spec: dict[str, Any], data: bytes | None = None) -> dict[str, Any]:
    """Run one job; return ``{"result": dict[, "data": bytes]}`` or ``{"error": dict}``.

    ``spec`` holds ``settings`` (wire dict), ``in_place``, the optimisation
    manifest's ``known`` hint, ``force`` and ``dry_run``, and for a path
    job ``input``, ``output``, ``expect``, ``outputs`` as the router checked
    them. ``data`` given: a bytes job (the router reads and writes).
    ``topic``, ``job``, ``attempt`` and ``send`` (the router's number for
    this send of the job's task: a job requeued and sent again keeps its
    attempt), when given, name the events the task logs for the router (see
    the module's docstring);
    ``progress_after`` overrides :data:`PROGRESS_AFTER` for its stage events.
    """
    path = spec.get("input")
    _tell(spec, "start")
    reply = _run(spec, data, path, _progress(spec))
    if data is None:
        _tell(spec, "outcome", reply=reply)
    return reply


def _progress(spec: dict[str, Any]) -> Callable[[str], None] | None:
    """The pipeline's ``progress`` hook: tells the router the stages a pool sidecar reports,
    once the job has run ``progress_after`` seconds (None: no topic, nobody listens)."""
    if not spec.get("topic"):
        return None
    after = spec.get("progress_after")
    after = PROGRESS_AFTER if after is None else float(after)
    started = time.monotonic()

    def progress(stage: str) -> None:
        if stage in _REPORTED_STAGES and time.monotonic() - started >= after:
            _tell(spec, "progress", stage=stage)

    return progress


def _run(spec: dict[str, Any], data: bytes | None, path: str | None,
         progress: Callable[[str], None] | None) -> dict[str, Any]:
    try:
        settings = protocol.unpack_settings(spec["settings"])
        known, force, dry_run = spec.get("known"), bool(spec.get("force")), bool(spec.get("dry_run"))
        if data is not None:
            out, result = optimize_bytes(data, settings, in_place=bool(spec.get("in_place")),
                                         known=known, force=force, progress=progress)
            if dry_run:  # the router writes nothing for it (write_inline)
                result = dataclasses.replace(result, dry_run=True)
        else:
            dst = None if spec.get("in_place") else spec["output"]
            result = optimize_file(path, dst, settings, expect=spec.get("expect"),
                                   outputs=spec.get("outputs"), known=known, force=force,
                                   dry_run=dry_run, progress=progress)
            out = None
        if result.error is not None:
            return {"error": protocol.pack_error(result.error)}
        reply: dict[str, Any] = {"result": protocol.pack_result(result)}
        if data is not None:
            reply["data"] = out
        return reply
    except PyimgoptError as exc:
        return {"error": protocol.pack_error(exc)}
    except Exception as exc:  # a bug: reported like a sidecar reports one
        return {"error": protocol.pack_error(
            InternalError(f"{type(exc).__name__}: {exc}", path=path, stage="sidecar"))}
