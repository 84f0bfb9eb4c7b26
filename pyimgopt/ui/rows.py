"""The web UI's picture of one batch: a row per file and running totals.

Owns :class:`Row` (what the page shows for a file) and :class:`BatchView`
(the rows, the batch's flags, ``force`` and ``dry_run`` among them, and totals kept in O(1) per event by
:meth:`BatchView.settle`). The session fills them from the client's events.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

__all__ = ["Row", "BatchView", "FINAL", "relative"]

#: The statuses a file ends in.
FINAL = ("optimized", "skipped", "unchanged", "failed", "cancelled")
# the statuses whose bytes count in the totals: an ``unchanged`` file was written by an
# earlier run, so this run saved nothing on it (as the command line counts it)
_SAVED = ("optimized", "skipped")


def relative(path: str, base: str) -> str:
    """``path`` relative to ``base`` when it lies below it, else ``path`` unchanged."""
    try:
        rel = os.path.relpath(path, base)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


@dataclasses.dataclass
class Row:
    """One file of the batch as the page shows it."""

    idx: int
    input: str
    name: str = ""  # the input relative to the folder the batch was chosen from
    job: str | None = None
    output: str | None = None
    status: str = "queued"  # queued running retrying optimized skipped unchanged failed cancelled
    bytes_in: int | None = None
    bytes_out: int | None = None
    format_in: str | None = None
    format_out: str | None = None
    width: int | None = None
    height: int | None = None
    seconds: float | None = None
    ssim: float | None = None
    dry_run: bool = False  # nothing was written: the output fields say what a real run would write
    code: str | None = None
    message: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class BatchView:
    """One batch as the page sees it: its rows, flags and totals."""

    def __init__(self, batch, form: dict, out_dir: str | None, in_place: bool, *,
                 force: bool = False, dry_run: bool = False) -> None:
        self.batch = batch
        self.force = force
        self.dry_run = dry_run
        self.id = batch.id
        self.total = batch.total
        self.form = form
        self.out_dir = out_dir
        self.in_place = in_place
        self.base = "/"
        self.started = time.time()
        self.ended: float | None = None
        self.rows: list[Row] = []
        self.by_job: dict[str, Row] = {}
        self.paused = False
        self.cancelled = False
        self.finished = False
        self.counts = dict.fromkeys(FINAL, 0)
        self.bytes_in = 0
        self.bytes_out = 0

    def settle(self, r: Row, status: str) -> None:
        """Move ``r`` to ``status``, keeping the totals (O(1) per event, not per row)."""
        if r.status in FINAL:
            self.counts[r.status] -= 1
            if r.status in _SAVED:
                self.bytes_in -= r.bytes_in or 0
                self.bytes_out -= r.bytes_out or 0
        r.status = status
        if status in FINAL:
            self.counts[status] += 1
            if status in _SAVED:
                self.bytes_in += r.bytes_in or 0
                self.bytes_out += r.bytes_out or 0

    def summary(self) -> dict[str, Any]:
        c = self.counts
        return {
            "id": self.id, "total": self.total, "processed": sum(c.values()),
            "optimized": c["optimized"], "skipped": c["skipped"], "unchanged": c["unchanged"],
            "failed": c["failed"],
            "cancelled_files": c["cancelled"],
            "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
            "saved": self.bytes_in - self.bytes_out,
            "paused": self.paused, "cancelled": self.cancelled, "finished": self.finished,
            "elapsed": (self.ended or time.time()) - self.started,
            "out_dir": self.out_dir, "in_place": self.in_place, "settings": self.form,
            "force": self.force, "dry_run": self.dry_run,
        }
