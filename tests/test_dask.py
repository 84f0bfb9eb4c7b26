"""The Dask executor: batches on a real Dask cluster, behind the same router and client.

A real ``dask scheduler`` and two ``dask worker`` processes (``--nworkers 1
--nthreads 1``, no nanny, loopback) are started by the module's fixture and
ended by it. The oracle for outputs is the local sidecar pool: the same files
through ``pyimgopt optimize`` without ``--executor`` must give the same bytes.
Cost on a quiet 2-core machine: ~6 s to start the cluster, then a few
seconds per test. The executor does not depend on the pixel backend, so on
the pure backend only the smallest test runs.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from pyimgopt import Settings, backend
from pyimgopt.cli import main
from pyimgopt.client import Client
from pyimgopt.errors import InvalidSettingsError
from pyimgopt.router import Router, RouterConfig
from pyimgopt.security import Capabilities, Policy, Scope

try:
    import distributed
except ImportError:  # only the tests of the executor option itself run
    distributed = None

BIN = pathlib.Path(sys.executable).parent
FULL_ONLY = pytest.mark.skipif(
    backend == "pure", reason="the Dask executor is backend-independent: on the pure backend only "
                              "the smallest Dask test runs (suite budget)")


class Cluster:
    """A scheduler and workers on loopback, each a process this test ends."""

    def __init__(self, folder: pathlib.Path) -> None:
        self.folder = folder
        self.file = folder / "scheduler.json"
        self.procs: list[subprocess.Popen] = []
        self.workers: dict[str, subprocess.Popen] = {}
        self._spawn(["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                     "--scheduler-file", str(self.file)], "scheduler")
        deadline = time.monotonic() + 60
        while not (self.file.exists() and self.file.stat().st_size):
            if time.monotonic() > deadline or self.procs[0].poll() is not None:
                raise RuntimeError("the dask scheduler did not start: " + self._log("scheduler"))
            time.sleep(0.05)
        self.address = json.loads(self.file.read_text())["address"]
        self.port = int(self.address.rsplit(":", 1)[1])
        self.client = distributed.Client(self.address, timeout=30, set_as_default=False)

    def _log(self, name: str) -> str:
        p = self.folder / f"{name}.log"
        return p.read_text(errors="replace")[-2000:] if p.exists() else ""

    def _spawn(self, args: list[str], name: str) -> subprocess.Popen:
        log = open(self.folder / f"{name}.log", "wb")
        proc = subprocess.Popen([str(BIN / "dask"), *args], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        log.close()
        self.procs.append(proc)
        return proc

    def add_worker(self, name: str, memory: str = "1000") -> None:
        """Each worker declares ``MEMORY=1000`` (bytes) unless told otherwise: every job's
        memory estimate is larger, so every test here also checks that such a job still runs
        (on a worker to itself) rather than waiting forever for a worker Dask will never find."""
        self.workers[name] = self._spawn(
            ["worker", "--scheduler-file", str(self.file), "--nworkers", "1", "--nthreads", "1",
             "--no-nanny", "--no-dashboard", "--name", name, "--host", "127.0.0.1",
             "--resources", f"MEMORY={memory}"], name)

    def wait_workers(self, n: int) -> None:
        self.client.wait_for_workers(n, timeout=60)

    def address_of(self, name: str) -> str:
        return next(a for a, w in self.client.scheduler_info()["workers"].items() if w.get("name") == name)

    def remove_worker(self, name: str) -> None:
        """Kill a worker a test added and wait until the scheduler has forgotten it."""
        proc = self.workers.pop(name)
        proc.kill()
        proc.wait(10)
        deadline = time.monotonic() + 30
        while any(w.get("name") == name for w in self.client.scheduler_info()["workers"].values()):
            assert time.monotonic() < deadline, f"the scheduler still lists worker {name}"
            time.sleep(0.05)

    def url(self, shared: bool) -> str:
        return f"dask://127.0.0.1:{self.port}" + ("?files=shared" if shared else "")

    def worker_keys(self) -> dict[str, str]:
        """Per live worker, every task key it has logged (what reached that worker)."""
        logs = self.client.run(lambda dask_worker: [str(x[0]) for x in dask_worker.state.log])
        return {w: "\n".join(keys) for w, keys in logs.items()}

    def close(self) -> None:
        try:
            self.client.close(timeout=5)
        except Exception:
            pass
        for p in self.procs:  # no nanny: nothing else to end (a graceful stop costs ~10 s)
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            p.wait(10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if distributed is None:
        pytest.skip("Dask distributed is not installed (pip install 'pyimgopt[dask]')")
    c = Cluster(tmp_path_factory.mktemp("dask"))
    try:
        c.add_worker("w1")
        c.add_worker("w2")
        c.wait_workers(2)
        yield c
    finally:
        c.close()


@pytest.mark.parametrize("spec, words", [
    ("ray://127.0.0.1:1", "unknown executor"),
    ("dask://127.0.0.1", "expected dask://HOST:PORT"),
    ("dask://127.0.0.1:8786?files=nfs", "files=shared or files=bytes"),
])
def test_dask_executor_option_refuses_a_bad_spec_before_starting(spec, words, tmp_path, capsys):
    rc = main(["optimize", str(tmp_path), "-o", str(tmp_path / "out"), "--executor", spec,
               "--state-dir", str(tmp_path / "state")])
    assert rc == 2 and words in capsys.readouterr().err
    assert not (tmp_path / "state").exists()
    with pytest.raises(InvalidSettingsError, match=words.split("://")[0]):
        Router("inproc://c", "inproc://s", RouterConfig(executor=spec))


def test_dask_executor_without_distributed_says_how_to_install(tmp_path, capsys, monkeypatch):
    """With ``distributed`` unimportable, both the CLI and RouterConfig name the extra."""
    monkeypatch.setitem(sys.modules, "distributed", None)
    rc = main(["optimize", str(tmp_path), "-o", str(tmp_path / "o"), "--executor", "dask://127.0.0.1:8786",
               "--state-dir", str(tmp_path / "state")])
    assert rc == 2 and "pip install 'pyimgopt[dask]'" in capsys.readouterr().err
    with pytest.raises(InvalidSettingsError, match=r"pip install 'pyimgopt\[dask\]'"):
        Router("inproc://c", "inproc://s", RouterConfig(executor="dask://127.0.0.1:8786"))


def make_images(folder: pathlib.Path, n: int, seed: int = 7) -> list[pathlib.Path]:
    """``n`` small real images: JPEG (colour, grey), PNG (RGB, RGBA, palette), in subfolders."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        w, h = 16 + int(rng.integers(0, 40)), 16 + int(rng.integers(0, 30))
        grad = np.linspace(0, 255, w)[None, :, None] * np.ones((h, 1, 1))
        arr = np.clip(grad + rng.normal(0, 18, (h, w, 3)), 0, 255).astype(np.uint8)
        sub = folder / f"d{i % 4}"
        sub.mkdir(parents=True, exist_ok=True)
        kind = i % 5
        if kind == 0:
            p = sub / f"{i:03d}.jpg"
            Image.fromarray(arr).save(p, quality=95)
        elif kind == 1:
            p = sub / f"{i:03d}.jpg"
            Image.fromarray(arr[..., 0]).save(p, quality=92)
        elif kind == 2:
            p = sub / f"{i:03d}.png"
            Image.fromarray(arr).save(p)
        elif kind == 3:
            p = sub / f"{i:03d}.png"
            alpha = (np.arange(w)[None, :] * 255 // max(1, w - 1) * np.ones((h, 1))).astype(np.uint8)
            Image.fromarray(np.dstack([arr, alpha])).save(p)
        else:
            p = sub / f"{i:03d}.png"
            Image.fromarray(arr).quantize(16).save(p)
        paths.append(p)
    return paths


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "pyimgopt", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    return proc


def tree(folder: pathlib.Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def temps(folder: pathlib.Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.name.endswith(".pyimgopt-tmp")]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """200 small images and their outputs through the local sidecar pool (the oracle)."""
    root = tmp_path_factory.mktemp("dask-images")
    make_images(root / "in", 200)
    with Client.local(workers=2, config=RouterConfig(recover=False)) as c:
        results = c.submit([str(root / "in")], Settings(), out_dir=str(root / "local")).wait(timeout=120)
    assert all(r.status in ("optimized", "skipped") for r in results)
    ref = tree(root / "local")
    assert len(ref) == 200
    return root, ref


@FULL_ONLY
def test_dask_cli_200_images_by_path_match_the_local_pool(cluster, images):
    root, ref = images
    out = root / "dask-shared"
    proc = run_cli("optimize", str(root / "in"), "-o", str(out), "--executor", cluster.url(True),
                   "--state-dir", str(root / "state-dask"), "--json", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    assert lines[-1]["files"] == 200 and lines[-1]["failed"] == 0
    got = tree(out)
    assert got.keys() == ref.keys()
    assert [k for k in ref if got[k] != ref[k]] == []
    assert temps(out) == []
    # the work ran on the cluster: both workers logged pyimgopt tasks
    keys = cluster.worker_keys()
    assert len(keys) == 2 and all("pyimgopt-" in k for k in keys.values())


@FULL_ONLY
def test_dask_bytes_mode_gives_the_same_outputs_and_the_router_writes(cluster, images, tmp_path):
    root, ref = images
    out = tmp_path / "out"
    with Client.local(config=RouterConfig(executor=cluster.url(False), recover=False)) as c:
        batch = c.submit([str(root / "in" / "d1")], Settings(), out_dir=str(out))
        results = batch.wait(timeout=120)
        st = c.status()
    assert st["dask"]["files"] == "bytes" and st["dask"]["workers"] == 2
    assert len(results) == 50 and all(r.status in ("optimized", "skipped") for r in results)
    got = tree(out)
    assert got == {k.removeprefix("d1/"): v for k, v in ref.items() if k.startswith("d1/")}
    assert temps(out) == []


@FULL_ONLY
@pytest.mark.parametrize("shared", [True, False], ids=["path", "bytes"])
def test_dask_tasks_report_stages_to_the_client_as_progress_events(cluster, images, tmp_path,
                                                                   monkeypatch, shared):
    """Each task reports the stages a pool sidecar reports, and the client receives them as
    the same ``progress`` events: at least one per job, for that job, after its ``started``
    and before its ``result``, in pipeline order. These jobs take a few ms, so the pool's
    threshold (report only past ``PROGRESS_AFTER``) is lowered to 0 for them. Cost: ~1.5 s each."""
    from pyimgopt.router.dask_executor import DaskExecutor

    monkeypatch.setattr(DaskExecutor, "progress_after", 0.0)
    root, _ = images
    files = sorted((root / "in" / "d2").glob("*"))[:12]
    order = {"decode": 0, "resize": 1, "encode": 2}
    with Client.local(config=RouterConfig(executor=cluster.url(shared), recover=False)) as c:
        batch = c.submit([str(p) for p in files], Settings(), out_dir=str(tmp_path / "out"))
        evs = [(e.kind, e.job, e.data) for e in batch.events(timeout=60)]
    assert evs[-1][0] == "batch_done"
    results = {j: d for k, j, d in evs if k == "result"}
    assert len(results) == 12 and all(d["result"]["status"] in ("optimized", "skipped")
                                       for d in results.values())
    for jid in results:
        mine = [(k, d) for k, j, d in evs if j == jid and k in ("started", "progress", "result")]
        kinds = [k for k, _ in mine]
        assert kinds[0] == "started" and kinds[-1] == "result" and kinds.count("result") == 1, kinds
        stages = [d["stage"] for k, d in mine if k == "progress"]
        assert stages and set(stages) <= set(order), (jid, kinds, stages)
        assert stages == sorted(stages, key=order.__getitem__), stages


@FULL_ONLY
def test_dask_jobs_started_together_go_to_the_scheduler_as_one_graph(cluster, images, tmp_path,
                                                                     monkeypatch):
    """The router's first turn fills the cluster (2 workers: 6 tasks in flight): those
    tasks go to the scheduler in one ``Client.map`` graph, not a ``Client.submit`` each;
    every job is sent exactly once and ends with its output. The real client's calls are
    counted, not replaced. Cost: ~1 s."""
    sent: list[list[str]] = []
    real_map, real_submit = distributed.Client.map, distributed.Client.submit

    def counting_map(self, func, *iterables, key=None, **kw):
        sent.append(list(key))
        return real_map(self, func, *iterables, key=key, **kw)

    def counting_submit(self, func, *args, key=None, **kw):
        sent.append([key])
        return real_submit(self, func, *args, key=key, **kw)

    monkeypatch.setattr(distributed.Client, "map", counting_map)
    monkeypatch.setattr(distributed.Client, "submit", counting_submit)
    root, ref = images
    with Client.local(config=RouterConfig(executor=cluster.url(True), recover=False)) as c:
        results = c.submit([str(root / "in" / "d0")], Settings(), out_dir=str(tmp_path / "out")).wait(60)
    assert len(results) == 50 and all(r.status in ("optimized", "skipped") for r in results)
    assert tree(tmp_path / "out") == {k.removeprefix("d0/"): v for k, v in ref.items() if k.startswith("d0/")}
    keys = [k for call in sent for k in call]
    assert len(keys) == len(set(keys)) == 50  # each job's task sent once
    assert max(len(call) for call in sent) >= 2, [len(call) for call in sent]
    assert len(sent) < 50


def _count_sends(monkeypatch) -> list[tuple[list[str], list[dict], dict]]:
    """Count the real Dask client's ``map`` and ``submit`` calls (not replaced): per call, its
    task keys, their specs and its ``resources``."""
    sent: list[tuple[list[str], list[dict], dict]] = []
    real_map, real_submit = distributed.Client.map, distributed.Client.submit

    def counting_map(self, func, *iterables, key=None, **kw):
        sent.append((list(key), list(iterables[0]), kw.get("resources")))
        return real_map(self, func, *iterables, key=key, **kw)

    def counting_submit(self, func, *args, key=None, **kw):
        sent.append(([key], [args[0] if args else None], kw.get("resources")))
        return real_submit(self, func, *args, key=key, **kw)

    monkeypatch.setattr(distributed.Client, "map", counting_map)
    monkeypatch.setattr(distributed.Client, "submit", counting_submit)
    return sent


@FULL_ONLY
def test_dask_jobs_of_different_sizes_share_a_graph_on_workers_with_real_memory(cluster, images,
                                                                                tmp_path, monkeypatch):
    """With a worker started as the README says (``--resources MEMORY=8e9``), jobs whose
    memory estimates differ (32 MiB + 8 x their size) still go to the scheduler together:
    each asks for its estimate rounded up to a power of two, never less. (Before, each
    asked for its own estimate: one graph per job, 50 ``Client.submit``s.) The other
    workers declare ``MEMORY=1000``, so every job runs on the big one, which is killed at
    the end. Cost: ~3 s (a worker start)."""
    cluster.add_worker("big", memory="8e9")
    try:
        cluster.wait_workers(3)
        sent = _count_sends(monkeypatch)
        root, ref = images
        files = sorted((root / "in" / "d1").glob("*"))
        assert len({f.stat().st_size for f in files}) > 10  # estimates that differ
        with Client.local(config=RouterConfig(executor=cluster.url(True), recover=False)) as c:
            results = c.submit([str(root / "in" / "d1")], Settings(), out_dir=str(tmp_path / "out")).wait(60)
        assert len(results) == 50 and all(r.status in ("optimized", "skipped") for r in results)
        assert tree(tmp_path / "out") == {k.removeprefix("d1/"): v for k, v in ref.items()
                                          if k.startswith("d1/")}
        keys = [k for call in sent for k in call[0]]
        assert len(keys) == len(set(keys)) == 50
        assert max(len(call[0]) for call in sent) >= 2, [len(call[0]) for call in sent]
        assert len(sent) < 50
        least = 32 * 2**20 + 8 * max(f.stat().st_size for f in files)  # the router's first estimate
        asked = {call[2]["MEMORY"] for call in sent}
        assert all(least <= m <= 8e9 and int(m) & (int(m) - 1) == 0 for m in asked), asked
        keys_big = cluster.worker_keys()[cluster.address_of("big")]
        assert all(k in keys_big for k in keys)  # admitted where the memory is
    finally:
        cluster.remove_worker("big")


@FULL_ONLY
def test_dask_an_abandoned_runs_outcome_does_not_end_the_job_sent_again(cluster, tmp_path, monkeypatch):
    """A task force-cancelled on the scheduler (another client, the scheduler dropping it)
    while its job is in flight: the router puts the job back "no attempt spent" and sends it
    again. The abandoned run — ``run_job`` with the first send's spec, on a worker the
    router's tasks cannot use (``MEMORY=1``) — then finishes and logs its outcome. That
    outcome must not end the job (before the fix both sends had the same attempt, task key
    and events, and it did): the job ends with the run of its current send, once. The two
    workers the router can use are held by gate tasks until the current send has shown it
    is heard (a stage event logged by its spec after the abandoned outcome, on the same
    worker, so heard after it). Cost: ~3 s (a worker start)."""
    import uuid

    from pyimgopt.router.dask_executor import DaskExecutor
    from pyimgopt_sidecar.dask_task import _tell, run_job

    monkeypatch.setattr(DaskExecutor, "progress_after", 3600.0)  # no run reports a stage of its own

    def _gate(started: str, gate: str) -> bool:  # (nested: sent by value, workers cannot import tests)
        """Holds its worker's thread until the test opens ``gate`` (30 s at most)."""
        import distributed

        distributed.Event(started).set()
        return distributed.Event(gate).wait(timeout=30)

    make_images(tmp_path / "in", 1)
    [src] = list((tmp_path / "in").rglob("*.*"))
    name = uuid.uuid4().hex
    gates = [cluster.client.submit(_gate, f"{name}-s{i}", f"{name}-gate", workers=[cluster.address_of(w)],
                                   pure=False) for i, w in enumerate(("w1", "w2"))]
    cluster.add_worker("spare", memory="1")
    try:
        for i in range(2):
            assert distributed.Event(f"{name}-s{i}", client=cluster.client).wait(timeout=30)
        cluster.wait_workers(3)
        spare = cluster.address_of("spare")
        sent = _count_sends(monkeypatch)
        with Client.local(config=RouterConfig(executor=cluster.url(True), recover=False)) as c:
            batch = c.submit([str(src)], Settings(), out_dir=str(tmp_path / "out"))
            deadline = time.monotonic() + 30
            while not sent:
                assert time.monotonic() < deadline, "the job was never sent"
                time.sleep(0.02)
            [first_key], [first_spec], _ = sent[0]
            while cluster.client.run_on_scheduler(lambda dask_scheduler, k=first_key: k not in dask_scheduler.tasks):
                assert time.monotonic() < deadline, "the scheduler never had the job's task"
                time.sleep(0.02)
            cluster.client.cancel([distributed.Future(first_key, cluster.client)], force=True)
            while len(sent) < 2:
                assert time.monotonic() < deadline, "the job was not sent again"
                time.sleep(0.02)
            [second_key], [second_spec], _ = sent[1]
            assert second_spec["attempt"] == first_spec["attempt"]  # "no attempt spent"
            # the abandoned run finishes and tells its outcome; then the current send says a stage
            reply = cluster.client.submit(run_job, first_spec, workers=[spare], pure=False).result(30)
            assert "result" in reply
            cluster.client.submit(_tell, second_spec, "progress", stage="encode", workers=[spare],
                                  pure=False).result(30)
            kinds = []
            try:
                for ev in batch.events(timeout=60):
                    kinds.append(ev.kind)
                    if ev.kind in ("progress", "result", "failed"):
                        distributed.Event(f"{name}-gate", client=cluster.client).set()
                    if ev.kind == "result":
                        res = ev.result
            finally:
                distributed.Event(f"{name}-gate", client=cluster.client).set()
        assert kinds.count("result") == 1 and "failed" not in kinds, kinds
        assert "progress" in kinds and kinds.index("progress") < kinds.index("result"), kinds  # before: result, no progress
        assert second_key != first_key  # a task key per send, not per attempt
        assert res.status == "optimized"
        with Image.open(res.output) as out, Image.open(src) as ref:
            assert out.size == ref.size
            out.load()
        assert temps(tmp_path) == []
        assert cluster.client.gather(gates) == [True, True]
    finally:
        distributed.Event(f"{name}-gate", client=cluster.client).set()
        cluster.client.cancel(gates)
        cluster.remove_worker("spare")


def test_dask_scope_denied_file_never_reaches_a_worker(cluster, tmp_path):
    make_images(tmp_path / "in", 3)
    secret = tmp_path / "in" / "private"
    make_images(secret, 1, seed=99)
    caps = Capabilities(read=True, write_new=True, formats=frozenset({"keep"}), max_pixels=10**8,
                        max_file_bytes=2**30, max_batch_bytes=2**32, max_batch_files=100, max_priority=0)
    policy = Policy(caps, Scope(allow=(f"{tmp_path}/in/**",), deny=(f"{tmp_path}/in/private/**",)),
                    Scope(allow=(f"{tmp_path}/out/**",)))
    cfg = RouterConfig(executor=cluster.url(True), recover=False, local_policy=policy)
    with Client.local(config=cfg) as c:  # the client checks nothing: the router's policy decides
        batch = c.submit([str(tmp_path / "in")], Settings(), out_dir=str(tmp_path / "out"))
        events = list(batch.events(timeout=60))
    ends = {e.job: e for e in events if e.kind in ("result", "failed")}
    assert len(ends) == 4
    denied = [e for e in ends.values() if e.kind == "failed"]
    assert len(denied) == 1 and denied[0].result.error.code == "scope_denied"
    assert "private" in denied[0].data["input"]
    keys = "\n".join(cluster.worker_keys().values())
    allowed = [j for j, e in ends.items() if e.kind == "result"]
    assert len(allowed) == 3 and all(f"pyimgopt-{j}-" in keys for j in allowed)  # the oracle sees tasks
    assert f"pyimgopt-{denied[0].job}-" not in keys
    assert not (tmp_path / "out" / "private").exists()


@FULL_ONLY
def test_dask_cancel_mid_batch_ends_every_job_once_and_stops_dispatch(cluster, images, tmp_path):
    root, _ = images
    out = tmp_path / "out"
    ends: dict[str, list[str]] = {}
    started: set[str] = set()
    running_at_cancel: set[str] | None = None  # started, not ended, when the router cancelled
    with Client.local(config=RouterConfig(executor=cluster.url(False), recover=False)) as c:
        batch = c.submit([str(root / "in" / "d3")], Settings(), out_dir=str(out))
        kinds = []
        for ev in batch.events(timeout=60):
            kinds.append(ev.kind)
            if ev.kind == "started":
                started.add(ev.job)
            elif ev.kind == "cancelled":  # the router's events come in its order
                running_at_cancel = started - set(ends)
            if ev.kind in ("result", "failed"):
                ends.setdefault(ev.job, []).append(ev.result.status if ev.kind == "result"
                                                   else ev.result.error.code)
                if len(ends) == 5:
                    batch.cancel()
        st = c.status()
    assert kinds[-1] == "batch_done" and "cancelled" in kinds
    assert len(ends) == 50 and all(len(v) == 1 for v in ends.values())
    codes = [v[0] for v in ends.values()]
    assert set(codes) <= {"optimized", "skipped", "cancelled"} and codes.count("cancelled") >= 30
    # the tasks in flight were aborted: they end cancelled, not with a result (a job whose
    # outcome the router was already fetching or writing cannot be stopped)
    assert running_at_cancel
    # (how many were already past their task depends on the machine's load: at least one
    # still running must have been stopped, which a no-op abort would not do)
    not_stopped = [j for j in running_at_cancel if ends[j][0] != "cancelled"]
    assert len(not_stopped) < len(running_at_cancel), not_stopped
    assert st["dask"]["in_flight"] == 0 and st["memory"]["in_use"] == 0
    written = tree(out)
    assert len(written) == 50 - codes.count("cancelled")  # bytes mode: a cancelled job writes nothing
    assert temps(out) == []


@FULL_ONLY
def test_dask_lease_does_not_count_time_queued_behind_other_tasks(cluster, images, tmp_path):
    """Both workers are busy for 4 s with other clients' tasks; the router's lease is 2.5 s.
    Its jobs wait on the workers longer than a lease, then run quickly: they must succeed,
    not time out (the lease counts from a task's start, with at most another lease of
    waiting in a worker's queue). Cost: ~4 s."""
    root, _ = images
    addrs = list(cluster.client.scheduler_info()["workers"])
    busy = [cluster.client.submit(time.sleep, 4, workers=[a], pure=False) for a in addrs]
    try:
        cfg = RouterConfig(executor=cluster.url(True), recover=False, lease=2.5)
        with Client.local(config=cfg) as c:
            results = c.submit(sorted((root / "in" / "d2").glob("*"))[:4], Settings(),
                               out_dir=str(tmp_path / "out")).wait(timeout=60)
        assert len(results) == 4
        assert all(r.status in ("optimized", "skipped") for r in results), [r.error for r in results]
        assert all(b.done() for b in busy)  # the jobs really waited behind the busy tasks
    finally:
        cluster.client.cancel(busy)


@FULL_ONLY
def test_dask_sigkill_a_worker_mid_batch_every_job_ends_once(cluster, images, tmp_path):
    """Runs last: it kills one of the module's workers (a third one is started for it)."""
    root, ref = images
    cluster.add_worker("victim")
    cluster.wait_workers(3)
    out = tmp_path / "out"
    cfg = RouterConfig(executor=cluster.url(True), recover=False)
    ends: dict[str, list[str]] = {}
    inputs: dict[str, str] = {}
    planted: list[pathlib.Path] = []
    with Client.local(config=cfg) as c:
        batch = c.submit([str(root / "in" / "d0"), str(root / "in" / "d1")], Settings(), out_dir=str(out))
        killed = False
        for ev in batch.events(timeout=60):
            if ev.kind == "started":
                inputs[ev.job] = ev.data["input"]
            if ev.kind in ("result", "failed"):
                ends.setdefault(ev.job, []).append(ev.kind)
                if len(ends) >= 20 and not killed:
                    # what a writer killed mid-write leaves: a temp file for each job on the victim;
                    # the kill waits for a moment when the victim has work in hand
                    victim = [a for a, w in cluster.client.scheduler_info()["workers"].items()
                              if w.get("name") == "victim"]
                    keys = cluster.client.processing(victim).get(victim[0], []) if victim else []
                    for key in keys:
                        jid = re.fullmatch(r"pyimgopt-(.+)-a\d+-s\d+-[0-9a-f]{8}", str(key)).group(1)
                        if jid in inputs:
                            name = pathlib.Path(inputs[jid]).name
                            planted.append(out / f".{name}.0badc0de.pyimgopt-tmp")
                            planted[-1].write_bytes(b"half-written")
                    if planted or len(ends) >= 90:
                        os.kill(cluster.workers["victim"].pid, signal.SIGKILL)
                        killed = True
        assert killed and cluster.workers["victim"].wait(10) == -signal.SIGKILL
        deadline = time.monotonic() + 10  # the router notices the loss on its next look at the cluster
        while c.status()["counters"]["sidecars_lost"] < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert c.status()["counters"]["sidecars_lost"] == 1
    assert len(ends) == 100 and all(v == ["result"] for v in ends.values())
    assert planted and temps(out) == []  # the victim's jobs' temporary files were swept
    # two folders given: their files land side by side in out/
    assert tree(out) == {k[3:]: v for k, v in ref.items() if k.startswith(("d0/", "d1/"))}
    assert temps(out) == []


@FULL_ONLY
@pytest.mark.slow
def test_dask_sigkill_the_router_mid_batch_and_resume_finishes_on_the_cluster(cluster, images, tmp_path):
    """``pyimgopt optimize --executor dask://`` killed mid-batch; ``pyimgopt resume`` on the cluster."""
    root, ref = images
    out, state = tmp_path / "out", tmp_path / "state"
    args = ["--executor", cluster.url(True), "--state-dir", str(state), "--json", "--no-progress"]
    proc = subprocess.Popen([sys.executable, "-m", "pyimgopt", "optimize", str(root / "in" / "d2"),
                             str(root / "in" / "d3"), "-o", str(out), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True)
    try:
        batch, seen = None, 0
        deadline = time.monotonic() + 60
        while seen < 10 and time.monotonic() < deadline:  # a hung child is killed by the finally
            line = proc.stdout.readline()
            if not line:
                break
            obj = json.loads(line)
            if obj.get("type") == "batch":
                batch = obj["id"]
            elif "status" in obj:
                seen += 1
        assert batch is not None and seen == 10
        proc.kill()
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()
    assert len(tree(out)) < 100  # killed mid-batch
    again = run_cli("resume", batch, *args)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout.splitlines()[-1])
    assert summary["failed"] == 0
    assert temps(out) == []
    assert tree(out) == {k[3:]: v for k, v in ref.items() if k.startswith(("d2/", "d3/"))}


@pytest.mark.parametrize("shared", [True, False])
def test_dask_dry_run_writes_nothing_and_a_rerun_is_unchanged(cluster, tmp_path, shared):
    """Issue 20 on the Dask executor: a dry run writes nothing (by path on the
    worker, or by bytes in the router), a real run writes, the next is unchanged."""
    make_images(tmp_path / "in", 5)
    out = tmp_path / "out"
    before = tree(tmp_path / "in")
    cfg = RouterConfig(executor=cluster.url(shared), recover=False, manifest=str(tmp_path / "m.sqlite3"))
    with Client.local(config=cfg) as c:
        dry = c.submit([str(tmp_path / "in")], Settings(), out_dir=str(out), dry_run=True).wait(timeout=120)
        assert len(dry) == 5 and all(r.ok and r.dry_run for r in dry)
        assert not out.exists() and tree(tmp_path / "in") == before
        real = c.submit([str(tmp_path / "in")], Settings(), out_dir=str(out)).wait(timeout=120)
        assert {r.status for r in real} <= {"optimized", "skipped"}
        written = tree(out)
        assert {os.path.basename(r.output): r.bytes_out for r in dry} == \
            {os.path.basename(r.output): r.bytes_out for r in real}
        again = c.submit([str(tmp_path / "in")], Settings(), out_dir=str(out)).wait(timeout=120)
    assert {r.status for r in again} == {"unchanged"} and tree(out) == written and temps(out) == []


def test_dask_fetching_an_outcome_that_never_comes_gives_up(cluster, monkeypatch):
    """A result Dask must recompute where no worker can (its only holder died) is never
    waited on forever: ``_gather`` answers a time-out after ``FETCH_TIMEOUT``. Stand-in for
    the dead holder: a task asking for a resource no worker has (the same endless wait)."""
    from pyimgopt.router import dask_outcomes

    monkeypatch.setattr(dask_outcomes, "FETCH_TIMEOUT", 1.0)
    fut = cluster.client.submit(abs, -1, resources={"NOPE": 1}, pure=False)
    try:
        [(ok, exc)] = dask_outcomes._gather(cluster.client, [fut])  # before the fix: hung here
        assert not ok and isinstance(exc, TimeoutError)
    finally:
        fut.cancel()


@FULL_ONLY
def test_dask_in_place_job_whose_worker_dies_after_finishing_is_done_not_denied(cluster, tmp_path,
                                                                                 monkeypatch):
    """Runs last (it kills a worker). An in-place job by path finishes; its worker is
    SIGKILLed before the router has the result. The job must end ``optimized`` with the file
    optimised — not rerun by Dask on the replaced input (``scope_denied``). The kill sits
    where the router first hears the outcome: its task's ``outcome`` event (the usual way)
    or, if the task's end is heard first, the fetch of its result; the test checks that a
    worker was killed (it once passed without either kill happening)."""
    from pyimgopt.router import dask_outcomes
    from pyimgopt.router.dask_executor import DaskExecutor

    make_images(tmp_path / "in", 1)
    [src] = list((tmp_path / "in").rglob("*.*"))
    before = src.read_bytes()
    killed: list[str] = []
    real_gather, real_told = dask_outcomes._gather, DaskExecutor._told

    def kill_holders(client, futures, holders=()):
        if killed:
            return
        holders = set(holders) | {a for addrs in client.who_has(futures).values() for a in addrs}
        names = {a: w.get("name") for a, w in client.scheduler_info()["workers"].items()}
        for a in holders:
            proc = cluster.workers[names[a]]
            proc.kill()
            proc.wait(10)
            killed.append(names[a])

    def kill_the_holder_then_gather(client, futures):
        kill_holders(client, futures)
        return real_gather(client, futures)

    def kill_the_holder_then_told(self, msg):
        fut = self.futures.get(str(msg.get("job"))) if isinstance(msg, dict) else None
        if fut is not None and msg.get("kind") == "outcome":  # Dask names the worker that logged it
            kill_holders(self.client, [fut], [msg["worker"]])
        return real_told(self, msg)

    monkeypatch.setattr(dask_outcomes, "_gather", kill_the_holder_then_gather)
    monkeypatch.setattr(DaskExecutor, "_told", kill_the_holder_then_told)
    with Client.local(config=RouterConfig(executor=cluster.url(True), recover=False)) as c:
        [res] = c.submit([str(src)], Settings(), in_place=True).wait(timeout=60)
    assert killed and res.status == "optimized", (res.status, res.error, killed)
    after = src.read_bytes()
    assert after != before and len(after) < len(before)
    assert np.array_equal(np.asarray(Image.open(src).convert("RGB")).shape,
                          np.asarray(Image.open(io.BytesIO(before)).convert("RGB")).shape)
    assert temps(tmp_path) == []
