"""The journal: the router's crash-safe record of batches and jobs (SQLite, WAL).

Owns the schema and every write the router makes about work: a batch and its
jobs are stored in one transaction that is durable (``synchronous=FULL``)
before the submit is acknowledged, jobs refused at submit already as
``failed``; job transitions (running with its attempt, done with its result,
failed with its error) follow in WAL mode, grouped into transactions by
:class:`JournalWriter` off the router's thread. Order of truth: an output is
written and fsynced first, the row says done after, so a crash in between
only causes a safe re-run. It is also what ``resume`` and ``status`` read,
and it prunes finished batches by age.

One journal, one owner: a writable :class:`Journal` holds an exclusive lock
on its folder (``journal.lock``, released when the process ends, however it
ends); a second writer gets :class:`JournalBusyError`. A second ``pyimgopt
optimize`` on the same state folder therefore keeps its own private journal
in ``runs/`` (:func:`open_journal`), and every journal of a state folder is
found by :func:`journal_folders`. Files are private to the user: the folder
0700 when created here, the database, its WAL and the lock 0600.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import queue
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from .errors import IOFailureError

__all__ = ["Journal", "JournalBusyError", "JournalWriter", "default_state_dir", "JOURNAL_NAME",
           "LOCK_NAME", "RUNS_DIR", "open_journal", "journal_folders", "find_batch", "holder",
           "prune_runs"]

JOURNAL_NAME = "journal.sqlite3"
LOCK_NAME = "journal.lock"
#: Sub-folder of a state folder holding the private journals of runs that
#: found the main one in use.
RUNS_DIR = "runs"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY,
    owner TEXT,
    priority INTEGER NOT NULL,
    settings TEXT NOT NULL,
    in_place INTEGER NOT NULL,
    state TEXT NOT NULL,            -- active | paused | cancelled | done
    created REAL NOT NULL,
    finished REAL,
    options TEXT                    -- JSON: force, dry_run
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


class JournalBusyError(IOFailureError):
    """Another process owns this journal (holds its folder's lock).

    ``holder`` is that process's pid when it could be read, else None.
    """

    def __init__(self, message: str, holder: int | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.holder = holder


def default_state_dir() -> str:
    """The user's state folder for pyimgopt (platformdirs), e.g. ~/.local/state/pyimgopt."""
    import platformdirs

    return platformdirs.user_state_dir("pyimgopt")


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _private_file(path: str) -> None:
    """Create ``path`` 0600 if missing; make an existing one of ours 0600."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0),
                 0o600)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def _read_pid(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as fh:
            return int(fh.read().strip() or 0) or None
    except (OSError, ValueError):
        return None


def _take_lock(state_dir: str) -> int:
    """Hold ``state_dir``'s exclusive lock; return its descriptor (close it to release)."""
    path = os.path.join(state_dir, LOCK_NAME)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0),
                 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise IOFailureError(f"cannot lock the journal in {state_dir}: {exc.strerror}",
                                 stage="journal") from None
        pid = _read_pid(path)
        who = f" (pid {pid})" if pid else ""
        raise JournalBusyError(f"the journal in {state_dir} is in use by another pyimgopt process{who}",
                               holder=pid, stage="journal") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode("ascii"))
    return fd


def holder(state_dir: str | os.PathLike) -> int | None:
    """The pid holding ``state_dir``'s journal lock, 0 if held but unreadable, None if free."""
    path = os.path.join(os.fspath(state_dir), LOCK_NAME)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return _read_pid(path) or 0
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


class Journal:
    """One router's journal in ``state_dir`` (created 0700 if missing).

    Only its owner writes it: a writable journal takes the folder's lock
    (:class:`JournalBusyError` if another process holds it) until
    :meth:`close` or the end of the process. ``status`` may open it
    read-only (``readonly=True``) while the owner runs. The connection may
    be used from one thread at a time (the router hands writes to
    :class:`JournalWriter`).
    """

    def __init__(self, state_dir: str | os.PathLike, *, readonly: bool = False) -> None:
        state_dir = os.fspath(state_dir)
        self.folder = state_dir
        self.path = os.path.join(state_dir, JOURNAL_NAME)
        self._lock_fd: int | None = None
        if readonly:
            uri = f"file:{self.path}?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=10,
                                       check_same_thread=False)
        else:
            os.makedirs(state_dir, mode=0o700, exist_ok=True)
            self._lock_fd = _take_lock(state_dir)
            try:
                # SQLite gives the WAL and shared-memory files the database's mode.
                _private_file(self.path)
                self._db = sqlite3.connect(self.path, isolation_level=None, timeout=10,
                                           check_same_thread=False)
            except BaseException:
                os.close(self._lock_fd)
                raise
            # Pages freed by pruning go back to the file system (set before the
            # first table exists; a no-op on an existing journal).
            self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
            cols = {r[1] for r in self._db.execute("PRAGMA table_info(batches)")}
            if "options" not in cols:  # a journal made before batch options existed
                self._db.execute("ALTER TABLE batches ADD COLUMN options TEXT")
        self._db.row_factory = sqlite3.Row

    def close(self) -> None:
        """Close the database (a WAL checkpoint happens on the last close) and release the lock."""
        self._db.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    @contextlib.contextmanager
    def transaction(self, *, durable: bool = False) -> Iterator[None]:
        """Run the enclosed writes as one transaction (nested uses join the outer one).

        ``durable=True`` makes this commit wait for the disk (``synchronous=FULL``).
        """
        db = self._db
        if db.in_transaction:
            yield
            return
        if durable:
            db.execute("PRAGMA synchronous=FULL")
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        finally:
            if durable:
                db.execute("PRAGMA synchronous=NORMAL")

    # -- writes (router only) ---------------------------------------------------------

    def add_batch(self, batch: str, owner: str | None, priority: int, settings: dict,
                  in_place: bool, jobs: list[dict], options: dict | None = None) -> None:
        """Store a batch and its jobs in one durable transaction.

        ``options`` are the batch's run options (``force``, ``dry_run``), kept
        so a resumed batch runs as it was asked to.

        Each job dict: ``id, seq, input, output, expect, status`` and, for a
        job refused at submit (``status="failed"``), ``error``. Returns only
        once the rows are on disk (``synchronous=FULL`` for this commit).
        """
        now = time.time()
        db = self._db
        with self.transaction(durable=True):
            db.execute(
                "INSERT INTO batches(id, owner, priority, settings, in_place, state, created, options)"
                " VALUES (?, ?, ?, ?, ?, 'active', ?, ?)",
                (batch, owner, priority, _dumps(settings), int(in_place), now, _dumps(options or None)),
            )
            db.executemany(
                "INSERT INTO jobs(id, batch, seq, input, output, expect, status, error, updated)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                ((j["id"], batch, j["seq"], j["input"], j.get("output"), _dumps(j.get("expect")),
                  j["status"], _dumps(j.get("error")), now) for j in jobs),
            )

    # One SQL statement and its parameters per job transition: the writer applies
    # a run of the same transition as one ``executemany`` (:meth:`apply_many`).
    _JOB_SQL = {
        "job_running": "UPDATE jobs SET status='running', attempts=?, updated=? WHERE id=?",
        "job_queued": "UPDATE jobs SET status='queued', updated=? WHERE id=?",
        "job_done": "UPDATE jobs SET status='done', result=?, error=NULL, updated=? WHERE id=?",
        "job_failed": "UPDATE jobs SET status=?, error=?, updated=? WHERE id=?",
    }

    @staticmethod
    def _job_params(method: str, args: tuple, now: float) -> tuple:
        if method == "job_running":
            job, attempt = args
            return attempt, now, job
        if method == "job_queued":
            (job,) = args
            return now, job
        if method == "job_done":
            job, result = args
            return _dumps(result), now, job
        job, error, *rest = args  # job_failed
        return ("cancelled" if rest and rest[0] else "failed"), _dumps(error), now, job

    def job_running(self, job: str, attempt: int) -> None:
        """Record that ``job`` runs its ``attempt``-th attempt."""
        self.apply_many("job_running", [(job, attempt)])

    def job_queued(self, job: str) -> None:
        """Record that ``job`` waits in the queue again (a retry)."""
        self.apply_many("job_queued", [(job,)])

    def job_done(self, job: str, result: dict) -> None:
        """Record a finished job (after its output is durably written)."""
        self.apply_many("job_done", [(job, result)])

    def job_failed(self, job: str, error: dict, cancelled: bool = False) -> None:
        """Record a failed (or, with ``cancelled``, cancelled) job and its error."""
        self.apply_many("job_failed", [(job, error, cancelled)])

    def apply_many(self, method: str, calls: list[tuple]) -> None:
        """Apply several calls of one job transition (``job_running``, ``job_queued``,
        ``job_done``, ``job_failed``; each tuple the arguments of one call) as one
        ``executemany``: the same rows as one call each, for less work."""
        now = time.time()
        self._db.executemany(self._JOB_SQL[method], [self._job_params(method, a, now) for a in calls])

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
            b["options"] = _loads(b.get("options")) or {}
            b["jobs"] = self.jobs(b["id"])
            out.append(b)
        return out

    def batch(self, batch: str) -> dict | None:
        row = self._db.execute("SELECT * FROM batches WHERE id=?", (batch,)).fetchone()
        if row is None:
            return None
        b = dict(row)
        b["settings"] = _loads(b["settings"])
        b["options"] = _loads(b.get("options")) or {}
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

    def load_batch(self, batch: str) -> tuple[dict, list[dict]] | None:
        """``(batch row, its job rows)``, or None when the journal does not hold it."""
        row = self.batch(batch)
        if row is None:
            return None
        return row, self.jobs(batch)

    def jobs_page(self, batch: str, offset: int, limit: int) -> tuple[dict, int, list[dict]] | None:
        """``(batch row, its job count, up to limit job rows from position offset)``
        in submit order, or None when the journal does not hold the batch."""
        row = self.batch(batch)
        if row is None:
            return None
        (total,) = self._db.execute("SELECT COUNT(*) FROM jobs WHERE batch=?", (batch,)).fetchone()
        rows = self._db.execute("SELECT id, input, output, status, result, error FROM jobs WHERE batch=?"
                                " ORDER BY seq LIMIT ? OFFSET ?", (batch, limit, offset))
        return row, total, [{**dict(r), "result": _loads(r["result"]), "error": _loads(r["error"])}
                            for r in rows]

    def has_batch(self, batch: str) -> bool:
        """Whether this journal holds ``batch``."""
        return self._db.execute("SELECT 1 FROM batches WHERE id=?", (batch,)).fetchone() is not None


class JournalWriter:
    """Applies a journal's writes on a thread of its own, in order, in groups.

    The router's thread only queues (:meth:`call`); a group of queued calls
    becomes one transaction (durable when it holds an ``add_batch``), so a
    flood of job transitions costs one commit per group, not one each: when
    nobody waits for an answer, the writer lets calls gather for
    :attr:`GATHER` seconds before it commits, and a run of job transitions
    becomes one ``executemany`` per kind. ``then(value, error)`` runs
    through ``deliver`` — the router passes a function that hands it back to
    its own thread — after the group committed (``error`` is the exception
    when the call or the commit failed); a call with a ``then`` is handed
    over and committed without the gathering delay. Reads (``batch``,
    ``jobs``) go through here too: the connection is used by this thread
    alone.
    """

    GROUP = 5000
    #: Seconds job transitions may wait on the writer's thread for more to
    #: join their transaction (nobody waits for them; the output they record
    #: is already on disk, so a crash in that window only re-runs the job).
    GATHER = 0.05

    def __init__(self, journal: Journal, deliver: Callable[[Callable[[], None]], None]) -> None:
        self.journal = journal
        self._deliver = deliver
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._pending: list = []
        self._waited = False  # a queued call has a ``then``: hand it over at the next flush
        self._urgent = threading.Event()  # a handed-over call waits for its answer: commit now
        self._flushed = 0.0
        self._thread = threading.Thread(target=self._run, name="pyimgopt-journal", daemon=True)
        self._thread.start()

    def call(self, method: str, *args: Any,
             then: Callable[[Any, BaseException | None], None] | None = None) -> None:
        """Queue ``journal.method(*args)``; never blocks. Handed to the writer's
        thread at the next :meth:`flush` (one hand-over for many calls)."""
        self._pending.append((method, args, then))
        if then is not None or method == "add_batch":
            self._waited = True

    def flush(self, *, every: float = 0.0) -> None:
        """Hand the calls queued since the last flush to the writer's thread.

        With ``every``, only when that many seconds passed since the last
        hand-over, or a caller waits for an answer, or many calls are queued:
        fewer, bigger hand-overs cost the caller's thread less.
        """
        if not self._pending:
            return
        now = time.monotonic()
        if every and now - self._flushed < every and len(self._pending) < self.GROUP and not self._waited:
            return
        self._flushed = now
        self._q.put(self._pending)
        self._pending = []
        if self._waited:
            self._waited = False
            self._urgent.set()

    def close(self, timeout: float = 30.0) -> None:
        """Apply what is queued, stop the thread and close the journal."""
        self.flush()
        self._q.put(None)
        self._urgent.set()
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self.journal.close()

    def _run(self) -> None:
        stop = False
        while not stop:
            item = self._q.get()
            if item is None:
                break
            if not any(then is not None or m == "add_batch" for m, _, then in item):
                self._urgent.wait(self.GATHER)  # nobody waits: let more join this transaction
            self._urgent.clear()
            group = list(item)
            while len(group) < self.GROUP:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                group.extend(nxt)
            self._apply(group)

    def _apply(self, group: list) -> None:
        done: list[tuple[Callable | None, Any, BaseException | None]] = []
        try:
            with self.journal.transaction(durable=any(m == "add_batch" for m, _, _ in group)):
                run: list = []  # job transitions nobody waits for, not applied yet
                for call in group:
                    if call[2] is None and call[0] in _MANY:
                        run.append(call)
                        continue
                    self._apply_run(run, done)
                    run = []
                    self._apply_one(call, done)
                self._apply_run(run, done)
        except BaseException as exc:  # the commit itself failed: nothing of the group holds
            done = [(then, None, exc) for _, _, then in group]
        for then, value, err in done:
            if then is not None:
                self._deliver(lambda then=then, value=value, err=err: then(value, err))

    def _apply_one(self, call: tuple, done: list) -> None:
        method, args, then = call
        try:
            done.append((then, getattr(self.journal, method)(*args), None))
        except (sqlite3.Error, ValueError) as exc:  # this statement only
            done.append((then, None, exc))

    def _apply_run(self, run: list, done: list) -> None:
        """Apply a run of job transitions: one ``executemany`` per kind, in lifecycle
        order (running, queued, done, failed), when that gives every job the state
        its calls in order give it; one by one otherwise."""
        if len(run) < 2:
            for call in run:
                self._apply_one(call, done)
            return
        kinds: dict[str, list[tuple]] = {}
        for method, args, _ in run:
            kinds.setdefault(method, []).append(args)
        # A job's last transition is done or failed, each at most once, and no
        # job goes from done or failed anywhere. Only "queued" and "running" may
        # come in either order (a retry; a job requeued at recovery, then
        # dispatched): then the order of the calls decides.
        if "job_queued" in kinds and "job_running" in kinds:
            queued = {a[0] for a in kinds["job_queued"]}
            if any(a[0] in queued for a in kinds["job_running"]):
                for call in run:
                    self._apply_one(call, done)
                return
        for method in ("job_running", "job_queued", "job_done", "job_failed"):
            calls = kinds.get(method)
            if not calls:
                continue
            try:
                self.journal.apply_many(method, calls)
            except (sqlite3.Error, ValueError):  # one of them is bad: the others still hold
                for args in calls:
                    self._apply_one((method, args, None), done)


#: Journal calls the writer may apply as one ``executemany`` when several follow each other.
_MANY = frozenset(Journal._JOB_SQL)


def open_journal(state_dir: str | os.PathLike, *, private_if_busy: bool = False) -> Journal:
    """Open ``state_dir``'s journal as its owner.

    When another process owns it and ``private_if_busy`` is set, open a new
    private journal in ``state_dir/runs/`` instead (found again by
    :func:`journal_folders`); otherwise :class:`JournalBusyError`.
    """
    state_dir = os.fspath(state_dir)
    try:
        return Journal(state_dir)
    except JournalBusyError:
        if not private_if_busy:
            raise
    runs = os.path.join(state_dir, RUNS_DIR)
    os.makedirs(runs, mode=0o700, exist_ok=True)
    name = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    return Journal(os.path.join(runs, name))


def journal_folders(state_dir: str | os.PathLike) -> list[str]:
    """Every folder of ``state_dir`` holding a journal: the main one, then ``runs/*`` by age."""
    state_dir = os.fspath(state_dir)
    found = [state_dir] if os.path.exists(os.path.join(state_dir, JOURNAL_NAME)) else []
    runs = os.path.join(state_dir, RUNS_DIR)
    try:
        names = sorted(os.listdir(runs))
    except OSError:
        names = []
    for name in names:
        folder = os.path.join(runs, name)
        if os.path.exists(os.path.join(folder, JOURNAL_NAME)):
            found.append(folder)
    return found


def find_batch(state_dir: str | os.PathLike, batch: str) -> str | None:
    """The folder of the journal that holds ``batch``, or None."""
    for folder in journal_folders(state_dir):
        try:
            j = Journal(folder, readonly=True)
        except sqlite3.Error:
            continue
        try:
            if j.has_batch(batch):
                return folder
        except sqlite3.Error:
            continue
        finally:
            j.close()
    return None


def prune_runs(state_dir: str | os.PathLike, older_than: float) -> int:
    """Prune the private journals in ``state_dir/runs`` nobody owns; remove the empty ones.

    Returns how many folders were removed. A journal still holding an
    unfinished batch stays (``resume`` needs it), as does one in use.
    """
    removed = 0
    for folder in journal_folders(state_dir):
        if os.path.dirname(folder) != os.path.join(os.fspath(state_dir), RUNS_DIR):
            continue
        try:
            j = Journal(folder)
        except (JournalBusyError, sqlite3.Error, OSError):
            continue
        try:
            j.prune(older_than)
            empty = not j.summary(limit=1)
        finally:
            j.close()
        if empty:
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed
