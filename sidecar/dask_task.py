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
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pyimgopt import protocol
from pyimgopt.errors import InternalError, PyimgoptError
from pyimgopt.pipeline import optimize_bytes, optimize_file

__all__ = ["run_job"]


def run_job(spec: dict[str, Any], data: bytes | None = None) -> dict[str, Any]:
    """Run one job; return ``{"result": dict[, "data": bytes]}`` or ``{"error": dict}``.

    ``spec`` holds ``settings`` (wire dict), ``in_place``, the optimisation
    manifest's ``known`` hint, ``force`` and ``dry_run``, and for a path
    job ``input``, ``output``, ``expect``, ``outputs`` as the router checked
    them. ``data`` given: a bytes job (the router reads and writes).
    """
    path = spec.get("input")
    try:
        settings = protocol.unpack_settings(spec["settings"])
        known, force, dry_run = spec.get("known"), bool(spec.get("force")), bool(spec.get("dry_run"))
        if data is not None:
            out, result = optimize_bytes(data, settings, in_place=bool(spec.get("in_place")),
                                         known=known, force=force)
            if dry_run:  # the router writes nothing for it (write_inline)
                result = dataclasses.replace(result, dry_run=True)
        else:
            dst = None if spec.get("in_place") else spec["output"]
            result = optimize_file(path, dst, settings, expect=spec.get("expect"),
                                   outputs=spec.get("outputs"), known=known, force=force,
                                   dry_run=dry_run)
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
