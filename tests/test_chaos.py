"""Chaos: a local pool keeps its promises while its sidecars are SIGKILLed.

One batch of 1,000 small real images (JPEG q95 and PNG, 64-160 px) runs on
three sidecars while a thread kills a random live sidecar every 1-2 s until
the batch is done. The promises checked: every job ends exactly once and
none fails (a job is only poisoned after ``poison_kills`` sidecars died under
it, which random kills do not reach), each input has exactly one output,
byte-identical to an undisturbed in-process run; no temporary file is left in
the output tree; the pool is back to full strength afterwards; and once the
client is closed no sidecar process remains.
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

from pyimgopt import Settings, optimize_file
from pyimgopt.client import Client, Event
from pyimgopt.router import RouterConfig

from conftest import photo, temp_files

N_IMAGES = 1000
WORKERS = 3
# format="auto" (encode JPEG, WebP, AVIF, PNG at the SSIM target, keep the smallest):
# ~40 ms a job here, so the batch lasts long enough for a dozen kills; with the
# default settings 1,000 jobs of this size finish in about a second. effort=4
# keeps JPEG on libjpeg-turbo: mozjpeg's trellis (effort >= 5) doubles the
# time per job and brought the batch near its timeout.
SETTINGS = Settings(format="auto", effort=4)
BATCH_TIMEOUT = 120.0  # seconds; an undisturbed run takes about 20 s on 2 cores
EXIT_TIMEOUT = 10.0  # seconds for every sidecar to be gone after close()


def _make_inputs(root: pathlib.Path, n: int) -> list[pathlib.Path]:
    """``n`` small photo-like images in four subfolders: 3/4 JPEG q95, 1/4 PNG."""
    rng = random.Random(1234)
    paths = []
    for i in range(n):
        w, h = rng.randint(64, 160), rng.randint(64, 160)
        arr = photo(w, h, seed=i)
        # Shift the pattern per image so no two files are alike.
        arr = np.roll(arr, (rng.randrange(h), rng.randrange(w)), axis=(0, 1))
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
    """Pids of live (non-zombie) child processes of this one running ``-m sidecar``."""
    me = os.getpid()
    found = set()
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
        if int(ppid) == me and state != "Z" and b"sidecar" in cmdline:
            found.add(int(entry.name))
    return found


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
    """SIGKILLs a random live pool sidecar every 1-2 s until stopped."""

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
            while not self.stop.wait(self.rng.uniform(1.0, 2.0)):
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
    # Pool sidecars run each codec on one thread; a multi-threaded AVIF encode
    # can differ in bytes, so the reference runs with the same setting.
    monkeypatch.setenv("PYIMGOPT_CODEC_THREADS", "1")
    src_root = tmp_path / "in"
    src_root.mkdir()
    inputs = _make_inputs(src_root, N_IMAGES)

    # The undisturbed reference: the same pipeline in this process, one file at a time.
    # (format="auto" picks each output's extension, so names come from the reference.)
    ref_root = tmp_path / "ref"
    ref_statuses: Counter[str] = Counter()
    for p in inputs:
        dst = ref_root / p.relative_to(src_root)
        dst.parent.mkdir(parents=True, exist_ok=True)
        res = optimize_file(p, dst, SETTINGS)
        assert res.error is None, res.error
        ref_statuses[res.status] += 1
    assert ref_statuses["optimized"] > N_IMAGES // 2, ref_statuses  # the jobs do real work
    expected = {p.relative_to(ref_root) for p in ref_root.rglob("*") if p.is_file()}
    assert len(expected) == N_IMAGES

    out_root = tmp_path / "out"
    events: list[Event] = []
    config = RouterConfig(liveness=2.0, heartbeat=0.2)
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
            results = batch.wait(BATCH_TIMEOUT)
        finally:
            killer.stop.set()
            killer.join(10)
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
    print(f"chaos: {len(killer.killed)} kills, counters {counters}")
    assert len(killer.killed) >= 3, f"only {len(killer.killed)} kills: the batch ran too fast"
    assert counters["sidecars_lost"] >= 1, counters
    assert counters["spawned"] >= WORKERS + 1, counters

    # Every job ended exactly once, and none failed.
    terminal = Counter(ev.job for ev in events if ev.kind in ("result", "failed"))
    assert len(terminal) == N_IMAGES, len(terminal)
    assert set(terminal.values()) == {1}, [j for j, n in terminal.items() if n != 1]
    assert [ev.kind for ev in events].count("batch_done") == 1
    failed = [(r.input, r.error.code, r.error.message) for r in results if r.error is not None]
    assert failed == [], failed
    assert len(results) == N_IMAGES
    assert sorted(r.input for r in results) == sorted(str(p.resolve()) for p in inputs)
    assert counters["jobs_done"] == N_IMAGES and counters["jobs_failed"] == 0, counters

    # One output per input, byte-identical to the undisturbed run; no temp files.
    leftovers = sorted(str(p) for p in temp_files(tmp_path))
    assert leftovers == [], leftovers
    outputs = {p.relative_to(out_root) for p in out_root.rglob("*") if p.is_file()}
    assert outputs == expected, (sorted(outputs - expected)[:5], sorted(expected - outputs)[:5])
    differ = [
        str(rel)
        for rel in sorted(expected)
        if (out_root / rel).read_bytes() != (ref_root / rel).read_bytes()
    ]
    assert differ == [], f"{len(differ)} outputs differ from the in-process run: {differ[:5]}"

    # No orphans: every sidecar this run saw is gone once the client is closed.
    deadline = time.monotonic() + EXIT_TIMEOUT
    alive = set(seen)
    while alive and time.monotonic() < deadline:
        alive = {pid for pid in alive if not _gone(pid)}
        time.sleep(0.1)
    assert alive == set(), f"sidecars still running after close(): {sorted(alive)}"
    assert _sidecar_children() == set()
