"""The router's file-system checks of submitted and recovered jobs, off its thread.

Owns the authoritative per-job checks of a submit — UTF-8 names, an output
or ``in_place``, the connection's policy (canonical paths, scopes,
capabilities), the input's device and inode and the folder the write must
happen under, the other names ``format="auto"`` may write — the checks
across a batch (outputs that would replace another input, or each other),
the journal rows, and the analysis of a batch read back from the journal
(what is done, what must run again). These are pure functions of their
arguments plus the file system: they run on the router's worker threads
(:mod:`.offload`) and return :class:`~.model.Job` records the router's
thread then registers. Nothing here decodes an image; the only contents read
are those of an input the optimisation manifest already knows (by path, or
by size and then content hash: a copied output), hashed to answer
``unchanged`` at submit (:func:`pyimgopt.manifest.known_unchanged`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ..errors import CapabilityDeniedError, IOFailureError, PyimgoptError, ScopeDeniedError
from ..files import EXTENSIONS, parent_anchor, remove_stale_temps
from ..manifest import known_unchanged
from ..result import Result
from ..security import Policy, clobbered_inputs, printable_path, utf8_name
from .model import Job

__all__ = ["check_jobs", "finish_batch", "restore_jobs"]


def _auto_outputs(policy: Policy, inp: str, out: str) -> dict[str, str]:
    """The names ``format="auto"`` may write for ``out``, per format, each checked by ``policy``."""
    stem, ext = os.path.splitext(out)
    names = {}
    for fmt, suffix in EXTENSIONS.items():
        cand = stem + suffix
        if cand == out:
            names[fmt] = out
            continue
        try:
            names[fmt] = policy.check_output(cand, input=inp)
        except PyimgoptError:
            pass  # refused: the writer will refuse that format's name
    return names


def check_jobs(bid: str, start: int, specs: list[tuple[str, str | None]], policy: Policy,
               in_place: bool, auto: bool = False,
               hint: Callable[..., dict | None] | None = None) -> list[tuple[Job, PyimgoptError | None]]:
    """Check submitted ``(input, output)`` pairs ``start``, ``start + 1``, ... of batch ``bid``.

    Returns one ``(job, error)`` per pair: ``error`` None for an accepted
    job (canonical paths, ``expect`` with the input's device and inode and
    the anchor folder of the output, and ``known``, the manifest's
    ``hint(input, output, in_place=, auto=)`` when given), else the typed refusal.
    A job whose input the hint lists (hashed here, never decoded) and that needs
    nothing written gets its ``unchanged`` result in ``early``: it is never dispatched.
    """
    out: list[tuple[Job, PyimgoptError | None]] = []
    for i, (given_in, given_out) in enumerate(specs, start=start):
        jid = f"{bid}:{i + 1}"
        try:
            for what, name in (("input", given_in), ("output", given_out)):
                if name is not None and not utf8_name(name):
                    raise IOFailureError(f"{what} file name is not valid UTF-8: rename it",
                                         path=printable_path(name), stage="scope")
            if not in_place and given_out is None:
                raise ScopeDeniedError("no output path and in_place not set: refused",
                                       path=str(given_in), stage="scope")
            inp, dst = policy.check_job(given_in, given_out, in_place=in_place)
            if not in_place and (dst is None or dst == inp):
                raise CapabilityDeniedError("output is the input itself but in_place is not set",
                                            path=str(given_in), stage="scope")
            st = os.stat(inp)
            expect: dict[str, Any] = {"dev": st.st_dev, "ino": st.st_ino}
            if dst is not None:  # the folder the write must happen under
                anchor = parent_anchor(dst)
                if anchor is not None:
                    expect.update(parent_dev=anchor[0], parent_ino=anchor[1], parent_depth=anchor[2])
            job = Job(jid, bid, inp, None if in_place else dst, expect=expect, size=st.st_size)
            if auto and not in_place and dst is not None:
                job.outputs = _auto_outputs(policy, inp, dst)
            if hint is not None:
                job.known = hint(inp, job.output, in_place=in_place, auto=auto)
                if job.known is None and hasattr(hint, "by_content"):  # a copied or moved output
                    job.known = hint.by_content(inp, job.output, in_place=in_place, size=st.st_size,
                                                expect=expect)
                done = known_unchanged(inp, job.known, size=st.st_size, expect=expect)
                if done is not None:
                    job.early = done.to_dict()
            out.append((job, None))
        except PyimgoptError as exc:
            out.append((Job(jid, bid, printable_path(str(given_in)), None, state="failed"), exc))
        except OSError as exc:
            name = printable_path(str(given_in))
            out.append((Job(jid, bid, name, None, state="failed"),
                        ScopeDeniedError(f"cannot check input: {exc.strerror}", path=name, stage="scope")))
    return out


def finish_batch(bid: str, parts: list[list[tuple[Job, PyimgoptError | None]]], settings: dict):
    """Checks across the whole batch, then the journal rows.

    Refuses outputs that would replace another input of the batch, and (with
    ``format="auto"``, whose extension is chosen later) outputs that share a
    name without extension. Returns ``(jobs in order, {job id: error} of the
    refused, total input bytes of the accepted, journal rows)``.
    """
    auto = settings.get("format") == "auto"
    pairs = [pair for part in parts for pair in part]
    accepted = [(i, job) for i, (job, err) in enumerate(pairs) if err is None]
    refused: dict[str, PyimgoptError] = {job.id: err for job, err in pairs if err is not None}
    clash = clobbered_inputs([(job.input, job.output) for _, job in accepted], any_extension=auto)
    for k in clash:
        _, job = accepted[k]
        refused[job.id] = ScopeDeniedError(f"output {job.output} would replace another input of this batch",
                                           path=job.input, stage="scope")
    claimed: dict[str, str] = {}
    for _, job in accepted:
        if job.id in refused or job.output is None:
            continue
        key = os.path.splitext(job.output)[0] if auto else job.output
        if key in claimed:
            refused[job.id] = IOFailureError(f"output {job.output} would overwrite the output of "
                                             f"{claimed[key]}", path=job.input, stage="write")
        else:
            claimed[key] = job.input
    jobs: list[Job] = []
    rows: list[dict] = []
    total_bytes = 0
    for seq, (job, _) in enumerate(pairs):
        err = refused.get(job.id)
        if err is not None:
            job = Job(job.id, bid, job.input, None, state="failed")
            rows.append({"id": job.id, "seq": seq, "input": job.input, "output": None,
                         "status": "failed", "error": err.to_wire()})
        else:
            total_bytes += job.size
            rows.append({"id": job.id, "seq": seq, "input": job.input, "output": job.output,
                         "expect": job.expect, "status": "queued"})
        jobs.append(job)
    return jobs, refused, total_bytes, rows


def _replaced(job: Job) -> bool:
    """An in-place input whose inode changed was already replaced by its optimised version."""
    if not job.expect:
        return False
    try:
        st = os.stat(job.input)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) != (job.expect["dev"], job.expect["ino"])


def restore_jobs(row: dict, rows: list[dict], recover: bool,
                 policy: Policy | None = None,
                 hint: Callable[..., dict | None] | None = None) -> tuple[list[Job], list[tuple]]:
    """Rebuild a journaled batch's jobs; with ``recover``, decide what must run again.

    Done jobs stay done — unless their output vanished (then they run
    again); an in-place input already replaced (its inode changed) counts as
    done; what was running left no temporary file behind (the journal's
    owner is gone, and so are its writers). With ``format="auto"`` the names
    a job may write are checked again against ``policy`` (its owner's), and
    a job to run gets the manifest's ``hint`` as at submit.
    Returns the jobs and the journal updates these decisions need, as
    ``(method, *args)``.
    """
    in_place = bool(row["in_place"])
    unfinished = row["state"] != "done"
    jobs: list[Job] = []
    updates: list[tuple] = []
    for j in rows:
        job = Job(j["id"], row["id"], j["input"], j["output"], attempt=j["attempts"], expect=j["expect"])
        status = j["status"]
        if status == "done":
            job.state, job.result = "done", j["result"] or {}
            if recover and unfinished and not in_place:
                out = job.result.get("output")
                if out and not os.path.exists(out):  # the output vanished: do it again
                    job.state, job.result = "queued", None
                    updates.append(("job_queued", job.id))
        elif status in ("failed", "cancelled"):
            job.state, job.error = status, j["error"] or {}
        else:
            job.state = "queued"
            if recover and unfinished:
                target = job.input if in_place else job.output
                if status == "running" and target:
                    remove_stale_temps(target)  # the old owner's sidecars are gone with it
                    if row["settings"].get("format") == "auto":
                        stem = os.path.splitext(target)[0]
                        for ext in EXTENSIONS.values():
                            remove_stale_temps(stem + ext)
                if in_place and _replaced(job):
                    result = Result(input=job.input, output=job.input, status="optimized",
                                    notes=("replaced before the router restarted",)).to_dict()
                    job.state, job.result = "done", result
                    updates.append(("job_done", job.id, result))
                elif status == "running":
                    updates.append(("job_queued", job.id))
                if job.state == "queued":
                    try:  # its size orders the queue (largest first), as at submit
                        job.size = os.stat(job.input).st_size
                    except OSError:
                        pass  # the pipeline reports it when the job runs
                if (job.state == "queued" and policy is not None and not in_place and job.output
                        and row["settings"].get("format") == "auto"):
                    job.outputs = _auto_outputs(policy, job.input, job.output)
                if job.state == "queued" and hint is not None:
                    job.known = hint(job.input, job.output, in_place=in_place,
                                     auto=row["settings"].get("format") == "auto")
        jobs.append(job)
    return jobs, updates
