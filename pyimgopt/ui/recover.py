"""The web UI's view of a batch a previous run left unfinished, learnt through the client.

Owns :func:`recovered_view`: which open batch to show again and what it is
— its files, settings, destination, flags — asked of the router with
:meth:`~pyimgopt.client.Client.status`, :meth:`~pyimgopt.client.Client.jobs`
and :meth:`~pyimgopt.client.Client.attach`. The router owns the journal; the
UI never opens it. Attaching moves a batch's events to this client, so the
session calls it only for a router nobody else submits to (see
:class:`~pyimgopt.ui.session.Session`).
"""

from __future__ import annotations

import os
import threading

from ..client import Client
from ..errors import PyimgoptError
from ..protocol import MAX_JOBS_PAGE
from ..security import Policy
from .forms import form_from_settings
from .rows import BatchView, Row, relative

__all__ = ["recovered_view"]


def recovered_view(client: Client, policy: Policy, stop: threading.Event | None = None) -> BatchView | None:
    """The newest unfinished batch the router holds as a view with a row per file,
    attached (its events replay the finished files), or None: no such batch, an
    older router, a batch with a file outside ``policy``'s read scope or one the
    router withheld as outside the connection's (``hidden``), one with an input
    that is not an absolute path, or ``stop`` set while listing. Never raises
    :class:`PyimgoptError` or a path error.

    The jobs are fetched a page at a time and kept as (id, input, output folder)
    until the rows are built. The scope check is on the paths as the router
    stored them — canonical since it resolved them at submit — with no per-file
    system call (what the UI later reads of a file is checked again then)."""
    try:
        open_ = [b for b in client.status()["batches"] if not b["finished"]]
        if not open_:
            return None
        bid = open_[-1]["batch"]
        head = client.jobs(bid, 0, MAX_JOBS_PAGE)
        page, jobs = head, []
        while True:
            if page["hidden"] or (stop is not None and stop.is_set()):
                return None
            for j in page["jobs"]:
                if not policy.read.matches(j["input"]):  # outside this UI's folders, or not an
                    return None  # absolute path (one the router refused and kept as given)
                jobs.append((j["id"], j["input"], os.path.dirname(j["output"]) if j["output"] else None))
            if page["next"] is None:
                break
            page = client.jobs(bid, page["next"], MAX_JOBS_PAGE)
        batch = client.attach(bid)
    except PyimgoptError:  # unreadable, or a router without batch_jobs: the batch still runs
        return None
    in_place = head["in_place"]
    try:
        outs = {o for _, _, o in jobs if o}
        out_dir = os.path.commonpath(list(outs)) if outs and not in_place else None
        base = os.path.commonpath(list({os.path.dirname(src) for _, src, _ in jobs})) if jobs else "/"
    except ValueError:  # an output path that is not absolute: the folder is not known
        out_dir, base = None, os.path.commonpath(list({os.path.dirname(src) for _, src, _ in jobs}))
    view = BatchView(batch, form_from_settings(head["settings"]), out_dir, in_place,
                     force=bool(head["options"].get("force")), dry_run=bool(head["options"].get("dry_run")))
    view.paused, view.cancelled = open_[-1]["paused"], open_[-1]["cancelled"]
    view.total = max(view.total, len(jobs))
    view.base = base
    below = base.rstrip("/") + "/"  # every input lies below the common folder: no relpath per file
    for jid, src, _ in jobs:  # every file shows from the start; the replayed events settle the finished
        if jid not in view.by_job:
            name = src[len(below):] if src.startswith(below) else relative(src, base)
            view.by_job[jid] = row = Row(len(view.rows), src, name, jid)
            view.rows.append(row)
    return view
