"""The Dask executor: 2 workers vs 1, per-job overhead vs the local pool, dispatch rate.

Throughput: 200 small generated images (16-56 px JPEG and PNG, the mix of
``tests/test_dask.py``) per round, submit + wait timed, through
``Client.local`` with ``RouterConfig(executor="dask://...?files=shared")``
against a real ``dask scheduler`` and one or two ``dask worker`` processes
(``--nworkers 1 --nthreads 1 --no-nanny``) on loopback, and through the
local pool of 1 and 2 sidecars; the ``optimize_file`` loop in this process
is the baseline for the per-job overhead (time per job minus in-process time
per job). Each router is started, and its first round (the workers import
the pipeline) run, outside the timed region.

Dispatch rate (a simulation of a cluster past this machine): one ``dask
worker --nthreads 64`` whose task sleeps for the measured median in-process
job time (``_dask_sim.sleep_job``: no pixels, but the events of ``run_job``),
2,000 jobs through the same router and executor, 4 rounds each of tasks
sent in batches (the default) and one by one (as before), alternating. The rate the
router sustains, against the demand of 64 workers running jobs of that
length, says whether dispatch stays ahead; the CPU time per job of the
router's process, the scheduler and the worker says which of them would
limit it on a machine of its own.
"""

from __future__ import annotations

import json
import os
import pathlib
import statistics
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

import pyimgopt
from pyimgopt.client import Client
from pyimgopt.router import RouterConfig

distributed = pytest.importorskip("distributed", reason="pip install 'pyimgopt[dask]'")

BENCH = pathlib.Path(__file__).parent
BIN = pathlib.Path(sys.executable).parent
IMAGES = 200
SIM_JOBS = 2000
SIM_THREADS = 64
SIM_ROUNDS = 4
ROUNDS = 3
WAIT = 300.0
GROUP_THROUGHPUT = f"dask: {IMAGES} small images per round (16-56 px JPEG/PNG)"
GROUP_SIM = f"dask: dispatch rate, {SIM_JOBS} simulated jobs on {SIM_THREADS} worker threads"


def make_images(folder: pathlib.Path, n: int, seed: int = 7) -> None:
    """The images of ``tests/test_dask.py``: JPEG colour/grey, PNG RGB/RGBA/palette."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        w, h = 16 + int(rng.integers(0, 40)), 16 + int(rng.integers(0, 30))
        grad = np.linspace(0, 255, w)[None, :, None] * np.ones((h, 1, 1))
        arr = np.clip(grad + rng.normal(0, 18, (h, w, 3)), 0, 255).astype(np.uint8)
        sub = folder / f"d{i % 4}"
        sub.mkdir(parents=True, exist_ok=True)
        kind = i % 5
        if kind == 0:
            Image.fromarray(arr).save(sub / f"{i:03d}.jpg", quality=95)
        elif kind == 1:
            Image.fromarray(arr[..., 0]).save(sub / f"{i:03d}.jpg", quality=92)
        elif kind == 2:
            Image.fromarray(arr).save(sub / f"{i:03d}.png")
        elif kind == 3:
            alpha = (np.arange(w)[None, :] * 255 // max(1, w - 1) * np.ones((h, 1))).astype(np.uint8)
            Image.fromarray(np.dstack([arr, alpha])).save(sub / f"{i:03d}.png")
        else:
            Image.fromarray(arr).quantize(16).save(sub / f"{i:03d}.png")


class Cluster:
    """A scheduler and workers on loopback, ended by :meth:`close`."""

    def __init__(self, folder: pathlib.Path, env: dict | None = None) -> None:
        self.folder, self.file, self.procs = folder, folder / "scheduler.json", []
        self._spawn(["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                     "--scheduler-file", str(self.file)], env)
        deadline = time.monotonic() + 60
        while not (self.file.exists() and self.file.stat().st_size):
            if time.monotonic() > deadline:
                raise RuntimeError("the dask scheduler did not start")
            time.sleep(0.05)
        self.address = json.loads(self.file.read_text())["address"]
        self.client = distributed.Client(self.address, timeout=30, set_as_default=False)

    def _spawn(self, args: list[str], env: dict | None = None) -> None:
        self.procs.append(subprocess.Popen([str(BIN / "dask"), *args], stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env))

    def add_worker(self, nthreads: int = 1, env: dict | None = None) -> None:
        self._spawn(["worker", "--scheduler-file", str(self.file), "--nworkers", "1", "--nthreads",
                     str(nthreads), "--no-nanny", "--no-dashboard", "--host", "127.0.0.1"], env)
        self.client.wait_for_workers(len(self.procs) - 1, timeout=60)

    def url(self) -> str:
        return "dask://" + self.address.removeprefix("tcp://") + "?files=shared"

    def close(self) -> None:
        self.client.close(timeout=5)
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait(10)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("dask-bench")
    make_images(root / "in", IMAGES)
    return root


def _batch(client: Client, src: pathlib.Path, out: pathlib.Path) -> None:
    results = client.submit([str(src)], pyimgopt.Settings(), out_dir=str(out)).wait(timeout=WAIT)
    assert len(results) == IMAGES and all(r.ok for r in results)


def _time_rounds(benchmark, client: Client, root: pathlib.Path, name: str) -> float:
    counter = iter(range(10**6))
    _batch(client, root / "in", root / f"warm-{name}")  # the workers import the pipeline

    def setup():
        return (client, root / "in", root / f"out-{name}-{next(counter)}"), {}

    benchmark.pedantic(_batch, setup=setup, rounds=ROUNDS, iterations=1)
    return benchmark.stats.stats.median


@pytest.mark.benchmark(group=GROUP_THROUGHPUT)
def test_inprocess(benchmark, images):
    files = sorted(p for p in (images / "in").rglob("*") if p.is_file())
    counter = iter(range(10**6))

    def run(out: pathlib.Path) -> None:
        for p in files:
            assert pyimgopt.optimize_file(p, out / p.name).ok

    benchmark.pedantic(run, setup=lambda: ((images / f"inproc-{next(counter)}",), {}), rounds=ROUNDS,
                       iterations=1)
    benchmark.extra_info["ms_per_job"] = 1000 * benchmark.stats.stats.median / IMAGES


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.benchmark(group=GROUP_THROUGHPUT)
def test_local_pool(benchmark, images, workers):
    with Client.local(workers=workers, config=RouterConfig(recover=False)) as c:
        median = _time_rounds(benchmark, c, images, f"pool{workers}")
    benchmark.extra_info["ms_per_job"] = 1000 * median / IMAGES


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.benchmark(group=GROUP_THROUGHPUT)
def test_dask(benchmark, images, workers, tmp_path):
    cluster = Cluster(tmp_path)
    try:
        for _ in range(workers):
            cluster.add_worker()
        with Client.local(config=RouterConfig(executor=cluster.url(), recover=False)) as c:
            median = _time_rounds(benchmark, c, images, f"dask{workers}")
    finally:
        cluster.close()
    benchmark.extra_info["ms_per_job"] = 1000 * median / IMAGES


def _cpu_s(pid: int, tid: int | None = None) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` (thread ``tid`` of it)."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    try:
        fields = pathlib.Path(path).read_text().rsplit(")", 1)[1].split()
    except OSError:  # a thread that ended
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _router_threads() -> list[int]:
    """This process's threads that do the router's work: its loop, its I/O threads and the
    Dask client's threads (event loop, callbacks) — not the client's submit and events."""
    names = ("pyimgopt-router", "IO loop", "Dask-Callback")
    return [t.native_id for t in threading.enumerate() if t.name.startswith(names)]


@pytest.mark.benchmark(group=GROUP_SIM)
def test_dispatch_rate_simulated(benchmark, tmp_path):
    """2,000 jobs whose task sleeps for the median in-process job time, 64 worker threads.

    Two ways to send the tasks, side by side on one cluster and one router, alternating
    round by round (the first of each pair swapped every round, against the machine's
    drift): ``batched``, the tasks of the jobs started in one turn of the router's loop as
    one graph (the executor's default), and ``one_by_one``, a ``Client.submit`` per job
    (``DaskExecutor.batch_submit = False``, as before). Per variant: the median rate and the
    CPU time per job of the router's threads (its loop, its I/O threads, the Dask client's
    threads), the scheduler and the worker. The benchmark's own time is that of a pair."""
    src = tmp_path / "in"
    make_images(src, 40)
    files = sorted(p for p in src.rglob("*") if p.is_file())
    times = []
    for p in files:
        t = time.perf_counter()
        pyimgopt.optimize_file(p, tmp_path / "measure" / p.name)
        times.append(time.perf_counter() - t)
    job_s = statistics.median(times)
    one = tmp_path / "one.png"
    Image.new("RGB", (1, 1)).save(one)
    sim = tmp_path / "sim"
    sim.mkdir()
    for i in range(SIM_JOBS):
        os.link(one, sim / f"{i:05d}.png")
    # the scheduler unpickles the task graph too: both import _dask_sim from bench/
    env = {**os.environ, "PYIMGOPT_SIM_JOB_S": repr(job_s),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(BENCH), os.environ.get("PYTHONPATH")]))}
    cluster = Cluster(tmp_path, env)
    variants = ("one_by_one", "batched")
    seconds: dict[str, list[float]] = {v: [] for v in variants}
    cpu = {v: {"router": 0.0, "scheduler": 0.0, "worker": 0.0} for v in variants}
    try:
        cluster.add_worker(SIM_THREADS, env)
        procs = {"scheduler": cluster.procs[0].pid, "worker": cluster.procs[1].pid}
        with Client.local(config=RouterConfig(executor=cluster.url(), recover=False)) as c:
            sys.path.insert(0, str(BENCH))
            try:
                import _dask_sim
            finally:
                sys.path.remove(str(BENCH))
            executor = c._router._executor
            executor._fn = _dask_sim.sleep_job  # the simulation: no pixels, a sleep
            counter = iter(range(10**6))

            def usage() -> dict[str, float]:
                me = os.getpid()
                out = {k: _cpu_s(pid) for k, pid in procs.items()}
                out["router"] = sum(_cpu_s(me, tid) for tid in _router_threads())
                return out

            def one(variant: str) -> None:
                executor.batch_submit = variant == "batched"
                before = usage()
                t = time.perf_counter()
                out = tmp_path / f"out{next(counter)}"
                res = c.submit([str(sim)], pyimgopt.Settings(), out_dir=str(out)).wait(WAIT)
                seconds[variant].append(time.perf_counter() - t)
                after = usage()
                for k in after:
                    cpu[variant][k] += after[k] - before[k]
                bad = [r.error for r in res if not r.ok]
                assert len(res) == SIM_JOBS and not bad, (len(bad), bad[0].message)

            def pair() -> None:
                order = variants if len(seconds["batched"]) % 2 == 0 else variants[::-1]
                for v in order:
                    one(v)

            benchmark.pedantic(pair, rounds=SIM_ROUNDS, iterations=1, warmup_rounds=0)
    finally:
        cluster.close()
    demand = SIM_THREADS / job_s
    benchmark.extra_info.update(job_ms=1000 * job_s, demand_64_per_s=demand)
    print(f"\n64 workers on {1000 * job_s:.1f} ms jobs want {demand:.0f} jobs/s")
    for v in variants:
        rate = SIM_JOBS / statistics.median(seconds[v])
        per_job = {k: 1000 * x / (SIM_JOBS * SIM_ROUNDS) for k, x in cpu[v].items()}
        benchmark.extra_info[v] = {"jobs_per_s": rate, "rounds_s": seconds[v],
                                   "workers_kept_busy": rate * job_s,
                                   **{f"{k}_cpu_ms_per_job": x for k, x in per_job.items()}}
        print(f"simulated dispatch ({v}): {rate:.0f} jobs/s (rounds: "
              + ", ".join(f"{SIM_JOBS / x:.0f}" for x in seconds[v])
              + f"); keeps {rate * job_s:.1f} such workers busy; CPU ms per job: "
              + ", ".join(f"{k} {x:.2f}" for k, x in per_job.items()))
