"""The optimisation manifest: what made each output, so a re-run skips what is done.

Owns the content hash (128-bit BLAKE3, :func:`content_hash`), the settings
key (:func:`settings_key`: pyimgopt's version, the hash's name and every
setting that can change an output), and the store: one SQLite database (WAL)
beside the journal, ``manifest.sqlite3`` in the state folder, shared by every
router using that folder (concurrent ``pyimgopt optimize`` runs, the web UI,
``pyimgopt watch``): SQLite's own locking serialises their short writes, and
readers never wait. A row says: this input (path and hash), under this
settings key, became this output (path, hash, size, mtime and inode as
written, and the result's figures).

The router turns rows into a job's ``known`` hint (:meth:`Manifest.hint`,
paths only — it never reads an image): the content hashes that mean "already
done". The sidecar's pipeline, which reads the input anyway, hashes it and
answers ``unchanged`` without decoding when the hash is listed
(:func:`match`). Writes go through :class:`ManifestWriter`, a thread that
groups them, after the output is written. Nothing here imports the router,
the client or the pipeline.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import queue
import sqlite3
import threading
import time

from ._version import __version__
from .errors import PyimgoptError
from .files import read_input
from .result import Result
from .settings import LIMIT_FIELDS, Settings

__all__ = ["HASH_NAME", "MANIFEST_NAME", "COPIED_NOTE", "raw_hash", "content_hash", "settings_key", "marker_key", "match",
           "Manifest", "ManifestWriter", "Hinter", "known_unchanged", "record_of", "RECORDED_STATUSES"]

MANIFEST_NAME = "manifest.sqlite3"

try:  # the blake3 wheel (SIMD, ~GB/s); BLAKE2b where it is missing: a different key
    import blake3 as _blake3

    HASH_NAME = "blake3-128"

    def raw_hash(data: bytes | memoryview) -> bytes:
        """The 16-byte content hash of ``data``."""
        return _blake3.blake3(data, max_threads=1).digest(16)
except ImportError:  # pragma: no cover - blake3 is a dependency
    HASH_NAME = "blake2b-128"

    def raw_hash(data: bytes | memoryview) -> bytes:
        """The 16-byte content hash of ``data``."""
        return hashlib.blake2b(data, digest_size=16).digest()


def content_hash(data: bytes | memoryview) -> str:
    """The 128-bit content hash of ``data`` as 32 hex digits (BLAKE3 by default)."""
    return raw_hash(data).hex()


@functools.lru_cache(maxsize=64)
def _key(s: Settings) -> bytes:
    d = s.to_dict()
    for name in LIMIT_FIELDS:
        d.pop(name, None)
    text = json.dumps({"pyimgopt": __version__, "hash": HASH_NAME, "settings": d},
                      sort_keys=True, separators=(",", ":"))
    return raw_hash(text.encode("utf-8"))


def settings_key(s: Settings) -> str:
    """What an output depends on besides its input: pyimgopt's version, the hash's
    name and the settings (limits left out: they never change an output), as 32
    hex digits. Two runs agree on a file only when their keys are equal."""
    return _key(s).hex()


def marker_key(s: Settings) -> str:
    """The settings key as the in-file marker carries it: its first 8 bytes, base64url."""
    return base64.urlsafe_b64encode(_key(s)[:8]).decode("ascii").rstrip("=")


#: The note of an ``unchanged`` result whose input was copied to the output folder.
COPIED_NOTE = "copied unchanged: the input is already an output of these settings"

#: Results that leave an output worth remembering (``unchanged`` only when it copied).
RECORDED_STATUSES = ("optimized", "skipped", "unchanged")
#: Result fields a row keeps, reported again by an ``unchanged`` result.
_KEPT = ("format_in", "format_out", "bytes_in", "bytes_out", "width_in", "height_in", "width",
         "height", "frames", "quality", "ssim")


def match(known: dict | None, digest: str) -> dict | None:
    """The entry of a job's ``known`` hint whose hash is ``digest``, or None.

    An entry is ``{"hash", "copy", "result"}``: ``copy`` says the output
    folder still needs the input's bytes (the input is itself an earlier
    output of these settings).
    """
    if not known:
        return None
    for entry in known.get("entries") or ():
        if entry.get("hash") == digest:
            return entry
    return None


def record_of(result: dict, in_place: bool) -> dict | None:
    """The manifest row a finished job's result dict makes, or None (nothing to record)."""
    status = result.get("status")
    if status not in RECORDED_STATUSES or result.get("dry_run"):
        return None
    if status == "unchanged" and COPIED_NOTE not in (result.get("notes") or ()):
        return None  # nothing was written: the row that said so still holds
    inp, out = result.get("input"), result.get("output")
    if not inp or not out or not result.get("input_hash") or not result.get("output_hash"):
        return None
    return {"input": inp, "output": out, "input_hash": result["input_hash"],
            "output_hash": result["output_hash"], "in_place": bool(in_place),
            "result": {k: result.get(k) for k in _KEPT}}


def known_unchanged(src: str, known: dict | None, *, size: int, expect: dict | None) -> Result | None:
    """The ``unchanged`` result of ``src`` when the hint ``known`` lists the hash of its
    bytes and nothing needs writing (not a copy); None otherwise.

    Reads ``src`` (at most ``size`` bytes, the size it was checked with; the very
    file checked when ``expect`` gives its device and inode) and hashes it:
    nothing is decoded. Any trouble reading it is None too: the job then runs
    normally and meets the trouble there. The router calls this at submit, so
    a file already done costs no sidecar round trip.
    """
    if not known:
        return None
    start = time.perf_counter()
    want = None if expect is None else (expect["dev"], expect["ino"])
    try:
        data, _st = read_input(src, max(1, size), expect=want)
    except PyimgoptError:
        return None
    digest = content_hash(data)
    entry = match(known, digest)
    if entry is None or entry.get("copy"):
        return None
    rec = dict(entry.get("result") or {})
    seconds = time.perf_counter() - start
    return Result(
        input=src, output=rec.get("output") or src, status="unchanged",
        format_in=rec.get("format_in"), format_out=rec.get("format_out") or rec.get("format_in"),
        bytes_in=len(data), bytes_out=rec.get("bytes_out", len(data)), width_in=rec.get("width_in"),
        height_in=rec.get("height_in"), width=rec.get("width"), height=rec.get("height"),
        frames=rec.get("frames") or 1, quality=rec.get("quality"), ssim=rec.get("ssim"),
        seconds=seconds, stages={"read": seconds},
        notes=("unchanged: optimised with these settings by this version before (manifest)",),
        input_hash=digest, output_hash=rec.get("output_hash", digest))


def _as_output(row, inp: str, out: str | None, in_place: bool) -> dict:
    """The hint entry saying ``inp`` holds the output of ``row`` (copied to ``out`` if not in place)."""
    res = json.loads(row["result"])
    res.update(output=inp if in_place else out, bytes_in=res.get("bytes_out"),
               format_in=res.get("format_out"), width_in=res.get("width"),
               height_in=res.get("height"), output_hash=row["output_hash"])
    return {"hash": row["output_hash"], "copy": not in_place, "result": res}


_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    input TEXT NOT NULL,            -- canonical path of the input that was optimised
    output TEXT NOT NULL,           -- canonical path of what was written (= input in place)
    key TEXT NOT NULL,              -- settings_key(): version, hash name, settings
    input_hash TEXT NOT NULL,
    output_hash TEXT NOT NULL,
    in_place INTEGER NOT NULL,
    out_size INTEGER,               -- the output as written: size, mtime (ns), inode
    out_mtime_ns INTEGER,
    out_ino INTEGER,
    result TEXT NOT NULL,           -- JSON: the result's figures, reported by `unchanged`
    updated REAL NOT NULL,
    PRIMARY KEY (input, output, key)
);
CREATE INDEX IF NOT EXISTS entries_by_output ON entries(output, key);
CREATE INDEX IF NOT EXISTS entries_by_output_hash ON entries(output_hash, key);
CREATE INDEX IF NOT EXISTS entries_by_out_size ON entries(key, out_size);
"""


class Manifest:
    """The manifest database at ``path`` (created 0600, its folder 0700, if missing).

    Safe to share between threads (each thread gets its own connection) and
    between processes (SQLite locking; writes wait up to 10 s for another
    writer). ``readonly=True`` never creates or writes anything.
    """

    def __init__(self, path: str | os.PathLike, *, readonly: bool = False) -> None:
        self.path = os.fspath(path)
        self.readonly = readonly
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []  # before the first: close() closes them all
        if not readonly:
            folder = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(folder, mode=0o700, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
                         | getattr(os, "O_NOFOLLOW", 0), 0o600)
            try:
                if os.fstat(fd).st_mode & 0o077:
                    os.fchmod(fd, 0o600)
            finally:
                os.close(fd)
            db = self._db()
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            if self.readonly:
                db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None,
                                     timeout=10, check_same_thread=False)
            else:
                db = sqlite3.connect(self.path, isolation_level=None, timeout=10,
                                     check_same_thread=False)
                db.execute("PRAGMA synchronous=NORMAL")
            db.row_factory = sqlite3.Row
            self._local.db = db
            self._conns.append(db)
        return db

    def close(self) -> None:
        """Close every connection this object opened (from any thread)."""
        for db in self._conns:
            try:
                db.close()
            except sqlite3.Error:
                pass
        self._conns = []
        self._local = threading.local()

    # -- reads ---------------------------------------------------------------------------

    def hint(self, inp: str, out: str | None, key: str, *, in_place: bool,
             auto: bool = False) -> dict | None:
        """The ``known`` hint of a job ``inp`` → ``out`` (None: in place) under ``key``.

        Two kinds of entries, from paths and ``stat`` alone (no image is read):
        ``inp`` is itself an output these settings made (its output hash:
        unchanged if the file still holds it; to an output folder it is then
        copied there), and — to an output folder — ``inp`` was optimised into
        ``out`` (or, with ``format="auto"``, into ``out`` with another
        extension) and that output is still exactly as written (size, mtime,
        inode): its input hash. None when the manifest knows nothing useful.
        """
        try:
            return self._hint(inp, out, key, in_place, auto)
        except sqlite3.Error:
            return None  # an unreadable manifest costs a re-run, never a failure

    def _hint(self, inp: str, out: str | None, key: str, in_place: bool, auto: bool) -> dict | None:
        db = self._db()
        entries: list[dict] = []
        if not in_place and out is not None:
            stem = os.path.splitext(out)[0]
            for row in db.execute("SELECT * FROM entries WHERE input=? AND key=? AND in_place=0 "
                                  "ORDER BY updated DESC", (inp, key)):
                target = row["output"]
                if target != out and not (auto and os.path.splitext(target)[0] == stem):
                    continue
                try:
                    st = os.stat(target)
                except OSError:
                    continue
                if (st.st_size, st.st_mtime_ns, st.st_ino) != (row["out_size"], row["out_mtime_ns"],
                                                               row["out_ino"]):
                    continue
                entries.append({"hash": row["input_hash"], "copy": False,
                                "result": {**json.loads(row["result"]), "output": target,
                                           "output_hash": row["output_hash"]}})
                break
        row = db.execute("SELECT * FROM entries WHERE output=? AND key=? ORDER BY updated DESC LIMIT 1",
                         (inp, key)).fetchone()
        if row is not None:
            entries.append(_as_output(row, inp, out, in_place))
        return {"entries": entries} if entries else None

    def by_content(self, inp: str, out: str | None, key: str, *, in_place: bool, size: int,
                   expect: dict | None = None) -> dict | None:
        """The ``known`` hint of ``inp`` when its bytes are an output these settings made
        somewhere else — a copied or moved output folder, a file ``rsync``-ed back —
        found by content: ``inp`` is read and hashed only when some output of ``key``
        has its size, then matched on the recorded output hash. None otherwise (or on
        any trouble reading either)."""
        try:
            db = self._db()
            if db.execute("SELECT 1 FROM entries WHERE key=? AND out_size=? LIMIT 1",
                          (key, size)).fetchone() is None:
                return None
            want = None if expect is None else (expect["dev"], expect["ino"])
            try:
                data, _st = read_input(inp, max(1, size), expect=want)
            except PyimgoptError:
                return None
            row = db.execute("SELECT * FROM entries WHERE output_hash=? AND key=? "
                             "ORDER BY updated DESC LIMIT 1", (content_hash(data), key)).fetchone()
        except sqlite3.Error:
            return None
        return None if row is None else {"entries": [_as_output(row, inp, out, in_place)]}

    def count(self) -> int:
        """How many entries the manifest holds."""
        try:
            return int(self._db().execute("SELECT COUNT(*) FROM entries").fetchone()[0])
        except sqlite3.OperationalError:
            return 0

    def entries(self, limit: int = 1000) -> list[dict]:
        """Up to ``limit`` entries, newest first, as plain dicts."""
        rows = self._db().execute("SELECT * FROM entries ORDER BY updated DESC LIMIT ?", (limit,))
        return [{**dict(r), "result": json.loads(r["result"])} for r in rows]

    # -- writes --------------------------------------------------------------------------

    def put_many(self, key: str, records: list[dict]) -> int:
        """Store :func:`record_of` rows under ``key`` in one transaction; return how many.

        Each output is ``stat``-ed now, after it was written: a row whose file
        no longer has the recorded size is left out (changed meanwhile).
        """
        rows = []
        now = time.time()
        for rec in records:
            st = None
            try:
                st = os.stat(rec["output"])
            except OSError:
                continue
            res = rec["result"]
            if res.get("bytes_out") is not None and st.st_size != res["bytes_out"]:
                continue
            rows.append((rec["input"], rec["output"], key, rec["input_hash"], rec["output_hash"],
                         int(rec["in_place"]), st.st_size, st.st_mtime_ns, st.st_ino,
                         json.dumps(res, separators=(",", ":")), now))
        if not rows:
            return 0
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT OR REPLACE INTO entries VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return len(rows)

    def clear(self, *, older_than: float | None = None, under: str | None = None) -> int:
        """Delete entries (all; or last written more than ``older_than`` seconds ago;
        or whose input or output lies under the folder ``under``); return how many."""
        where, args = [], []
        if older_than is not None:
            where.append("updated < ?")
            args.append(time.time() - older_than)
        if under is not None:
            prefix = os.path.join(os.path.realpath(under), "")  # rows hold canonical paths
            where.append("(substr(input, 1, ?) = ? OR substr(output, 1, ?) = ?)")
            args += [len(prefix), prefix, len(prefix), prefix]
        sql = "DELETE FROM entries" + (" WHERE " + " AND ".join(where) if where else "")
        cur = self._db().execute(sql, args)
        return cur.rowcount


class ManifestWriter:
    """Writes manifest rows on a thread of its own, a group per transaction.

    The router's thread only queues (:meth:`put`, never blocks); a failed write
    is dropped (the file is simply redone by the next run) and counted in
    :attr:`errors`. Once woken by a row, the thread lets rows gather for
    :attr:`GATHER` seconds before it writes them in one transaction (a
    :meth:`sync` or :meth:`close` cuts that short): one commit, and one
    wake-up, per group instead of per job.
    """

    #: Seconds the writer lets rows gather after the first one of a group.
    GATHER = 0.05
    #: Rows of one group, at most.
    GROUP = 2000

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self.errors = 0
        self.written = 0
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._urgent = threading.Event()  # a sync or close waits: write the group now
        self._thread = threading.Thread(target=self._run, name="pyimgopt-manifest", daemon=True)
        self._thread.start()

    def put(self, key: str, record: dict) -> None:
        """Queue one :func:`record_of` row under settings ``key``."""
        self._q.put((key, record))

    def sync(self, timeout: float = 10.0) -> bool:
        """Wait until every row queued before this call is written (or dropped);
        False if that took longer than ``timeout``. Called from any thread but
        the writer's: a batch's lookups see what the batches before it recorded."""
        done = threading.Event()
        self._q.put(done)
        self._urgent.set()
        return done.wait(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, stop the thread, close the database."""
        self._q.put(None)
        self._urgent.set()
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self.manifest.close()

    def _run(self) -> None:
        stop = False
        while not stop:
            item = self._q.get()
            if item is None:
                break
            if not isinstance(item, threading.Event):
                self._urgent.wait(self.GATHER)  # let the group gather (no wake-up per row)
            self._urgent.clear()
            group: dict[str, list[dict]] = {}
            barriers: list[threading.Event] = []
            count = 0
            while item is not None:
                if isinstance(item, threading.Event):
                    barriers.append(item)
                    break
                group.setdefault(item[0], []).append(item[1])
                count += 1
                if count >= self.GROUP:
                    break
                try:
                    item = self._q.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
            for key, records in group.items():
                try:
                    self.written += self.manifest.put_many(key, records)
                except (sqlite3.Error, OSError):
                    self.errors += 1
            for barrier in barriers:
                barrier.set()


class Hinter:
    """A batch's lookup: ``hinter(inp, out, in_place=, auto=)`` is
    :meth:`Manifest.hint` under the batch's settings ``key``, after (once) the
    writer has written what earlier batches recorded."""

    def __init__(self, manifest: Manifest, key: str, writer: ManifestWriter | None = None) -> None:
        self.manifest, self.key, self._writer = manifest, key, writer
        self._synced = writer is None

    def __call__(self, inp: str, out: str | None, *, in_place: bool, auto: bool = False) -> dict | None:
        if not self._synced:
            self._writer.sync()
            self._synced = True
        return self.manifest.hint(inp, out, self.key, in_place=in_place, auto=auto)

    def by_content(self, inp: str, out: str | None, *, in_place: bool, size: int,
                   expect: dict | None = None) -> dict | None:
        """:meth:`Manifest.by_content` under the batch's settings ``key``."""
        if not self._synced:
            self._writer.sync()
            self._synced = True
        return self.manifest.by_content(inp, out, self.key, in_place=in_place, size=size, expect=expect)
