"""``pyimgopt watch`` (issue 20 item 2): files copied in slowly, renamed in,
replaced and deleted; a restart catches up; SIGTERM/SIGINT end it cleanly.

The in-process tests drive :class:`pyimgopt.watch.Watcher` over a real router
(``Client.local``, in-process worker) and real inotify events; results are
awaited on a queue with a deadline (no sleep stands in for synchronisation:
the only pauses are the slow writer's, which is the behaviour under test).
The CLI test runs the real command with a real sidecar and checks that it
and every process it started are gone after the signal.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

from conftest import decode, encode, jpeg, photo, temp_files
from pyimgopt import Settings
from pyimgopt.client import Client
from pyimgopt.router import RouterConfig
from pyimgopt.watch import Watcher

SETTLE = 0.3
# watch, router and CLI machinery: the kernels play no part (conftest's pure pass)
pytestmark = pytest.mark.one_backend



def png(seed: int) -> bytes:
    return encode(Image.fromarray(photo(64, 48, seed=seed)), "PNG", compress_level=0)


class Running:
    """A Watcher on a thread; ``next()`` is the next finished file (or fails after ``timeout``)."""

    def __init__(self, client, folder, out=None, **kw):
        self.results: queue.Queue = queue.Queue()
        self.watcher = Watcher(client, str(folder), Settings(), out_dir=None if out is None else str(out),
                               in_place=out is None, settle=SETTLE, report=self.results.put, tick=0.05, **kw)
        self.thread = threading.Thread(target=self.watcher.run, daemon=True)
        self.thread.start()

    def next(self, timeout: float = 20.0):
        return self.results.get(timeout=timeout)

    def quiet(self) -> list:
        """Stop, and return what finished meanwhile (nothing should have)."""
        self.watcher.stop()
        self.thread.join(30)
        assert not self.thread.is_alive()
        out = []
        while not self.results.empty():
            out.append(self.results.get_nowait())
        return out


@pytest.fixture
def client(tmp_path):
    c = Client.local(workers=0, config=RouterConfig(recover=False), state_dir=str(tmp_path / "state"))
    yield c
    c.close()


def test_watch_slow_copy_rename_replace_delete_each_final_file_once(tmp_path, client):
    src, out = tmp_path / "in", tmp_path / "in" / "out"  # the output folder inside the watched one
    src.mkdir()
    (src / "a.png").write_bytes(png(1))
    w = Running(client, src, out)
    first = w.next()  # the catch-up
    assert first.input.endswith("a.png") and first.status == "optimized"

    # a slow copy: chunks written less than SETTLE apart are never read half written
    data = jpeg(photo(96, 64, seed=2), quality=97)
    with open(src / "b.jpg", "wb") as fh:
        for i in range(0, len(data), len(data) // 4 + 1):
            fh.write(data[i:i + len(data) // 4 + 1])
            fh.flush()
            time.sleep(SETTLE / 3)  # the slow writer under test
    # renamed in from a hidden temporary (never read itself); a file deleted before it settles
    (src / ".c.part").write_bytes(png(3))
    os.rename(src / ".c.part", src / "c.png")
    (src / "gone.png").write_bytes(png(4))
    os.remove(src / "gone.png")
    (src / "sub").mkdir()
    (src / "sub" / "d.png").write_bytes(png(5))
    got = {os.path.relpath(r.input, src): r for r in (w.next(), w.next(), w.next())}
    assert set(got) == {"b.jpg", "c.png", os.path.join("sub", "d.png")}
    assert all(r.status == "optimized" for r in got.values()), got
    assert decode((out / "b.jpg").read_bytes()).size == (96, 64)
    assert (out / "sub" / "d.png").is_file()  # the tree is mirrored

    # replaced: optimised again, from the new content
    (src / "a.png").write_bytes(png(6))
    again = w.next()
    assert again.input.endswith("a.png") and again.status == "optimized"
    assert np.array_equal(np.asarray(decode((out / "a.png").read_bytes()).convert("RGB")),
                          photo(64, 48, seed=6))
    assert w.quiet() == []  # nothing twice, no loop on its own outputs
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["a.png", "b.jpg", "c.png", "d.png"]
    assert not temp_files(tmp_path)


def test_watch_in_place_never_loops_and_a_restart_catches_up(tmp_path, client):
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.png").write_bytes(png(1))
    (src / "b.png").write_bytes(png(2))
    w = Running(client, src)
    assert {w.next().status, w.next().status} == {"optimized"}
    (src / "c.png").write_bytes(png(3))
    assert w.next().input.endswith("c.png")
    assert w.quiet() == []  # its own in-place writes were not taken for changes
    # while not watching: one file changes; the restart's catch-up redoes only it
    (src / "b.png").write_bytes(png(7))
    seen = []
    Watcher(client, str(src), Settings(), in_place=True, settle=SETTLE, report=seen.append).run(once=True)
    status = {os.path.basename(r.input): r.status for r in seen}
    assert status == {"a.png": "unchanged", "b.png": "optimized", "c.png": "unchanged"}


class _ArrivesAfterCatchUp:
    """The client, but a file lands in the folder right after the catch-up's first submit —
    before the watch is set up, so no event ever reports it."""

    def __init__(self, client, path, data):
        self._client, self._path, self._data, self._done = client, path, data, False

    def submit(self, *a, **kw):
        batch = self._client.submit(*a, **kw)
        if not self._done:
            self._done = True
            self._path.write_bytes(self._data)
            os.utime(self._path, (time.time() - 60, time.time() - 60))  # settled
        return batch

    def __getattr__(self, name):
        return getattr(self._client, name)


def test_watch_a_file_arriving_before_the_watch_is_up_is_optimised(tmp_path, client):
    """Review finding 4: the gap between the catch-up scan and the watch set-up."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    (src / "a.png").write_bytes(png(1))
    w = Running(_ArrivesAfterCatchUp(client, src / "late.png", png(2)), src, out)
    got = {os.path.basename(w.next(10).input), os.path.basename(w.next(10).input)}
    assert got == {"a.png", "late.png"}
    assert (out / "late.png").is_file() and w.quiet() == []


def test_watch_catch_up_settles_a_file_still_being_written(tmp_path, client):
    """Review finding 5: a file being copied when the watcher starts is not read half written."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    data = png(3)
    fh = open(src / "b.png", "wb")
    fh.write(data[: len(data) // 2])
    fh.flush()
    w = Running(client, src, out)
    time.sleep(SETTLE / 3)  # the slow writer under test
    fh.write(data[len(data) // 2:])
    fh.close()
    r = w.next(10)
    assert r.status == "optimized" and r.input.endswith("b.png"), r
    assert np.array_equal(np.asarray(decode((out / "b.png").read_bytes()).convert("RGB")),
                          photo(64, 48, seed=3))
    assert w.quiet() == [] and w.watcher.failed == 0


def _descendants(pid: int) -> set[int]:
    out: set[int] = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                out.add(int(entry))
    for child in list(out):
        out |= _descendants(child)
    return out


def _readline(stream, timeout: float = 30.0) -> str:
    """One line from a subprocess pipe, or fail after ``timeout`` (a reader thread: the
    pipe is text-buffered, so a selector alone could not say a whole line is there)."""
    got: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: got.put(stream.readline()), daemon=True).start()
    try:
        return got.get(timeout=timeout)
    except queue.Empty:
        pytest.fail(f"no line from the subprocess within {timeout} s")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_watch_cli_stops_on_signal_with_no_process_left(tmp_path, sig):
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.png").write_bytes(png(1))
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyimgopt", "watch", str(src), "-o", str(tmp_path / "out"), "-j", "1",
         "--settle", str(SETTLE), "--json", "--state-dir", str(tmp_path / "state")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    children: set[int] = set()
    try:
        line = _readline(proc.stdout)  # the catch-up's result: the pool is up
        assert json.loads(line)["status"] == "optimized", line
        children = _descendants(proc.pid)
        assert children  # its sidecar
        proc.send_signal(sig)
        rc = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        try:  # bounded: a child left alive holding the pipes must not hang the test
            _out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            for p in children:
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
            _out, err = proc.communicate(timeout=10)
    assert rc == 0 and "Traceback" not in err and "stopped" in err
    deadline = time.monotonic() + 10
    while any(os.path.exists(f"/proc/{p}") for p in children) and time.monotonic() < deadline:
        time.sleep(0.05)  # polling for the children's exit, bounded
    assert not [p for p in children if os.path.exists(f"/proc/{p}")]
    assert not temp_files(tmp_path)


def test_watch_cli_refuses_the_watched_folder_as_output(tmp_path, capsys):
    """``watch X -o X`` would write into what it watches: exit 2 at start, nothing started."""
    from pyimgopt.cli import main

    src = tmp_path / "in"
    src.mkdir()
    for out in (src, src / "."):
        # (--once -j 0: were the check missing, the run would end after its catch-up, not hang)
        assert main(["watch", str(src), "-o", str(out), "--once", "-j", "0",
                     "--state-dir", str(tmp_path / "st")]) == 2
        assert "output folder is the watched folder" in capsys.readouterr().err
    assert not (tmp_path / "st").exists()
