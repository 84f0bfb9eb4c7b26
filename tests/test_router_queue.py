"""The dispatch order: priority, then batches in turn, then handed-back jobs, then largest first.

The queue is a plain data structure, so most of this drives it directly; one
test watches the order in which a real router with one real sidecar starts
the files of a batch (the ``started`` events).
"""

from __future__ import annotations

import os

import pytest

from pyimgopt import Settings
from pyimgopt.client import Client
from pyimgopt.router import RouterConfig
from pyimgopt.router.queue import LOOK_AHEAD, JobQueue

from conftest import jpeg, photo

# backend-independent machinery: the pure pass skips it (tests/conftest.py)
pytestmark = pytest.mark.one_backend


def drain(q: JobQueue, eligible=lambda job, batch: True) -> list[str]:
    order = []
    while True:
        job = next(q.candidates(eligible), None)
        if job is None:
            return order
        q.take(job)
        order.append(job)


def test_queue_largest_first_equal_sizes_in_submit_order():
    q = JobQueue()
    for job, size in [("a", 10), ("b", 500), ("c", 10), ("d", 7_000), ("e", 500), ("f", 0)]:
        q.push(job, "batch", 0, size=size)
    assert drain(q) == ["d", "b", "e", "a", "c", "f"]


def test_queue_handed_back_jobs_go_first_in_the_order_they_came_back():
    q = JobQueue()
    for job, size in [("big", 900), ("mid", 500), ("small", 10)]:
        q.push(job, "batch", 0, size=size)
    q.push("retry1", "batch", 0, front=True, size=1)
    q.push("retry2", "batch", 0, front=True, size=1)
    assert drain(q) == ["retry1", "retry2", "big", "mid", "small"]


def test_queue_priority_then_batches_take_turns():
    q = JobQueue()
    for i, size in enumerate([1, 2, 3]):
        q.push(f"low{i}", "low", 0, size=size)
    for i, size in enumerate([5, 50]):
        q.push(f"x{i}", "x", 5, size=size)
        q.push(f"y{i}", "y", 5, size=size * 2)
    assert drain(q) == ["x1", "y1", "x0", "y0", "low2", "low1", "low0"]


def test_queue_a_job_pushed_again_is_queued_once():
    q = JobQueue()
    q.push("a", "b", 0, size=5)
    q.push("a", "b", 0, front=True)
    assert len(q) == 1 and q.by_priority() == {0: 1}
    assert drain(q) == ["a"]


def test_queue_many_retries_not_due_do_not_hide_fresh_jobs():
    """More handed-back jobs than LOOK_AHEAD wait out their back-off: the
    batch's fresh jobs are still offered (they used to sit behind them, so a
    lone batch dispatched nothing until a back-off ended)."""
    q = JobQueue()
    for i in range(LOOK_AHEAD * 2):
        q.push(f"r{i}", "batch", 0, front=True)
    q.push("fresh", "batch", 0, size=10)
    assert drain(q, lambda job, batch: not job.startswith("r")) == ["fresh"]
    assert len(q) == LOOK_AHEAD * 2


def test_queue_removing_most_jobs_keeps_the_order_of_the_rest():
    """Taken and removed jobs leave stale heap entries behind that are dropped
    lazily and compacted: the rest still come largest first, once each."""
    q = JobQueue()
    n = 20_000
    for i in range(n):
        q.push(f"j{i}", "batch", 0, size=(i * 7919) % n)
    for i in range(n):
        if i % 10:
            assert q.remove(f"j{i}")
    assert not q.remove("j1")
    order = drain(q)
    sizes = [(int(j[1:]) * 7919) % n for j in order]
    assert len(order) == n // 10 and sizes == sorted(sizes, reverse=True)
    assert len(q) == 0 and q.by_priority() == {}


def test_queue_router_starts_the_largest_file_first(tmp_path):
    """One sidecar, files of four sizes submitted smallest first: it starts them
    largest first, so a big image never starts last and leaves cores idle at
    the end of a batch. The order is read from the ``result`` events, which the router
    never drops (``started`` ones may be, for a slow client): one sidecar runs one job
    at a time, so results arrive in the order the jobs started. (About 3 s.)"""
    folder = tmp_path / "in"
    folder.mkdir()
    names = []
    for i, side in enumerate([40, 120, 80, 200]):
        name = f"f{i}.jpg"
        (folder / name).write_bytes(jpeg(photo(side, side, seed=i), quality=95))
        names.append((os.path.getsize(folder / name), name))
    with Client.local(workers=1, config=RouterConfig(liveness=3.0, heartbeat=0.2)) as c:
        batch = c.submit([folder], Settings(effort=0), out_dir=tmp_path / "out")
        ran = [os.path.basename(ev.result.input) for ev in batch.events(timeout=60)
               if ev.kind == "result"]
    assert ran == [name for _, name in sorted(names, reverse=True)]
