"""Image bytes for sidecars that cannot see the router's files (remote sidecars).

Owns reading an inline job's input — checked as a local read: the very file
(device, inode) approved at submit, never through a symlink, within
``max_input_bytes`` — and writing what the sidecar sent back, under this
router's checks: the folder approved at submit, and with ``format="auto"``
only a name the policy allowed. Both run on the router's worker threads.
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import ProtocolError, PyimgoptError, ScopeDeniedError
from ..files import EXTENSIONS, atomic_write, expected_parent, read_input
from ..manifest import COPIED_NOTE
from .model import Job

__all__ = ["read_inline", "write_back", "write_inline"]


def read_inline(path: str, limit: int, expect: dict | None) -> tuple[bytes, int]:
    """The input bytes for a sidecar that cannot see our files (checked as a local read)."""
    want = None if expect is None else (expect["dev"], expect["ino"])
    data, st = read_input(path, limit, expect=want)
    return data, st.st_mode


def write_inline(job: Job, in_place: bool, auto: bool, mode: int | None, result: dict,
                  data: bytes, dry_run: bool = False) -> dict:
    """Write what a remote sidecar sent back, under this router's checks; return the result.

    Nothing is written for a dry run, nor for an ``unchanged`` file unless the
    sidecar copied it (the input is an earlier output of these settings)."""
    result = dict(result)
    result["input"] = job.input
    if result.get("status") == "unchanged" and COPIED_NOTE not in (result.get("notes") or ()):
        result["output"] = result.get("output") or (job.input if in_place else job.output)
        return result
    if in_place:
        dst = job.input
    else:
        dst = job.output
        fmt_in, fmt_out = result.get("format_in"), result.get("format_out")
        if auto and fmt_out and fmt_out != fmt_in:
            if fmt_out not in EXTENSIONS:
                raise ProtocolError(f"unknown output format {fmt_out!r}", path=job.input, stage="protocol")
            dst = os.path.splitext(dst)[0] + EXTENSIONS[fmt_out]
            if job.outputs is not None and job.outputs.get(fmt_out) != dst:
                raise ScopeDeniedError(f"format auto chose {fmt_out.upper()}, but writing {dst} is not "
                                       "allowed (write scope, deny pattern or overwrite)",
                                       path=job.input, stage="write")
    if not (in_place and result.get("status") == "skipped") and not dry_run:
        parent, depth = expected_parent(job.expect)
        atomic_write(dst, data, mode=mode if in_place else None, expect_parent=parent, create_depth=depth)
    result["output"] = dst
    return result


def write_back(r: Any, job: Job, batch: Any, mode: int | None, result: dict, data: bytes) -> None:
    """Write the bytes a sidecar or worker sent back (:func:`write_inline`) on the
    router's offload threads, then end the job there: done, or failed without a
    retry. Shared by every executor whose jobs return their image as bytes."""
    job.state = "writing"
    r._offload.submit(write_inline, job, batch.in_place, batch.settings.get("format") == "auto",
                      mode, result, data, bool(batch.options.get("dry_run")),
                      then=lambda value, err: _written(r, job, value, err))


def _written(r: Any, job: Job, value: Any, err: BaseException | None) -> None:
    if job.state != "writing":  # cancelled or timed out meanwhile: already ended
        return
    job.state = "running"
    if err is None:
        r.job_done(job, value)
    elif isinstance(err, PyimgoptError):
        r.job_failed(job, err, retry=False)
    else:
        raise err
