"""The web UI's state: one embedded client, the current batch, a replayable log.

Owns what the page shows, independent of HTTP: the checks of every request
against the UI's own :class:`Policy` (again here, whatever the browser sends),
listing folders inside the read scope, one batch at a time, and a numbered log
of changes that Server-Sent Events replay from any point (a reloaded page
fetches :meth:`Session.snapshot`, then follows the log from its ``seq``). The
client's event stream is consumed on one thread per batch; router figures
(sidecars, memory) are polled once a second; a batch a killed UI left is
shown again, as its router resumes it from the journal.
"""

from __future__ import annotations

import collections
import os
import stat
import threading
import time
from typing import Any

from ..client import IMAGE_EXTENSIONS, Client
from ..errors import (
    CapabilityDeniedError,
    InvalidSettingsError,
    IOFailureError,
    PyimgoptError,
    ScopeDeniedError,
)
from ..security import Policy, canonical_input, canonical_output
from ..settings import AUTO_FORMATS, BROWSER_FORMATS, FITS, OUTPUT_FORMATS
from .forms import SUBMIT_OPTIONS, UIError, settings_from_form, submit_options
from .recover import recovered_view
from .rows import FINAL, BatchView, Row, relative

__all__ = ["Session"]

#: How many log entries a reconnecting page can replay before it must refetch.
LOG_SIZE = 20_000


class Session:
    """The UI's embedded client and its one current batch.

    Without ``client`` (its own router, :meth:`Client.local` on ``state_dir``)
    it shows again the batch its previous run left unfinished. Given a
    ``client`` it does not unless ``recover=True`` (attaching takes a batch's
    events from the client following it: only for a router nobody else submits
    to). Recovery runs on its own thread: :attr:`recovered` is set when it is
    over; :meth:`start` waits for it (up to the client's timeout, then 409)."""

    def __init__(self, policy: Policy, *, workers: int | None = None, state_dir: str | None = None,
                 client: Client | None = None, recover: bool | None = None) -> None:
        self.policy = policy
        self.roots = [p[:-3] if p.endswith("/**") else p for p in policy.read.allow]
        self._client = client or Client.local(workers, policy=policy, state_dir=state_dir)
        #: Set once the recovery of an unfinished batch is over (found or not).
        self.recovered = threading.Event()
        self._lock = threading.Lock()
        self.changed = threading.Condition(self._lock)
        self._log: collections.deque[tuple[int, str, dict]] = collections.deque(maxlen=LOG_SIZE)
        self._seq = 0
        self._view: BatchView | None = None
        self.status: dict[str, Any] = {"sidecars": 0, "rss": 0, "memory_budget": 0, "memory_in_use": 0}
        self.closed = threading.Event()
        self._recoverer: threading.Thread | None = None
        if client is None if recover is None else recover:
            self._recoverer = threading.Thread(target=self._recover, name="pyimgopt-ui-recover", daemon=True)
            self._recoverer.start()
        else:
            self.recovered.set()
        self._poller = threading.Thread(target=self._poll, name="pyimgopt-ui-status", daemon=True)
        self._poller.start()

    # -- log ------------------------------------------------------------------------

    def _push(self, kind: str, data: dict) -> None:  # lock held
        self._seq += 1
        self._log.append((self._seq, kind, data))
        self.changed.notify_all()

    def since(self, seq: int) -> tuple[list[tuple[int, str, dict]], bool]:
        """Log entries after ``seq``; ``False`` when some were dropped (refetch)."""
        with self._lock:
            if seq > self._seq:
                return [], False
            if self._log and seq < self._log[0][0] - 1:
                return [], False
            return [e for e in self._log if e[0] > seq], True

    @property
    def seq(self) -> int:
        return self._seq

    # -- queries --------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything the page needs to draw itself, and the log position it reflects."""
        with self._lock:
            v = self._view
            return {
                "seq": self._seq,
                "roots": self.roots,
                "formats": list(OUTPUT_FORMATS),
                "auto_formats": list(AUTO_FORMATS),  # what formats_allowed may name
                "browser_formats": list(BROWSER_FORMATS),  # its default
                "fits": list(FITS),
                "in_place_allowed": self.policy.capabilities.in_place,
                "status": dict(self.status),
                "batch": None if v is None else v.summary(),
                "rows": [] if v is None else [r.to_json() for r in v.rows],
            }

    def _check_read(self, path: Any) -> str:
        if not isinstance(path, str) or not path:
            raise UIError(400, InvalidSettingsError("a path must be a non-empty string", stage="ui"))
        try:
            canon = canonical_input(path)
        except PyimgoptError as exc:
            # Out of scope first: whether a file exists outside is not this UI's to tell.
            try:
                outside = not self.policy.read.matches(os.path.realpath(path))
            except (OSError, ValueError):
                outside = True
            if outside:
                raise UIError(403, ScopeDeniedError(
                    f"{path} is outside the folders this UI may read ({', '.join(self.roots)})",
                    path=path, stage="scope")) from None
            raise UIError(403, exc) from None
        if not self.policy.read.matches(canon):
            raise UIError(403, ScopeDeniedError(
                f"{path} is outside the folders this UI may read ({', '.join(self.roots)})",
                path=path, stage="scope"))
        if not os.path.exists(canon):
            raise UIError(404, IOFailureError(f"{path}: no such file or folder", path=path, stage="read"))
        return canon

    def browse(self, path: str | None) -> dict[str, Any]:
        """A folder's subfolders and image files, inside the read scope only."""
        if not path:
            return {"path": None, "parent": None,
                    "entries": [{"name": r, "path": r, "dir": True, "size": None} for r in self.roots]}
        canon = self._check_read(path)
        if not os.path.isdir(canon):
            raise UIError(400, IOFailureError(f"{path} is not a folder", path=path, stage="read"))
        entries = []
        try:
            names = sorted(os.listdir(canon), key=str.lower)
        except OSError as exc:
            raise UIError(403, IOFailureError(f"cannot list {path}: {exc.strerror}", path=path,
                                              stage="read")) from None
        for name in names:
            if name.startswith("."):
                continue
            full = os.path.join(canon, name)
            real = os.path.realpath(full)
            if not self.policy.read.matches(real):
                continue  # a symlink leading out of scope is not shown
            is_dir = os.path.isdir(real)
            if not is_dir and os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
                continue
            try:
                size = None if is_dir else os.stat(real).st_size
            except OSError:
                continue
            entries.append({"name": name, "path": full, "dir": is_dir, "size": size})
        parent = os.path.dirname(canon)
        if not self.policy.read.matches(parent) or canon in self.roots:
            parent = None
        return {"path": canon, "parent": parent, "entries": entries}

    # -- the batch ------------------------------------------------------------------

    def start(self, req: Any) -> dict[str, Any]:
        """Check and submit ``{"paths", "settings", "out_dir" | "in_place", "force", "dry_run"}``.

        What is out of scope is refused; ``force`` and ``dry_run`` reach
        :meth:`Client.submit` as the CLI's ``--force`` and ``--dry-run`` do.
        """
        if not isinstance(req, dict):
            raise UIError(400, InvalidSettingsError("the request must be a JSON object", stage="ui"))
        unknown = sorted(set(req) - {"paths", "settings", "out_dir", "in_place", *SUBMIT_OPTIONS})
        if unknown:
            raise UIError(400, InvalidSettingsError(f"unknown field {unknown[0]!r}", stage="ui"))
        paths = req.get("paths")
        if not isinstance(paths, list) or not paths or len(paths) > 10_000:
            raise UIError(400, InvalidSettingsError("choose at least one file or folder", stage="ui"))
        canon = [self._check_read(p) for p in paths]
        bases = [c if os.path.isdir(c) else os.path.dirname(c) for c in canon]  # the chosen folders
        try:
            settings = settings_from_form(req.get("settings") or {})
            opts = submit_options(req)
        except PyimgoptError as exc:
            raise UIError(400, exc) from None
        in_place = req.get("in_place", False)
        if not isinstance(in_place, bool):
            raise UIError(400, InvalidSettingsError("in_place must be true or false", stage="ui"))
        out_dir = req.get("out_dir") or None
        if in_place == (out_dir is not None):
            raise UIError(400, InvalidSettingsError("choose an output folder or in place", stage="ui"))
        if in_place and not self.policy.capabilities.in_place:
            raise UIError(403, CapabilityDeniedError("this UI was started without in-place writes",
                                                     stage="capabilities"))
        if out_dir is not None:
            if not isinstance(out_dir, str):
                raise UIError(400, InvalidSettingsError("out_dir must be a path", stage="ui"))
            try:
                out_dir = canonical_output(out_dir)
            except PyimgoptError as exc:
                raise UIError(403, exc) from None
            if not self.policy.write.matches(out_dir):
                raise UIError(403, ScopeDeniedError(
                    f"{req['out_dir']} is outside the folders this UI may write "
                    f"({', '.join(self.roots)})", path=req["out_dir"], stage="scope"))
            folders = set(bases)
            below = [c for c in canon if c == out_dir or c.startswith(out_dir.rstrip("/") + "/")]
            if out_dir in folders or below:  # outputs could land on inputs
                raise UIError(400, InvalidSettingsError(
                    "the output folder holds files chosen as inputs: choose another, or in place",
                    stage="ui"))
        self.recovered.wait(self._client.timeout)  # a fresh UI's listing takes milliseconds
        with self._lock:
            if not self.recovered.is_set():
                raise UIError(409, IOFailureError("still listing the batch the last run left unfinished: "
                                                  "try again in a moment", stage="ui"))
            if self._view is not None and not self._view.finished:
                raise UIError(409, IOFailureError("a batch is already running", stage="ui"))
        try:
            batch = self._client.submit(canon, settings, out_dir=out_dir, in_place=in_place, **opts)
        except PyimgoptError as exc:
            raise UIError(403 if exc.code in ("scope_denied", "capability_denied") else 400, exc) from None
        view = BatchView(batch, req.get("settings") or {}, out_dir, in_place, **opts)
        view.base = os.path.commonpath(bases)
        with self._lock:
            self._view = view
            self._push("batch", view.summary())
        threading.Thread(target=self._follow, args=(view,), name="pyimgopt-ui-batch", daemon=True).start()
        return {"batch": view.id, "total": view.total}

    def control(self, batch_id: str, action: str) -> dict[str, Any]:
        """Pause, resume or cancel the current batch."""
        v = self._view
        if v is None or v.id != batch_id:
            raise UIError(404, IOFailureError(f"no batch {batch_id!r}", stage="ui"))
        if action not in ("pause", "resume", "cancel"):
            raise UIError(404, IOFailureError(f"unknown action {action!r}", stage="ui"))
        if v.finished:
            raise UIError(409, IOFailureError("the batch has finished", stage="ui"))
        try:
            getattr(v.batch, action)()
        except PyimgoptError as exc:
            raise UIError(409, exc) from None
        with self._lock:
            if action == "pause":
                v.paused = True
            elif action == "resume":
                v.paused = False
            else:
                v.cancelled = True
            self._push("batch", v.summary())
        return {"ok": True}

    def preview(self, batch_id: str, idx: int, which: str, max_bytes: int) -> bytes:
        """The bytes to show as ``before`` or ``after`` for row ``idx``.

        Opened without following a final symlink and without blocking (a FIFO
        planted there is refused, not waited on); the file actually opened
        must be a regular file inside the scope, checked on the open
        descriptor, so a folder swapped between check and open gains nothing.
        """
        v = self._view
        if v is None or v.id != batch_id or not 0 <= idx < len(v.rows):
            raise UIError(404, IOFailureError("no such file in this batch", stage="ui"))
        r = v.rows[idx]
        if r.status not in ("optimized", "skipped", "unchanged"):
            raise UIError(404, IOFailureError(f"this file is {r.status}: nothing to preview", stage="ui"))
        if r.dry_run and which != "before":  # a file already at that path is not this run's output
            raise UIError(404, IOFailureError("dry run: nothing was written to preview", stage="ui"))
        if which == "before":
            if v.in_place and r.status == "optimized" and not r.dry_run:
                raise UIError(404, IOFailureError("the original was replaced in place", stage="ui"))
            path, scope = r.input, self.policy.read
        else:
            path, scope = r.output or r.input, self.policy.write
        flags = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
                 | getattr(os, "O_CLOEXEC", 0))
        try:
            fd = os.open(path, flags)
        except OSError as exc:
            raise UIError(404, IOFailureError(f"cannot open the file: {exc.strerror}", stage="ui")) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise UIError(403, IOFailureError("not a regular file any more", stage="ui"))
            try:
                real = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:  # no /proc: the name as resolved now
                real = os.path.realpath(path)
            if not scope.matches(real):
                raise UIError(403, ScopeDeniedError("the file left the UI's folders", stage="scope"))
            if st.st_size > max_bytes:
                raise UIError(413, IOFailureError("too large to preview", stage="ui"))
            with os.fdopen(os.dup(fd), "rb") as fh:
                return fh.read(max_bytes + 1)[:max_bytes]
        except OSError as exc:
            raise UIError(404, IOFailureError(f"cannot read the file: {exc.strerror}", stage="ui")) from None
        finally:
            os.close(fd)

    def _row_for(self, v: BatchView, job: str | None, path: str | None) -> Row:
        if job is not None and job in v.by_job:
            return v.by_job[job]
        r = Row(len(v.rows), path or "?", relative(path or "?", v.base), job)
        v.rows.append(r)
        if job is not None:
            v.by_job[job] = r
        return r

    def _follow(self, v: BatchView) -> None:
        try:
            for ev in v.batch.events():
                with self._lock:
                    self._apply(v, ev)
        except PyimgoptError as exc:  # the router went silent: say so, keep the page alive
            with self._lock:
                v.finished = True
                v.ended = time.time()
                self._push("notice", {"message": f"lost the batch: {exc.message}"})
                self._push("batch", v.summary())

    def _apply(self, v: BatchView, ev) -> None:  # lock held
        k = ev.kind
        d = ev.data
        if k in ("queued", "started", "progress", "retrying"):
            r = self._row_for(v, ev.job, d.get("input"))
            if r.status not in FINAL and k in ("started", "retrying"):  # a replay never reopens a row
                r.status = "running" if k == "started" else "retrying"
            self._push("row", r.to_json())
        elif k in ("result", "failed"):
            res = ev.result
            r = self._row_for(v, ev.job, res.input if res else d.get("input"))
            if res is not None:
                v.settle(r, "queued")  # take any earlier final state out of the totals
                r.output = res.output
                for name in ("bytes_in", "bytes_out", "format_in", "format_out", "width", "height",
                             "seconds", "ssim", "dry_run"):
                    setattr(r, name, getattr(res, name))
                v.dry_run = v.dry_run or res.dry_run
                status = res.status
                if res.error is not None:
                    r.code, r.message = res.error.code, res.error.message
                    if res.error.code == "cancelled":
                        status = "cancelled"
                v.settle(r, status)
            self._push("row", r.to_json())
            self._push("batch", v.summary())
        elif k in ("paused", "resumed", "cancelled"):
            v.paused = k == "paused"
            v.cancelled = v.cancelled or k == "cancelled"
            self._push("batch", v.summary())
        elif k == "batch_done":
            for r in v.rows:
                if r.status not in FINAL:
                    v.settle(r, "cancelled" if v.cancelled else "failed")
                    self._push("row", r.to_json())
            v.total = max(v.total, len(v.rows))
            v.finished = True
            v.paused = False
            v.ended = time.time()
            self._push("batch", v.summary())
        elif k == "degraded":
            self._push("notice", {"message": f"degraded: {d.get('reason')}"})

    def _recover(self) -> None:
        """Show the batch a previous run left unfinished (its router resumes it from the
        journal), as :func:`.recover.recovered_view` learns it (rows built off the lock)."""
        view = None
        try:
            view = recovered_view(self._client, self.policy, self.closed)
        finally:
            with self._lock:
                if view is not None and not self.closed.is_set():
                    self._view = view
                    self._push("notice", {"message": f"batch {view.id} was interrupted by a restart; it "
                                                     "resumes where it stopped (finished files are not redone)"})
                    self._push("batch", view.summary())
                else:
                    view = None
                self.recovered.set()
        if view is not None:
            threading.Thread(target=self._follow, args=(view,), name="pyimgopt-ui-batch", daemon=True).start()

    # -- router figures -------------------------------------------------------------

    def _poll(self) -> None:
        while not self.closed.wait(1.0):
            try:
                st = self._client.status()
            except PyimgoptError:
                continue
            sidecars = st.get("sidecars", [])
            fig = {
                "sidecars": len(sidecars),
                "busy": sum(s.get("busy", 0) for s in sidecars),
                "rss": sum(s.get("rss") or 0 for s in sidecars),
                "memory_budget": st.get("memory", {}).get("budget") or 0,
                "memory_in_use": st.get("memory", {}).get("in_use") or 0,
            }
            with self._lock:
                if fig != self.status:
                    self.status = fig
                    self._push("status", fig)

    def close(self) -> None:
        """Stop polling and the embedded router and pool.

        A running batch is left unfinished in the journal, not cancelled: the
        next ``pyimgopt ui`` on the same state folder resumes it (stopping the
        UI is not a decision about the batch; the Cancel button is).
        """
        self.closed.set()
        with self._lock:
            self.changed.notify_all()
        self._poller.join(3)
        if self._recoverer is not None:
            self._recoverer.join(self._client.timeout + 1)  # its request in flight ends or times out
        self._client.close()
