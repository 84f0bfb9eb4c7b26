"""The journal: the router's crash-safe record of batches and jobs (SQLite, WAL).

Owns the schema and every write the router makes about work: a batch and its
jobs are stored in one transaction that is durable (``synchronous=FULL``)
before the submit is acknowledged; job transitions (running with its
attempt, done with its result, failed with its error) follow in WAL mode.
Order of truth: an output is written and fsynced first, the row says done
after, so a crash in between only causes a safe re-run. It is also what
``resume`` and ``status`` read, and it prunes finished batches by age.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from typing import Any

__all__ = ["Journal", "default_state_dir", "JOURNAL_NAME"]

JOURNAL_NAME = "journal.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY,
    owner TEXT,
    priority INTEGER NOT NULL,
    settings TEXT NOT NULL,
    in_place INTEGER NOT NULL,
    state TEXT NOT NULL,            -- active | paused | cancelled | done
    created REAL NOT NULL,
    finished REAL
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    batch TEXT NOT NULL REFERENCES batches(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    input TEXT NOT NULL,
    output TEXT,
    expect TEXT,
    status TEXT NOT NULL,           -- queued | running | done | failed | cancelled
    attempts INTEGER NOT NULL DEFAULT 0,
    result TEXT,
    error TEXT,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_batch ON jobs(batch, seq);
CREATE INDEX IF NOT EXISTS batches_by_state ON batches(state, finished);
"""


def default_state_dir() -> str:
    """The user's state folder for pyimgopt (platformdirs), e.g. ~/.local/state/pyimgopt."""
    import platformdirs

    return platformdirs.user_state_dir("pyimgopt")


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


class Journal:
    """One router's journal in ``state_dir`` (created 0700 if missing).

    Only the router writes it; ``status`` may open it read-only
    (``readonly=True``) while the router runs.
    """

    def __init__(self, state_dir: str | os.PathLike, *, readonly: bool = False) -> None:
        state_dir = os.fspath(state_dir)
        self.path = os.path.join(state_dir, JOURNAL_NAME)
        if readonly:
            uri = f"file:{self.path}?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=10,
                                       check_same_thread=False)
        else:
            os.makedirs(state_dir, mode=0o700, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=10,
                                       check_same_thread=False)
            # Pages freed by pruning go back to the file system (set before the
            # first table exists; a no-op on an existing journal).
            self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
        self._db.row_factory = sqlite3.Row

    def close(self) -> None:
        """Close the database (a WAL checkpoint happens on the last close)."""
        self._db.close()

    # -- writes (router only) ---------------------------------------------------------

    def add_batch(self, batch: str, *, owner: str | None, priority: int, settings: dict,
                  in_place: bool, jobs: list[dict]) -> None:
        """Store a batch and its jobs in one durable transaction.

        Each job dict: ``id, seq, input, output, expect, status`` and, for a
        job refused at submit, ``error``. Returns only once the rows are on
        disk (``synchronous=FULL`` for this commit).
        """
        now = time.time()
        db = self._db
        db.execute("PRAGMA synchronous=FULL")
        try:
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                "INSERT INTO batches(id, owner, priority, settings, in_place, state, created)"
                " VALUES (?, ?, ?, ?, ?, 'active', ?)",
                (batch, owner, priority, _dumps(settings), int(in_place), now),
            )
            db.executemany(
                "INSERT INTO jobs(id, batch, seq, input, output, expect, status, error, updated)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(j["id"], batch, j["seq"], j["input"], j.get("output"), _dumps(j.get("expect")),
                  j["status"], _dumps(j.get("error")), now) for j in jobs],
            )
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.execute("PRAGMA synchronous=NORMAL")

    def job_running(self, job: str, attempt: int) -> None:
        self._db.execute("UPDATE jobs SET status='running', attempts=?, updated=? WHERE id=?",
                         (attempt, time.time(), job))

    def job_queued(self, job: str) -> None:
        self._db.execute("UPDATE jobs SET status='queued', updated=? WHERE id=?", (time.time(), job))

    def job_done(self, job: str, result: dict) -> None:
        """Record a finished job (after its output is durably written)."""
        self._db.execute("UPDATE jobs SET status='done', result=?, error=NULL, updated=? WHERE id=?",
                         (_dumps(result), time.time(), job))

    def job_failed(self, job: str, error: dict, *, cancelled: bool = False) -> None:
        self._db.execute("UPDATE jobs SET status=?, error=?, updated=? WHERE id=?",
                         ("cancelled" if cancelled else "failed", _dumps(error), time.time(), job))

    def batch_state(self, batch: str, state: str) -> None:
        """Set a batch's state: active, paused, cancelled or done."""
        finished = time.time() if state in ("done",) else None
        self._db.execute("UPDATE batches SET state=?, finished=COALESCE(?, finished) WHERE id=?",
                         (state, finished, batch))

    def prune(self, older_than: float) -> int:
        """Delete batches finished more than ``older_than`` seconds ago; return how many."""
        cutoff = time.time() - older_than
        cur = self._db.execute("DELETE FROM batches WHERE state='done' AND finished < ?", (cutoff,))
        if cur.rowcount:
            self._db.execute("PRAGMA incremental_vacuum")
        return cur.rowcount

    # -- reads ------------------------------------------------------------------------

    def unfinished(self) -> list[dict]:
        """Batches not done, each with its jobs (for recovery at router start)."""
        out = []
        for row in self._db.execute("SELECT * FROM batches WHERE state != 'done' ORDER BY created"):
            b = dict(row)
            b["settings"] = _loads(b["settings"])
            b["jobs"] = self.jobs(b["id"])
            out.append(b)
        return out

    def batch(self, batch: str) -> dict | None:
        row = self._db.execute("SELECT * FROM batches WHERE id=?", (batch,)).fetchone()
        if row is None:
            return None
        b = dict(row)
        b["settings"] = _loads(b["settings"])
        return b

    def jobs(self, batch: str) -> list[dict]:
        rows = self._db.execute("SELECT * FROM jobs WHERE batch=? ORDER BY seq", (batch,))
        out = []
        for row in rows:
            j = dict(row)
            for key in ("expect", "result", "error"):
                j[key] = _loads(j[key])
            out.append(j)
        return out

    def summary(self, batch: str | None = None, limit: int = 50) -> list[dict]:
        """Batches with their job counts by status, newest first."""
        where, args = ("WHERE b.id=?", (batch,)) if batch else ("", ())
        rows = self._db.execute(
            f"SELECT b.id, b.state, b.priority, b.created, b.finished, b.in_place,"
            f" COUNT(j.id) AS total,"
            f" SUM(j.status='done') AS done, SUM(j.status='failed') AS failed,"
            f" SUM(j.status='cancelled') AS cancelled,"
            f" SUM(j.status IN ('queued','running')) AS pending"
            f" FROM batches b LEFT JOIN jobs j ON j.batch=b.id {where}"
            f" GROUP BY b.id ORDER BY b.created DESC LIMIT ?", (*args, limit))
        return [{k: (v or 0) if k in ("done", "failed", "cancelled", "pending", "total") else v
                 for k, v in dict(r).items()} for r in rows]

    def size_bytes(self) -> int:
        """Bytes on disk: the database plus its WAL."""
        total = 0
        for suffix in ("", "-wal", "-shm"):
            try:
                total += os.path.getsize(self.path + suffix)
            except OSError:
                pass
        return total
