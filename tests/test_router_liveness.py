"""Liveness: the router tells a sidecar busy on a long job from a dead or hung one.

Real router, real sidecar processes, real signals. A pool sidecar inside a
codec that holds the GIL (oxipng at effort 9 on an 8.9 MP PNG) cannot
heartbeat, but its CPU time advances; a SIGSTOPped one does neither and is
replaced. Pool start-up failures back off; a peer that claims the router's
pid is not taken for the in-process worker; a remote sidecar that went
silent and comes back registers again; the in-process worker recovers after
a lease expiry.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import zmq
from PIL import Image

from pyimgopt import Settings, protocol
from pyimgopt.client import Client
from pyimgopt.router import Router, RouterConfig

from conftest import decode, jpeg, photo, temp_files, wait_for

ONE_BACKEND = pytest.mark.skipif(
    os.environ.get("PYIMGOPT_PURE") == "1",
    reason="router liveness does not depend on the kernel backend: run once, in the native pass")


def big_png(w: int = 3700, h: int = 2400) -> bytes:
    """An 8.9 MP RGBA PNG: smooth gradients, a varying alpha (oxipng effort 9: ~30 s here)."""
    x = np.linspace(0, 255, w, dtype=np.float32)
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None]
    arr = np.empty((h, w, 4), np.uint8)
    arr[..., 0] = x
    arr[..., 1] = y
    arr[..., 2] = (x + y) / 2
    arr[..., 3] = 255 - (y / 4).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, "RGBA").save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def encode_png(arr) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def _gone(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


@ONE_BACKEND
@pytest.mark.slow
@pytest.mark.timeout(400)
def test_liveness_big_png_at_effort_9_loses_no_sidecar(tmp_path):
    """pyoxipng holds the GIL for the whole optimisation (about 30 s here): the
    sidecar's heartbeats stop, its CPU time does not. With a 2 s liveness
    window the file is optimised and no sidecar is lost."""
    src = tmp_path / "in" / "big.png"
    src.parent.mkdir()
    data = big_png()
    src.write_bytes(data)
    cfg = RouterConfig(liveness=2.0, heartbeat=0.2)
    with Client.local(workers=1, config=cfg) as c:
        (result,) = c.submit([src], Settings(effort=9), out_dir=tmp_path / "out").wait(360)
        counters = c.status()["counters"]
    assert result.status == "optimized", result.error
    assert counters["sidecars_lost"] == 0 and counters["retries"] == 0, counters
    out = decode((tmp_path / "out" / "big.png").read_bytes())
    ref = Image.open(io.BytesIO(data))
    assert out.size == (3700, 2400)
    assert np.array_equal(np.asarray(out.convert("RGBA")), np.asarray(ref.convert("RGBA")))  # lossless


def test_liveness_stopped_sidecar_is_lost_and_its_job_runs_elsewhere(tmp_path):
    """A SIGSTOPped pool sidecar neither heartbeats nor uses CPU: lost after the
    liveness window, killed, its job done by the replacement; nothing half-written."""
    (tmp_path / "in").mkdir()
    for i in range(3):
        (tmp_path / "in" / f"p{i}.png").write_bytes(encode_png(photo(200, 150, seed=i)))
    # each job stalls 1 s first (a test-only sidecar hook): the stop lands mid-job
    cfg = RouterConfig(liveness=1.5, heartbeat=0.2, sidecar_args=["--test-stall-on", "/p:1"])
    stopped = []
    with Client.local(workers=1, config=cfg) as c:
        batch = c.submit([tmp_path / "in"], Settings(format="avif"), out_dir=tmp_path / "out")
        for ev in batch.events(timeout=120):
            if ev.kind == "started" and not stopped:
                pid = next(s["pid"] for s in c.status()["sidecars"] if s["name"] == ev.data["sidecar"])
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
            if ev.kind == "batch_done":
                break
        results = batch.wait(5)
        counters = c.status()["counters"]
    assert stopped and counters["sidecars_lost"] >= 1
    assert sorted(r.status for r in results) == ["optimized"] * 3
    assert wait_for(lambda: _gone(stopped[0]), 10, "the stopped sidecar to be killed")
    assert not temp_files(tmp_path)


def test_liveness_pool_start_failures_back_off_then_degrade(tmp_path):
    """Sidecars that die at start-up (here: an option they refuse) are started
    again with a growing delay, not in a storm, and after the grace period
    the work runs in-process."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jpg").write_bytes(jpeg(photo(120, 90), quality=95))
    cfg = RouterConfig(sidecar_args=["--no-such-option"], spawn_grace=3.0, liveness=2.0, heartbeat=0.2)
    with Client.local(workers=2, config=cfg) as c:
        time.sleep(4.0)  # observation window: how many starts did 4 s cost?
        spawned = c.status()["counters"]["spawned"]
        results = c.submit([tmp_path / "in"], Settings(), out_dir=tmp_path / "out").wait(60)
        degraded = wait_for(lambda: c.status()["degraded"], 20, "the in-process fallback")
    # back-off 0.5, 1, 2 s after the first failures: a handful, not one per loop turn
    assert 2 <= spawned <= 8, spawned
    assert "no sidecar could start" in degraded
    assert [r.status for r in results] == ["optimized"]


def _raw_sidecar(endpoint: str, pid: int) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 5000)
    sock.connect(endpoint)
    sock.send_multipart(protocol.encode("ready", slots=1, pid=pid, name="impostor", inline=False))
    return sock


def test_liveness_a_peer_claiming_the_routers_pid_is_not_the_in_process_worker(tmp_path):
    """Only the router's own in-process thread is exempt from liveness: a peer
    on the sidecar endpoint that says it has the router's pid and then goes
    silent is lost like any other."""
    sock_dir = tmp_path / "s"
    sock_dir.mkdir(mode=0o700)
    router = Router(f"ipc://{sock_dir}/c", f"ipc://{sock_dir}/s",
                    RouterConfig(pool=False, liveness=1.0, heartbeat=0.2))
    router.start()
    raw = _raw_sidecar(router.sidecar_endpoint, os.getpid())
    try:
        with Client.connect(router.client_endpoint, timeout=10) as c:
            names = wait_for(lambda: [s["name"] for s in c.status()["sidecars"]], 5, "registration")
            assert names == ["impostor"] and not c.status()["sidecars"][0]["local"]
            wait_for(lambda: not c.status()["sidecars"], 10, "the silent impostor to be lost")
            assert c.status()["counters"]["sidecars_lost"] == 1
    finally:
        raw.close(0)
        router.stop()


@ONE_BACKEND
def test_liveness_a_remote_sidecar_that_comes_back_registers_again(tmp_path):
    """A sidecar the router did not start (so cannot kill) is stopped past the
    liveness window: lost. Resumed, it hears it is unknown, registers again
    and serves the next batch."""
    sock_dir = tmp_path / "s"
    sock_dir.mkdir(mode=0o700)
    router = Router(f"ipc://{sock_dir}/c", f"ipc://{sock_dir}/s",
                    RouterConfig(pool=False, liveness=1.0, heartbeat=0.2))
    router.start()
    side = subprocess.Popen([sys.executable, "-m", "pyimgopt_sidecar", "--connect", router.sidecar_endpoint,
                             "--heartbeat", "0.2", "--name", "remote-1"])
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jpg").write_bytes(jpeg(photo(160, 120), quality=95))
    try:
        with Client.connect(router.client_endpoint, timeout=10) as c:
            wait_for(lambda: c.status()["sidecars"], 30, "the sidecar to register")
            os.kill(side.pid, signal.SIGSTOP)
            wait_for(lambda: not c.status()["sidecars"], 10, "the stopped sidecar to be lost")
            os.kill(side.pid, signal.SIGCONT)
            back = wait_for(lambda: c.status()["sidecars"], 10, "the sidecar to register again")
            assert back[0]["name"] == "remote-1" and c.status()["counters"]["sidecars_lost"] == 1
            results = c.submit([tmp_path / "in"], Settings(), out_dir=tmp_path / "out").wait(60)
        assert [r.status for r in results] == ["optimized"]
    finally:
        os.kill(side.pid, signal.SIGCONT)
        side.terminate()
        side.wait(30)
        router.stop()


@ONE_BACKEND
def test_liveness_in_process_worker_recovers_after_a_lease_expiry(tmp_path):
    """workers=0: a job over its lease fails with ``timeout``; the thread still
    runs it (a thread cannot be killed), and once it ends the worker takes the
    rest of the batch instead of being retired for good."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a-slow.png").write_bytes(encode_png(photo(900, 700)))
    for i in range(3):
        (tmp_path / "in" / f"b{i}.jpg").write_bytes(jpeg(photo(96, 72, seed=i), quality=95))
    cfg = RouterConfig(lease=0.5, heartbeat=0.2)
    with Client.local(workers=0, config=cfg) as c:
        results = c.submit([tmp_path / "in"], Settings(format="avif", effort=9),
                           out_dir=tmp_path / "out").wait(120)
    by = {os.path.basename(r.input): r for r in results}
    assert by["a-slow.png"].status == "failed" and by["a-slow.png"].error.code == "timeout"
    assert all(by[f"b{i}.jpg"].status == "optimized" for i in range(3)), by
