"""The web UI's view of a batch a previous run left unfinished, learnt through the client.

Owns :func:`recovered_view`: which open batch to show again and what it is
— its files, settings, destination, flags — asked of the router with
:meth:`~pyimgopt.client.Client.status`, :meth:`~pyimgopt.client.Client.jobs`
and :meth:`~pyimgopt.client.Client.attach`. The router owns the journal; the
UI never opens it.
"""

from __future__ import annotations

import os

from ..client import Client
from ..errors import PyimgoptError
from ..protocol import MAX_JOBS_PAGE
from ..security import Policy
from .forms import form_from_settings
from .rows import BatchView

__all__ = ["recovered_view"]


def recovered_view(client: Client, policy: Policy) -> tuple[BatchView, list[dict]] | None:
    """``(view, jobs)`` of the newest unfinished batch the router holds, attached
    (its events replay the finished files), or None: no such batch, an older
    router, or a batch with a file outside ``policy``'s read scope (or one the
    router withheld as outside the connection's) — not this UI's to show."""
    try:
        open_ = [b for b in client.status()["batches"] if not b["finished"]]
        if not open_:
            return None
        bid = open_[-1]["batch"]
        pages = [client.jobs(bid, 0, MAX_JOBS_PAGE)]
        while pages[-1]["next"] is not None:
            pages.append(client.jobs(bid, pages[-1]["next"], MAX_JOBS_PAGE))
    except PyimgoptError:  # unreadable, or a router without batch_jobs: the batch still runs
        return None
    head = pages[0]
    jobs = [j for page in pages for j in page["jobs"]]
    if any(page["hidden"] for page in pages) or not all(
            policy.read.matches(os.path.realpath(j["input"])) for j in jobs):
        return None
    try:
        batch = client.attach(bid)
    except PyimgoptError:
        return None
    in_place = head["in_place"]
    outs = [os.path.dirname(j["output"]) for j in jobs if j["output"]]
    view = BatchView(batch, form_from_settings(head["settings"]),
                     os.path.commonpath(outs) if outs and not in_place else None, in_place,
                     force=bool(head["options"].get("force")), dry_run=bool(head["options"].get("dry_run")))
    view.paused, view.cancelled = open_[-1]["paused"], open_[-1]["cancelled"]
    view.total = max(view.total, len(jobs))
    if jobs:
        view.base = os.path.commonpath([os.path.dirname(j["input"]) for j in jobs])
    return view, jobs
