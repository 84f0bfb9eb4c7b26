"""The journal and resume: crashes of the router, the host process and a
transaction itself never lose or duplicate work."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from pyimgopt import Settings
from pyimgopt.client import Client
from pyimgopt.journal import JOURNAL_NAME, Journal

from conftest import decode, jpeg, photo, temp_files


def test_journal_records_transitions_and_summaries(tmp_path):
    j = Journal(tmp_path / "s")
    jobs = [{"id": f"b:{i}", "seq": i, "input": f"/in/{i}.jpg", "output": f"/out/{i}.jpg",
             "expect": {"dev": 1, "ino": i}, "status": "queued"} for i in range(3)]
    j.add_batch("b", owner=None, priority=2, settings={"quality": 70}, in_place=False, jobs=jobs)
    j.job_running("b:0", 1)
    j.job_done("b:0", {"status": "optimized", "output": "/out/0.jpg"})
    j.job_failed("b:1", {"code": "decode_failed", "message": "x"})
    (row,) = j.summary("b")
    assert (row["total"], row["done"], row["failed"], row["pending"]) == (3, 1, 1, 1)
    (b,) = j.unfinished()
    assert b["settings"] == {"quality": 70} and [x["status"] for x in b["jobs"]] == ["done", "failed", "queued"]
    assert b["jobs"][0]["attempts"] == 1 and b["jobs"][2]["expect"] == {"dev": 1, "ino": 2}
    j.batch_state("b", "done")
    assert not j.unfinished()
    assert j.prune(older_than=-1) == 1 and not j.summary()
    assert oct(os.stat(tmp_path / "s").st_mode & 0o777) == oct(0o700)
    j.close()


_WRITER = textwrap.dedent(
    """
    import sys
    from pyimgopt.journal import Journal
    j = Journal(sys.argv[1])
    print("ready", flush=True)
    n = 0
    while True:
        jobs = [{"id": f"b{n}:{i}", "seq": i, "input": "/x" * 50, "output": None, "status": "queued"}
                for i in range(50)]
        j.add_batch(f"b{n}", owner=None, priority=0, settings={}, in_place=False, jobs=jobs)
        for i in range(0, 50, 7):
            j.job_done(f"b{n}:{i}", {"status": "optimized"})
        n += 1
    """
)


@pytest.mark.parametrize("delay", [0.05, 0.3, 0.8])
def test_journal_torn_transaction_leaves_a_journal_that_opens(tmp_path, delay):
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
    db = sqlite3.connect(tmp_path / JOURNAL_NAME)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    counts = db.execute("SELECT batch, COUNT(*) FROM jobs GROUP BY batch").fetchall()
    db.close()
    assert all(n == 50 for _, n in counts)  # every batch whole: no half transaction
    j = Journal(tmp_path)
    assert len(j.summary(limit=10**6)) == len(counts)
    j.close()


def make_images(folder, n):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    for i in range(n):
        w, h = (int(v) for v in rng.integers(64, 128, 2))
        (folder / f"i{i:03d}.jpg").write_bytes(jpeg(photo(w, h, seed=i), quality=95))


def start_router(endpoint, state):
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyimgopt", "router", "--bind", endpoint, "--state-dir", str(state), "-j", "2"],
        stderr=subprocess.PIPE, text=True,
    )
    line = proc.stderr.readline()
    if "pyimgopt router" not in line:  # never leave it running behind a failed start
        kill(proc)
        raise AssertionError(f"router did not start: {line}")
    return proc


def kill(proc):
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    proc.stderr.close()


@pytest.mark.slow
@pytest.mark.parametrize("in_place", [False, True], ids=["out-dir", "in-place"])
def test_journal_router_killed_at_quarters_then_restarted_finishes_everything(tmp_path, in_place):
    n = 120
    src = tmp_path / "in"
    make_images(src, n)
    originals = {p.name: p.read_bytes() for p in src.iterdir()}
    sock = tmp_path / "sock"
    sock.mkdir(mode=0o700)
    endpoint = f"ipc://{sock}/clients"
    state = tmp_path / "state"
    settings = Settings(format="auto")
    router = start_router(endpoint, state)
    finished: set[str] = set()
    batch_id = None
    try:
        for quarter in (0.25, 0.5, 0.75, None):
            with Client.connect(endpoint, timeout=30) as c:
                if batch_id is None:
                    batch = c.submit([src], settings, in_place=in_place,
                                     out_dir=None if in_place else tmp_path / "out")
                    batch_id = batch.id
                else:
                    batch = c.attach(batch_id)
                for ev in batch.events(timeout=120):
                    if ev.kind in ("result", "failed"):
                        assert ev.kind == "result", ev.data
                        finished.add(ev.job)
                    if quarter is not None and len(finished) >= quarter * n:
                        break
            if quarter is None:
                break
            kill(router)
            time.sleep(0.3)
            router = start_router(endpoint, state)
        assert len(finished) == n
    finally:
        if router.poll() is None:
            router.send_signal(signal.SIGTERM)
            router.wait(30)
        router.stderr.close()
    assert not temp_files(tmp_path)
    if in_place:
        for name, before in originals.items():
            now = (src / name).read_bytes()
            im = decode(now)  # never truncated, never missing
            assert now == before or len(now) < len(before), name
            assert im.size == decode(before).size
    else:
        outs = sorted((tmp_path / "out").iterdir())
        assert len(outs) == n  # exactly one output per input, whatever format auto chose
        assert len({p.stem for p in outs}) == n
        for p in outs:
            decode(p.read_bytes())
        assert sorted(p.name for p in src.iterdir()) == sorted(originals)


@pytest.mark.slow
def test_journal_host_killed_then_resume_finishes_the_batch(tmp_path):
    src = tmp_path / "in"
    n = 60
    make_images(src, n)
    state = tmp_path / "state"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyimgopt", "optimize", str(src), "-o", str(tmp_path / "out"),
         "--format", "auto", "--json", "-j", "1", "--state-dir", str(state)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        first = json.loads(proc.stdout.readline())
        assert first["type"] == "batch"
        seen = 0
        while seen < 20:
            rec = json.loads(proc.stdout.readline())
            seen += rec["type"] == "result"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
    status = subprocess.run([sys.executable, "-m", "pyimgopt", "status", "--state-dir", str(state), "--json"],
                            capture_output=True, text=True, timeout=60)
    (row,) = [json.loads(x) for x in status.stdout.splitlines()]
    assert row["id"] == first["id"] and row["pending"] > 0
    time.sleep(1.0)  # the killed host's sidecars notice their parent is gone
    done = subprocess.run([sys.executable, "-m", "pyimgopt", "resume", first["id"], "--state-dir", str(state),
                           "--json", "-j", "1"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    outs = list((tmp_path / "out").iterdir())
    assert len(outs) == n and not temp_files(tmp_path)
    for p in outs:
        decode(p.read_bytes())
    status = subprocess.run([sys.executable, "-m", "pyimgopt", "status", "--state-dir", str(state), "--json"],
                            capture_output=True, text=True, timeout=60)
    (row,) = [json.loads(x) for x in status.stdout.splitlines()]
    assert row["state"] == "done" and row["done"] == n


def test_journal_optional_and_client_reattach_replays_finished(tmp_path):
    make_images(tmp_path / "in", 6)
    with Client.local(workers=1, state_dir=str(tmp_path / "state")) as c:
        batch = c.submit([tmp_path / "in"], Settings(), out_dir=tmp_path / "out")
        first = batch.wait(60)
    with Client.local(workers=0, state_dir=str(tmp_path / "state")) as c:
        again = c.attach(batch.id).wait(30)  # a finished batch, rebuilt from the journal
    assert sorted(r.input for r in again) == sorted(r.input for r in first) and len(again) == 6


def _scrape(url):
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    values = {}
    for line in text.splitlines():
        if line.startswith("pyimgopt_") and " " in line:
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def test_journal_metrics_served_by_a_real_router_move_during_a_batch(tmp_path):
    make_images(tmp_path / "in", 40)
    sock = tmp_path / "sock"
    sock.mkdir(mode=0o700)
    endpoint = f"ipc://{sock}/clients"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyimgopt", "router", "--bind", endpoint, "--state-dir", str(tmp_path / "s"),
         "-j", "1", "--metrics-port", "0", "--log-json"],
        stderr=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stderr.readline()
        url = line.rsplit("metrics ", 1)[1].strip()
        before = _scrape(url)
        seen = []
        with Client.connect(endpoint, timeout=30) as c:
            batch = c.submit([tmp_path / "in"], Settings(format="auto"), out_dir=tmp_path / "out")
            for ev in batch.events(timeout=120):
                if ev.kind == "result" and len(seen) < 3:
                    seen.append(_scrape(url))
        after = _scrape(url)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        logs = proc.stderr.read()
        proc.stderr.close()
    key = 'pyimgopt_images_processed_total{format_out="avif",status="optimized"}'
    processed = [sum(v for k, v in snap.items() if k.startswith("pyimgopt_images_processed_total"))
                 for snap in [before, *seen, after]]
    assert processed[0] == 0 and processed[-1] == 40
    assert processed == sorted(processed) and len(set(processed)) >= 3  # it moved during the batch
    assert after.get("pyimgopt_bytes_in_total", 0) > after.get("pyimgopt_bytes_out_total", 0) > 0
    assert any(k.startswith("pyimgopt_image_seconds_count") for k in after)
    assert key in after or any("avif" in k or "webp" in k or "jpeg" in k for k in after)
    records = [json.loads(x) for x in logs.splitlines() if x.startswith("{")]
    assert any(r["event"] == "batch_submitted" and r.get("count") == 40 for r in records)


def test_journal_one_owner_at_a_time_and_a_dead_owner_releases_it(tmp_path):
    """A writable journal holds its folder's lock: a second writer is refused
    (JournalBusyError naming the holder), a reader is not; the lock goes with
    its process however that process ends (here SIGKILL)."""
    from pyimgopt.journal import JournalBusyError, holder

    first = Journal(tmp_path / "s")
    with pytest.raises(JournalBusyError) as err:
        Journal(tmp_path / "s")
    assert err.value.holder == os.getpid() and err.value.code == "io_error"
    assert holder(tmp_path / "s") == os.getpid()
    Journal(tmp_path / "s", readonly=True).close()
    first.close()
    assert holder(tmp_path / "s") is None
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(
        """
        import sys, time
        from pyimgopt.journal import Journal
        j = Journal(sys.argv[1])
        print("ready", flush=True)
        time.sleep(60)
        """), str(tmp_path / "s")], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        assert holder(tmp_path / "s") == proc.pid
        with pytest.raises(JournalBusyError):
            Journal(tmp_path / "s")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
    Journal(tmp_path / "s").close()  # free again


def test_journal_busy_state_folder_gives_a_private_journal(tmp_path):
    from pyimgopt.journal import find_batch, journal_folders, open_journal

    main = open_journal(tmp_path)
    other = open_journal(tmp_path, private_if_busy=True)
    try:
        assert main.folder == str(tmp_path)
        assert os.path.dirname(other.folder) == str(tmp_path / "runs")
        other.add_batch("b2", None, 0, {}, False, [])
        main.add_batch("b1", None, 0, {}, False, [])
    finally:
        main.close()
        other.close()
    assert journal_folders(tmp_path) == [str(tmp_path), other.folder]
    assert find_batch(tmp_path, "b1") == str(tmp_path) and find_batch(tmp_path, "b2") == other.folder
    assert find_batch(tmp_path, "nope") is None


def test_journal_files_are_private_even_in_an_existing_folder(tmp_path):
    """A journal made in a folder that already exists (say 0755) is still 0600,
    and so are its WAL, shared-memory and lock files."""
    folder = tmp_path / "shared"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    j = Journal(folder)
    j.add_batch("b", None, 0, {}, False, [{"id": "b:1", "seq": 0, "input": "/x", "status": "queued"}])
    try:
        modes = {p.name: oct(p.stat().st_mode & 0o777) for p in folder.iterdir()}
    finally:
        j.close()
    assert modes[JOURNAL_NAME] == oct(0o600)
    assert all(m == oct(0o600) for m in modes.values()), modes


def test_journal_refused_jobs_are_never_stored_as_queued(tmp_path):
    """A job refused at submit is written as refused in the batch's own
    transaction: a crash right after can never make recovery run it. An SQL
    trigger records the status of every job row as it is inserted."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "ok.jpg").write_bytes(jpeg(photo(96, 72), quality=95))
    state = tmp_path / "state"
    j = Journal(state)  # the schema, so the trigger has a table to watch
    j._db.executescript(
        "CREATE TABLE inserted(id TEXT, status TEXT);"
        "CREATE TRIGGER audit AFTER INSERT ON jobs BEGIN"
        " INSERT INTO inserted VALUES (NEW.id, NEW.status); END;")
    j.close()
    from pyimgopt import protocol

    with Client.local(workers=1, state_dir=str(state)) as c:
        reply = c._request("submit", batch="r" * 16, priority=0, settings=protocol.pack_settings(Settings()),
                           in_place=False, jobs=[
                               {"id": "", "input": str(tmp_path / "in" / "ok.jpg"),
                                "output": str(tmp_path / "out" / "ok.jpg")},
                               {"id": "", "input": str(tmp_path / "missing.jpg"),
                                "output": str(tmp_path / "out" / "missing.jpg")},
                               {"id": "", "input": str(tmp_path / "in" / "ok.jpg"), "output": None}])
        assert reply["total"] == 3
        results = c.attach("r" * 16).wait(60)
    assert sorted(r.status for r in results) == ["failed", "failed", "optimized"]
    db = sqlite3.connect(state / JOURNAL_NAME)
    rows = db.execute("SELECT status FROM inserted ORDER BY rowid").fetchall()
    db.close()
    assert sorted(s for (s,) in rows) == ["failed", "failed", "queued"]


def test_journal_writer_groups_keep_every_jobs_last_transition(tmp_path):
    """The writer applies a group's job transitions as one executemany per kind;
    each job still ends as its calls in order leave it, whichever order a retry
    (running → queued → running) or a recovery (queued → running) gives them."""
    from pyimgopt.journal import JournalWriter

    j = Journal(tmp_path / "s")
    ids = [f"b:{i}" for i in range(6)]
    j.add_batch("b", owner=None, priority=0, settings={}, in_place=False,
                jobs=[{"id": x, "seq": i, "input": f"/in/{i}", "output": None, "status": "queued"}
                      for i, x in enumerate(ids)])
    answers: list = []
    answered = threading.Event()
    w = JournalWriter(j, deliver=lambda call: (call(), answered.set()))
    calls = [
        ("job_running", "b:0", 1), ("job_done", "b:0", {"status": "optimized"}),  # done
        ("job_running", "b:1", 1), ("job_queued", "b:1"), ("job_running", "b:1", 2),  # a retry: running
        ("job_queued", "b:2"), ("job_running", "b:2", 1),  # recovered, then dispatched: running
        ("job_running", "b:3", 1), ("job_queued", "b:3"),  # retry pending: queued
        ("job_running", "b:4", 1), ("job_failed", "b:4", {"code": "x"}, False),  # failed
        ("job_failed", "b:5", {"code": "cancelled"}, True),  # cancelled
    ]
    for method, *args in calls:
        w.call(method, *args)
    w.call("jobs", "b", then=lambda value, err: answers.append((value, err)))
    w.flush()  # one hand-over: the whole group is one transaction
    assert answered.wait(10)
    w.close()
    rows, err = answers[0]
    assert err is None
    assert [(r["status"], r["attempts"]) for r in rows] == [
        ("done", 1), ("running", 2), ("running", 1), ("queued", 1), ("failed", 1), ("cancelled", 0)]
    assert rows[0]["result"] == {"status": "optimized"} and rows[4]["error"] == {"code": "x"}
