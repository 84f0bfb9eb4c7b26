"""Pool start-up: with ``inprocess_start`` the in-process worker takes small
first attempts while the pool comes up, hands bigger ones back, and retires
once every sidecar has said ready. Real router, sidecar processes, sockets.
"""

from __future__ import annotations

import os
import threading

import pytest
from PIL import Image

from pyimgopt import Settings
from pyimgopt.client import Client
from pyimgopt.router import RouterConfig

from conftest import encode, jpeg, photo, wait_for

# backend-independent machinery: the pure pass skips it (tests/conftest.py)
pytestmark = pytest.mark.one_backend

FAST = dict(liveness=3.0, heartbeat=0.2)


def test_pool_start_small_files_run_in_process_big_ones_wait_for_a_sidecar(tmp_path):
    """Sidecars that cannot start (a bad argument): while the pool tries, the
    in-process worker runs the small file; the big one (its header says more
    than START_JOB_MEMORY) is handed back and runs only once the router gives
    up on the pool and degrades. (About 4 s.)"""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "small.jpg").write_bytes(jpeg(photo(64, 48), quality=95))
    (folder / "big.png").write_bytes(encode(Image.fromarray(photo(2200, 1700)), "PNG", compress_level=1))
    cfg = RouterConfig(inprocess_start=True, spawn_grace=1.0, sidecar_args=["--no-such-option"], **FAST)
    with Client.local(workers=2, config=cfg) as c:
        batch = c.submit([folder], Settings(effort=0), out_dir=tmp_path / "out")
        events = list(batch.events(timeout=120))
        results = batch.wait(10)
    assert sorted(os.path.basename(r.input) for r in results if r.ok) == ["big.png", "small.jpg"]
    kinds = [(e.kind, os.path.basename(e.data.get("input") or "")) for e in events]
    started = [name for kind, name in kinds if kind == "started"]
    assert started[0] == "small.jpg", kinds
    degraded_at = kinds.index(("degraded", ""))
    big_runs = [i for i, k in enumerate(kinds) if k == ("started", "big.png")]
    # it may be offered once (its header is read in-process), then it waits
    assert big_runs[-1] > degraded_at, kinds
    assert [k for k in kinds if k[0] == "result"] and not [k for k in kinds if k[0] == "failed"]


def test_pool_start_in_process_worker_retires_once_the_pool_is_up(tmp_path):
    """The in-process worker takes the first file at once, then stops when the
    pool has come up: no job runs in this process after that. (About 3 s.)"""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(jpeg(photo(64, 48), quality=95))
    cfg = RouterConfig(inprocess_start=True, **FAST)
    before = set(threading.enumerate())  # (an earlier test's worker may still be finishing a job)
    with Client.local(workers=1, config=cfg) as c:
        assert c.submit([folder], Settings(effort=0), out_dir=tmp_path / "out").wait(60)[0].ok
        wait_for(lambda: c.status()["sidecars"], 60, "the pool to come up")
        wait_for(lambda: c.status()["start_worker"] is None, 10, "the in-process worker to retire")
        wait_for(lambda: not any(t.name == "pyimgopt-inprocess" for t in set(threading.enumerate()) - before),
                 10,
                 "the in-process worker's thread to end")
        (folder / "b.jpg").write_bytes(jpeg(photo(64, 48, seed=1), quality=95))
        batch = c.submit([folder / "b.jpg"], Settings(effort=0), out_dir=tmp_path / "out2")
        started = [e for e in batch.events(timeout=60) if e.kind == "started"]
        assert [e.data["sidecar"] for e in started] != ["in-process"] and len(started) == 1


def test_pool_start_is_off_by_default(tmp_path):
    """Without ``inprocess_start`` nothing runs in the router's process while
    the pool is up or coming up (the sidecars' isolation holds for every file)."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(jpeg(photo(64, 48), quality=95))
    with Client.local(workers=1, config=RouterConfig(**FAST)) as c:
        batch = c.submit([folder], Settings(effort=0), out_dir=tmp_path / "out")
        started = [e for e in batch.events(timeout=60) if e.kind == "started"]
        assert c.status()["start_worker"] is None
    assert [e.data["sidecar"] for e in started] != ["in-process"] and len(started) == 1
