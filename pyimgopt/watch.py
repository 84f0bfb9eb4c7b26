"""``pyimgopt watch FOLDER -o OUT`` (or ``--in-place``): optimise files as they arrive.

Owns the watch loop: at start a catch-up over the whole folder, a batch per
sub-folder (the optimisation manifest makes every file already done
``unchanged``, so a restart redoes only what changed while the watcher was
down; ``--force`` redoes every file of this catch-up; a file modified less
than ``settle`` seconds ago is settled first), then file system events from
:mod:`watchfiles` (inotify on Linux), after one more scan once the watch is up
(what arrived between the catch-up's scan and the watch sent no event). A new or changed
file is *settled* before it is read: its size and mtime must stay the same
for ``settle`` seconds, so a file still being copied is not read half
written. Settled files are submitted through the same client, router, pool,
journal and manifest as ``pyimgopt optimize``, one batch per sub-folder (so
outputs mirror the tree under OUT). A file is never in two batches at once
(a change while it runs waits for its batch, and nothing new is submitted
while the catch-up runs); the output folder, hidden folders and files,
pyimgopt's temporary files and files that are not images are ignored, and a file this watcher just wrote (in place) is not taken for a
change, so it never loops on its own outputs. Deleted files are forgotten
(their outputs stay). SIGINT or SIGTERM stops it: running batches are
cancelled (a cancelled file leaves no temporary file and is redone by the
next start), the router and its sidecars end, and the exit status is 0 (1
if any file failed).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import stat
import sys
import threading
import time

from .errors import InvalidSettingsError, PyimgoptError
from .result import Result
from .settings import Settings

__all__ = ["Watcher", "watch_main"]


class Watcher:
    """Watches ``folder`` and optimises what settles there, through ``client``.

    ``report(result)`` is called for every finished file (on the caller's
    thread, inside :meth:`run`). :meth:`stop` (any thread, or a signal
    handler) ends :meth:`run` after cancelling the batches in flight.
    """

    def __init__(self, client, folder: str, settings: Settings, *, out_dir: str | None = None,
                 in_place: bool = False, settle: float = 1.0, force: bool = False,
                 report=None, tick: float = 0.2) -> None:
        if (out_dir is None) == (not in_place):
            raise InvalidSettingsError("watch needs an output folder or in_place=True, not both")
        self.client = client
        self.folder = os.path.realpath(folder)
        self.out_dir = None if out_dir is None else os.path.realpath(out_dir)
        self.settings = settings
        self.in_place = in_place
        self.settle = settle
        self.force = force
        self.report = report or (lambda r: None)
        self.tick = tick
        self.failed = 0
        self.submitted = 0
        self._stop = threading.Event()
        self._pending: dict[str, tuple[int, int, float]] = {}  # path -> size, mtime_ns, since
        self._inflight: list[tuple[object, set[str]]] = []  # (batch, its paths)
        self._busy: set[str] = set()
        self._written: dict[str, tuple[int, int]] = {}  # in place: what we wrote (size, mtime_ns)
        self._catching_up: list = []  # the catch-up batches
        self._scanned: dict[str, tuple[int, int]] = {}  # the catch-up's scan: path -> size, mtime_ns

    def stop(self) -> None:
        """Ask :meth:`run` to end (safe from a signal handler)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self, once: bool = False) -> None:
        """Catch up on the folder, then watch it until :meth:`stop` (or, with
        ``once``, return after the catch-up)."""
        import watchfiles

        self._catch_up()
        if once:
            while (self._inflight or self._pending) and not self._stop.is_set():
                self._drain()
                self._submit_settled()
                self._stop.wait(self.tick)
            self._drain()
            self._cancel_inflight()
            return
        ms = max(10, int(self.tick * 1000))
        rescanned = False
        for changes in watchfiles.watch(self.folder, watch_filter=None, debounce=ms, step=min(50, ms),
                                        stop_event=self._stop, rust_timeout=ms, yield_on_timeout=True,
                                        raise_interrupt=False):
            if not rescanned:
                # the watch is up now (watchfiles yields only once it is): what arrived or
                # changed between the catch-up's scan and this point sent no event
                rescanned = True
                for path, sig in self._scan().items():
                    if self._scanned.get(path) != sig and path not in self._pending:
                        self._pending[path] = (*sig, time.monotonic())
                self._scanned = {}
            for change, path in changes:
                self._seen(change, path)
            self._drain()
            self._submit_settled()
            if self._stop.is_set():
                break
        self._cancel_inflight()

    # -- catch-up ------------------------------------------------------------------

    def _scan(self) -> dict[str, tuple[int, int]]:
        """Every file under the folder the watcher wants: path -> (size, mtime_ns)."""
        found: dict[str, tuple[int, int]] = {}
        for root, dirs, files in os.walk(self.folder):
            dirs[:] = sorted(d for d in dirs if self._wanted_dir(os.path.join(root, d)))
            for name in files:
                path = os.path.join(root, name)
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode) and self._wanted(path):
                    found[path] = (st.st_size, st.st_mtime_ns)
        return found

    def _catch_up(self) -> None:
        """Submit what is in the folder now, one batch per sub-folder; a file modified
        less than ``settle`` seconds ago (maybe still being copied) is settled first,
        like a new one."""
        self._scanned = self._scan()
        now = time.time()
        ready: dict[str, list[str]] = {}
        for path, (size, mtime) in self._scanned.items():
            if now - mtime / 1e9 < self.settle:
                self._pending[path] = (size, mtime, time.monotonic())
            else:
                ready.setdefault(os.path.dirname(path), []).append(path)
        for folder, paths in sorted(ready.items()):
            self._submit_group(folder, sorted(paths), catch_up=True)

    # -- events --------------------------------------------------------------------

    def _wanted(self, path: str) -> bool:
        from .client import _looks_like_image
        from .pipeline.write import TEMP_SUFFIX

        rel = os.path.relpath(path, self.folder)
        if rel.startswith(os.pardir) or path.endswith(TEMP_SUFFIX):
            return False
        if self.out_dir is not None and (path == self.out_dir
                                         or path.startswith(os.path.join(self.out_dir, ""))):
            return False
        if any(part.startswith(".") for part in rel.split(os.sep)):
            return False  # hidden folders, and hidden files (rsync's and editors' temporaries)
        return os.path.isfile(path) and _looks_like_image(path, os.path.basename(path))

    def _wanted_dir(self, path: str) -> bool:
        rel = os.path.relpath(path, self.folder)
        if rel.startswith(os.pardir) or any(part.startswith(".") for part in rel.split(os.sep)):
            return False
        return self.out_dir is None or not (path == self.out_dir
                                            or path.startswith(os.path.join(self.out_dir, "")))

    def _seen(self, change, path: str) -> None:
        path = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
        try:
            st = os.stat(path)
        except OSError:  # deleted (or renamed away): forget it
            self._pending.pop(path, None)
            return
        if stat.S_ISDIR(st.st_mode):
            # a folder created (or renamed in): what was written into it before its own
            # watch was set up sends no event, so its files are looked at here
            if self._wanted_dir(path):
                for root, dirs, files in os.walk(path):
                    dirs[:] = [d for d in dirs if self._wanted_dir(os.path.join(root, d))]
                    for name in files:
                        self._seen(change, os.path.join(root, name))
            return
        if self._written.get(path) == (st.st_size, st.st_mtime_ns):
            return  # our own in-place write
        if not self._wanted(path):
            return
        self._pending[path] = (st.st_size, st.st_mtime_ns, time.monotonic())

    def _submit_settled(self) -> None:
        if any(not b.done for b in self._catching_up):
            return  # what changed meanwhile waits: the catch-up may hold the same files
        now = time.monotonic()
        ready: dict[str, list[str]] = {}
        for path, (size, mtime, since) in list(self._pending.items()):
            try:
                st = os.stat(path)
            except OSError:
                del self._pending[path]
                continue
            if (st.st_size, st.st_mtime_ns) != (size, mtime):
                self._pending[path] = (st.st_size, st.st_mtime_ns, now)  # still being written
                continue
            if now - since < self.settle or path in self._busy:
                continue
            del self._pending[path]
            if self._written.get(path) == (size, mtime):
                continue  # our own in-place write, seen before its batch was drained
            ready.setdefault(os.path.dirname(path), []).append(path)
        for folder, paths in sorted(ready.items()):
            self._submit_group(folder, sorted(paths))

    def _submit_group(self, folder: str, paths: list[str], catch_up: bool = False) -> None:
        out = None
        if self.out_dir is not None:
            rel = os.path.relpath(folder, self.folder)
            out = self.out_dir if rel == os.curdir else os.path.join(self.out_dir, rel)
        try:
            batch = self.client.submit(paths, self.settings, out_dir=out, in_place=self.in_place,
                                       force=self.force and catch_up)
        except PyimgoptError as exc:
            print(f"pyimgopt watch: cannot submit {folder}: {exc.code}: {exc.message}", file=sys.stderr)
            return
        names = set(paths)
        if catch_up:
            self._catching_up.append(batch)
        self._busy |= names
        self._inflight.append((batch, names))
        self.submitted += batch.total

    def _drain(self) -> None:
        still = []
        for batch, names in self._inflight:
            if not batch.done:
                still.append((batch, names))
                continue
            for r in batch.wait(0):
                self._finished(r)
            self._busy -= names
        self._inflight = still

    def _finished(self, r: Result) -> None:
        if r.status == "failed" and not (r.error is not None and r.error.code == "cancelled"):
            self.failed += 1  # (a file cancelled by stop() is not a failure: the next start redoes it)
        if self.in_place and r.status == "optimized" and not r.dry_run and r.input:
            self._record_written(r)
        self.report(r)

    def _record_written(self, r: Result) -> None:
        """Remember the stat of a file this watcher rewrote in place — only if the file on
        disk is still what was written (a save made since is a change, not our write)."""
        from .manifest import content_hash

        path = os.path.realpath(r.input)
        try:
            st = os.stat(path)
            if st.st_size != r.bytes_out or r.output_hash is None:
                return
            with open(path, "rb") as f:
                if content_hash(f.read()) != r.output_hash:
                    return
            after = os.stat(path)
            if (after.st_size, after.st_mtime_ns, after.st_ino) != (st.st_size, st.st_mtime_ns, st.st_ino):
                return
        except OSError:
            return
        self._written[path] = (st.st_size, st.st_mtime_ns)

    def _cancel_inflight(self) -> None:
        for batch, _names in self._inflight:
            if not batch.done:
                try:
                    batch.cancel()
                except PyimgoptError:
                    pass
        deadline = time.monotonic() + 30
        for batch, _names in self._inflight:
            try:
                batch.wait(max(0.1, deadline - time.monotonic()))
            except PyimgoptError:
                continue
        self._drain()


def watch_main(a: argparse.Namespace) -> int:
    """``pyimgopt watch``: run a :class:`Watcher` until SIGINT/SIGTERM; exit 0, 1 if a file failed."""
    from .cli import _local_client, _settings

    try:
        s = _settings(a)
    except InvalidSettingsError as exc:
        print(f"pyimgopt: error: {exc.message}", file=sys.stderr)
        return 2
    if not os.path.isdir(a.folder):
        print(f"pyimgopt: error: {a.folder} is not a folder", file=sys.stderr)
        return 2
    if a.out is not None and os.path.realpath(a.out) == os.path.realpath(a.folder):
        print("pyimgopt: error: the output folder is the watched folder: give another folder "
              "with -o, or use --in-place", file=sys.stderr)
        return 2
    if a.in_place and s.format not in ("keep", "auto"):
        print("pyimgopt: error: --in-place keeps each file's format; use --out DIR to convert",
              file=sys.stderr)
        return 2
    if a.settle < 0:
        print("pyimgopt: error: --settle must be >= 0", file=sys.stderr)
        return 2
    try:
        client = _local_client(a)
    except PyimgoptError as exc:
        print(f"pyimgopt: error: {exc.message}", file=sys.stderr)
        return 1
    if client is None:
        return 1

    def report(r: Result) -> None:
        if a.json:
            sys.stdout.write(json.dumps(r.to_json(), ensure_ascii=False) + "\n")
        elif r.error is not None:
            print(f"FAILED {r.input}: {r.error.code}: {r.error.message}", file=sys.stderr)
        else:
            print(f"{r.status} {r.input} -> {r.output} ({r.bytes_in} -> {r.bytes_out} B)")
        sys.stdout.flush()

    watcher = Watcher(client, a.folder, s, out_dir=a.out, in_place=a.in_place, settle=a.settle,
                      force=a.force, report=report)
    old = {sig: signal.signal(sig, lambda *_: watcher.stop()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with client:
            print(f"pyimgopt watch: watching {watcher.folder} (Ctrl-C to stop)", file=sys.stderr)
            watcher.run(once=a.once)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    print(f"pyimgopt watch: stopped; {watcher.submitted} files submitted, {watcher.failed} failed",
          file=sys.stderr)
    return 1 if watcher.failed else 0
