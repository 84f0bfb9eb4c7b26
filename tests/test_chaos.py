"""Chaos: a local pool keeps its promises while its sidecars are SIGKILLed.

A batch of small real images (JPEG q95 and PNG, 64-160 px, default format
at effort 4) runs on three sidecars while a thread kills a random live
sidecar every 0.4-0.8 s for ``CHAOS_SECONDS``; then the batch is cancelled
(if it is still running). The test is sized by time, not by a job count, so
it costs the same whatever the encoders cost per job. The promises checked:
every job ends exactly once (a result, or cancelled) and none fails (a job is
only poisoned after ``poison_kills`` sidecars died under it: 6 here, which
random kills do not reach — at the default 3, one of two runs on a loaded
machine (0.25 s a job) poisoned a file by chance, an estimated 10-15 % of
runs there, the more so as the queue starts the largest (slowest) files
first); each finished input has exactly one output,
byte-identical to an undisturbed in-process run, and a cancelled one at most
a complete one; no temporary file is left in the output tree; the pool is
back to full strength afterwards; and once the client is closed no sidecar
process remains.

It exercises the pool, not the kernels, so it runs on the native backend only.
"""

from __future__ import annotations

import errno
import os
import pathlib
import random
import signal
import threading
import time
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from pyimgopt import Settings, backend, optimize_file
from pyimgopt.client import Client, Event
from pyimgopt.errors import JobTimeoutError
from pyimgopt.router import RouterConfig

from conftest import photo, temp_files

pytestmark = pytest.mark.skipif(
    backend != "native", reason="the chaos test exercises the pool, not the kernels: native backend only"
)

#: More jobs than three sidecars finish in CHAOS_SECONDS here (about 100/s on
#: 2 cores): the batch outlasts the chaos and is then cancelled. On a much
#: faster machine it may end first; the kills then stop with it.
N_IMAGES = 2400
WORKERS = 3
CHAOS_SECONDS = 8.0
SETTINGS = Settings(effort=4)  # JPEG through libjpeg-turbo, PNG through oxipng level 1
BATCH_TIMEOUT = 60.0  # seconds for the batch to end after the chaos window (cancel included)
EXIT_TIMEOUT = 10.0  # seconds for every sidecar to be gone after close()


def _make_inputs(root: pathlib.Path, n: int) -> list[pathlib.Path]:
    """``n`` small photo-like images in four subfolders: 3/4 JPEG q95, 1/4 PNG.

    Cut from a few large generated photos at random offsets (cheap), so no two
    files are alike.
    """
    rng = random.Random(1234)
    bases = [photo(480, 360, seed=s) for s in range(8)]
    paths = []
    for i in range(n):
        w, h = rng.randint(64, 160), rng.randint(64, 160)
        base = bases[i % len(bases)]
        top, left = rng.randrange(base.shape[0] - h), rng.randrange(base.shape[1] - w)
        arr = np.ascontiguousarray(base[top : top + h, left : left + w])
        sub = root / f"set{i % 4}"
        sub.mkdir(exist_ok=True)
        if i % 4 == 3:
            path = sub / f"img{i:04d}.png"
            Image.fromarray(arr).save(path, "PNG")
        else:
            path = sub / f"img{i:04d}.jpg"
            Image.fromarray(arr).save(path, "JPEG", quality=95)
        paths.append(path)
    return paths


def _sidecar_children() -> set[int]:
    """Pids of live (non-zombie) descendants of this process running ``pyimgopt_sidecar``:
    sidecars started plain (children), the zygote (a child) and the sidecars it forked
    (grandchildren)."""
    procs = {}
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        # /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces.
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        procs[int(entry.name)] = (int(ppid), state, cmdline)
    mine, grew = {os.getpid()}, True
    while grew:
        more = {pid for pid, (ppid, _, _) in procs.items() if ppid in mine} - mine
        mine |= more
        grew = bool(more)
    return {pid for pid in mine - {os.getpid()}
            if procs[pid][1] != "Z" and any(b"pyimgopt_sidecar" in a for a in procs[pid][2])}


def _gone(pid: int) -> bool:
    """True once ``pid`` no longer exists; reaps it first if it is our zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # not our child, or already reaped (by the router's Popen)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError as exc:  # EPERM: the pid was reused by someone else's process
        return exc.errno == errno.EPERM
    return False


class _Killer(threading.Thread):
    """SIGKILLs a random live pool sidecar every 0.4-0.8 s until stopped."""

    def __init__(self, client: Client) -> None:
        super().__init__(name="chaos-killer", daemon=True)
        self.client = client
        self.stop = threading.Event()
        self.seen: set[int] = set()
        self.killed: list[int] = []
        self.errors: list[BaseException] = []
        self.rng = random.Random(99)

    def run(self) -> None:
        try:
            while not self.stop.wait(self.rng.uniform(0.4, 0.8)):
                pids = [s["pid"] for s in self.client.status()["sidecars"] if not s.get("local")]
                self.seen.update(pids)
                if not pids:
                    continue
                pid = self.rng.choice(pids)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue  # it died (or recycled) between status() and now
                self.killed.append(pid)
        except BaseException as exc:  # surfaced by the test, not lost in a thread
            self.errors.append(exc)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_chaos_pool_survives_random_sidecar_kills(tmp_path, monkeypatch):
    # Pool sidecars run each codec on one thread; the in-process reference
    # below runs with the same setting so the bytes can be compared.
    monkeypatch.setenv("PYIMGOPT_CODEC_THREADS", "1")
    src_root = tmp_path / "in"
    src_root.mkdir()
    inputs = _make_inputs(src_root, N_IMAGES)

    out_root = tmp_path / "out"
    events: list[Event] = []
    config = RouterConfig(liveness=2.0, heartbeat=0.2, poison_kills=6)
    client = Client.local(workers=WORKERS, config=config)
    killer = _Killer(client)
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + 30
        while len(client.status()["sidecars"]) < WORKERS:
            assert time.monotonic() < deadline, "the pool did not come up within 30 s"
            time.sleep(0.1)
        seen.update(s["pid"] for s in client.status()["sidecars"])

        batch = client.submit([src_root], SETTINGS, out_dir=out_root, on_event=events.append)
        killer.start()
        try:
            batch.wait(CHAOS_SECONDS)
            ended_early = True
        except JobTimeoutError:
            ended_early = False
        finally:
            killer.stop.set()
            killer.join(10)
        if not ended_early:
            batch.cancel()
        results = batch.wait(BATCH_TIMEOUT)
        assert not killer.errors, killer.errors
        seen |= killer.seen

        # Supervision brought the pool back to full strength.
        deadline = time.monotonic() + 15
        while True:
            status = client.status()
            live = [s["pid"] for s in status["sidecars"] if not s["local"]]
            seen.update(live)
            if len(live) == WORKERS and not any(_gone(pid) for pid in live):
                break
            assert time.monotonic() < deadline, f"pool not back to {WORKERS}: {status['sidecars']}"
            time.sleep(0.2)
        assert status["degraded"] is None, status["degraded"]
        counters = status["counters"]
    finally:
        killer.stop.set()
        seen |= _sidecar_children()
        client.close()

    # The chaos really happened, and the router noticed it (figures shown with -rP).
    done = [r for r in results if r.error is None]
    cancelled = [r for r in results if r.error is not None and r.error.code == "cancelled"]
    print(f"chaos: {len(killer.killed)} kills, {len(done)} done, {len(cancelled)} cancelled, "
          f"ended early: {ended_early}, counters {counters}")
    assert len(killer.killed) >= 3, f"only {len(killer.killed)} kills: the batch ran too fast"
    assert counters["sidecars_lost"] >= 1, counters
    assert counters["spawned"] >= WORKERS + 1, counters
    assert len(done) >= 50, f"only {len(done)} jobs finished: the pool made no progress under chaos"

    # Every job ended exactly once, and none failed but by the cancel.
    terminal = Counter(ev.job for ev in events if ev.kind in ("result", "failed"))
    assert len(terminal) == N_IMAGES, len(terminal)
    assert set(terminal.values()) == {1}, [j for j, n in terminal.items() if n != 1]
    assert [ev.kind for ev in events].count("batch_done") == 1
    failed = [(r.input, r.error.code, r.error.message) for r in results
              if r.error is not None and r.error.code != "cancelled"]
    assert failed == [], failed
    assert len(results) == N_IMAGES
    assert sorted(r.input for r in results) == sorted(str(p.resolve()) for p in inputs)
    if ended_early:
        assert cancelled == []

    # No temp files; one output per finished input, byte-identical to the
    # undisturbed pipeline in this process; a cancelled job left nothing, or a
    # complete output (it may have been written just before the abort arrived).
    leftovers = sorted(str(p) for p in temp_files(tmp_path))
    assert leftovers == [], leftovers
    ref_root = tmp_path / "ref"
    outputs = {p.relative_to(out_root) for p in out_root.rglob("*") if p.is_file()}
    expected: set[pathlib.Path] = set()
    differ = []
    for r, finished in [(r, True) for r in done] + [(r, False) for r in cancelled]:
        rel = pathlib.Path(r.input).relative_to(src_root.resolve())
        out = out_root / rel
        if not finished and not out.exists():
            continue
        ref = ref_root / rel
        ref.parent.mkdir(parents=True, exist_ok=True)
        res = optimize_file(r.input, ref, SETTINGS)
        assert res.error is None, res.error
        if finished:
            assert r.output == str(out.resolve()) or r.output == str(out), (r.output, out)
        expected.add(rel)
        if out.read_bytes() != ref.read_bytes():
            differ.append(str(rel))
    assert outputs == expected, (sorted(outputs - expected)[:5], sorted(expected - outputs)[:5])
    assert differ == [], f"{len(differ)} outputs differ from the in-process run: {differ[:5]}"

    # No orphans: every sidecar this run saw is gone once the client is closed.
    deadline = time.monotonic() + EXIT_TIMEOUT
    alive = set(seen)
    while alive and time.monotonic() < deadline:
        alive = {pid for pid in alive if not _gone(pid)}
        time.sleep(0.1)
    assert alive == set(), f"sidecars still running after close(): {sorted(alive)}"
    assert _sidecar_children() == set()
