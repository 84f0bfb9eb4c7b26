"""The sidecar pool: throughput on the corpus, dispatch overhead, sidecar memory.

Throughput: every corpus image (``MANIFEST.json``) fit inside 1600x1600, the
whole folder per round, written to a scratch folder. Contenders: a naive
Pillow loop (open, ``thumbnail((1600, 1600))``, save in the same format with
Pillow's defaults: no optimisation, so it does less work than pyimgopt);
``pyimgopt.optimize_file`` in a loop in this process; and
``Client.local(workers=N)`` for N = 1 .. usable CPUs (the scaling table),
timing ``submit`` + ``wait`` only. Each pool is started, and waited for,
outside the timed region; its warm-up round also warms the sidecars.

Dispatch overhead: 200 1x1 PNGs through a pool of one against the same files
in process; the difference per job is what the router, ZeroMQ and the
sidecar's bookkeeping cost.

Router CPU per job (issue 16's dispatch target): 1,000 1x1 PNGs in place
(a fresh copy each round) through ``Client.local(workers=2)`` with a journal,
``force=True`` so that no round is answered by the manifest; the timer is
this process's CPU time (``time.process_time``: the router's thread, the
journal and manifest writers, ZeroMQ's I/O threads and the client, never
the sidecars), so the figure holds on a shared machine where wall time does
not. ``bench/dispatch_cpu.py`` compares source trees side by side.

Memory: one sidecar (``max_jobs_per_sidecar=None, max_rss=None``, so it is
never recycled) serves 2,000 small images; its RSS, read from
``/proc/PID/statm``, is recorded after the first 200 and after all 2,000.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import statistics
import time

import numpy as np
import pytest
from _common import CORPUS, corpus_available, run, synthetic_rgb
from PIL import Image

import pyimgopt
from pyimgopt.client import Client
from pyimgopt.router import RouterConfig
from pyimgopt.router.resources import usable_cpus

SETTINGS = pyimgopt.Settings(max_width=1600, max_height=1600)
BOX = (1600, 1600)
#: The scaling table: pools of 1 .. N sidecars, N = usable CPUs (at least 2, at most 8).
POOL_SIZES = list(range(1, min(8, max(2, usable_cpus())) + 1))
THROUGHPUT_IMPLS = ["pillow", "inprocess"] + [f"pool-{n}" for n in POOL_SIZES]
THROUGHPUT_ROUNDS = 3
DISPATCH_IMAGES = 200
DISPATCH_ROUNDS = 5
MEMORY_IMAGES, MEMORY_FIRST = 2000, 200
WAIT = 300.0  # seconds: the longest a batch may take before the run fails

GROUP_THROUGHPUT = "pool: corpus fit inside 1600x1600, one folder per round"
GROUP_DISPATCH = f"pool: dispatch overhead, {DISPATCH_IMAGES} 1x1 PNG"
GROUP_MEMORY = f"pool: one sidecar, {MEMORY_IMAGES:,} small images"
ROUTER_CPU_IMAGES = 1000
ROUTER_CPU_ROUNDS = 5
GROUP_ROUTER_CPU = f"pool: router-process CPU, {ROUTER_CPU_IMAGES:,} 1x1 PNG in place"


def _statm_rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm", "rb") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _local_pool(workers: int, config: RouterConfig | None = None) -> Client:
    """A started local pool whose ``workers`` sidecars have all said ``ready``."""
    client = Client.local(workers=workers, config=config)
    deadline = time.monotonic() + 30
    while len(client.status()["sidecars"]) < workers:
        if time.monotonic() > deadline:
            client.close()
            raise RuntimeError(f"pool of {workers} not ready within 30 s")
        time.sleep(0.05)
    return client


def _pool_pass(client: Client, paths: list[str], out_dir: pathlib.Path) -> list[pyimgopt.Result]:
    return client.submit(paths, SETTINGS, out_dir=out_dir).wait(WAIT)


def _inprocess_pass(paths: list[str], out_dir: pathlib.Path) -> list[pyimgopt.Result]:
    return [pyimgopt.optimize_file(p, out_dir / os.path.basename(p), SETTINGS) for p in paths]


def _pillow_pass(paths: list[str], out_dir: pathlib.Path) -> int:
    written = 0
    for p in paths:
        with Image.open(p) as im:
            fmt = im.format
            im.thumbnail(BOX)
            im.save(out_dir / os.path.basename(p), fmt)
        written += 1
    return written


@pytest.fixture(scope="module")
def corpus_files() -> list[str]:
    if not corpus_available():
        pytest.skip(f"no corpus at {CORPUS} (set PYIMGOPT_CORPUS): pool throughput skipped")
    manifest = json.loads((CORPUS / "MANIFEST.json").read_text(encoding="utf-8"))
    return [str(CORPUS / entry["file"]) for entry in manifest]


def _small_images(root: pathlib.Path, n: int) -> list[str]:
    """``n`` photo-like images of 64-160 px, in turn JPEG q95, PNG and WebP q90."""
    rng = np.random.default_rng(7)
    base = synthetic_rgb(160, 160, seed=7)
    paths = []
    for i in range(n):
        w, h = (int(v) for v in rng.integers(64, 161, 2))
        y, x = (int(v) for v in rng.integers(0, 160, 2))
        arr = np.roll(base, (y, x), axis=(0, 1))[:h, :w]
        fmt, ext, params = [
            ("JPEG", "jpg", {"quality": 95}),
            ("PNG", "png", {}),
            ("WEBP", "webp", {"quality": 90}),
        ][i % 3]
        path = root / f"small{i:05d}.{ext}"
        Image.fromarray(arr).save(path, fmt, **params)
        paths.append(str(path))
    return paths


@pytest.mark.parametrize("impl", THROUGHPUT_IMPLS)
def test_pool_throughput(benchmark, tmp_path, corpus_files, impl):
    out = tmp_path / "out"
    out.mkdir()
    benchmark.group = GROUP_THROUGHPUT
    info = {
        "suite": "pool",
        "kind": "throughput",
        "impl": impl,
        "images": len(corpus_files),
        "bytes_in": sum(os.path.getsize(p) for p in corpus_files),
    }
    if impl == "pillow":
        run(benchmark, _pillow_pass, corpus_files, out, rounds=THROUGHPUT_ROUNDS, workers=0, **info)
        return
    if impl == "inprocess":
        results = run(
            benchmark,
            _inprocess_pass,
            corpus_files,
            out,
            rounds=THROUGHPUT_ROUNDS,
            workers=0,
            **info,
        )
    else:
        workers = int(impl.split("-")[1])
        client = _local_pool(workers)
        try:
            results = run(
                benchmark,
                _pool_pass,
                client,
                corpus_files,
                out,
                rounds=THROUGHPUT_ROUNDS,
                workers=workers,
                **info,
            )
            counters = client.status()["counters"]
        finally:
            client.close()
        benchmark.extra_info["sidecars_lost"] = counters["sidecars_lost"]
    failed = [(r.input, r.error.code) for r in results if r.error is not None]
    assert failed == [], failed
    benchmark.extra_info["bytes_out"] = sum(r.bytes_out or 0 for r in results)
    benchmark.extra_info["statuses"] = {
        s: [r.status for r in results].count(s) for s in sorted({r.status for r in results})
    }


@pytest.fixture(scope="module")
def pixels(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("pixels")
    paths = []
    for i in range(DISPATCH_IMAGES):
        path = root / f"px{i:03d}.png"
        Image.new("RGB", (1, 1), (i % 256, 0, 0)).save(path, "PNG")
        paths.append(str(path))
    return paths


@pytest.mark.parametrize("impl", ["inprocess", "pool-1"])
def test_pool_dispatch_overhead(benchmark, tmp_path, pixels, impl):
    out = tmp_path / "out"
    out.mkdir()
    benchmark.group = GROUP_DISPATCH
    info = {"suite": "pool", "kind": "dispatch", "impl": impl, "images": len(pixels)}
    if impl == "inprocess":
        results = run(benchmark, _inprocess_pass, pixels, out, rounds=DISPATCH_ROUNDS, **info)
    else:
        client = _local_pool(1)
        try:
            results = run(
                benchmark, _pool_pass, client, pixels, out, rounds=DISPATCH_ROUNDS, **info
            )
        finally:
            client.close()
    assert len(results) == len(pixels)
    assert all(r.error is None for r in results)
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        benchmark.extra_info["per_job_ms"] = round(stats.stats.median / len(pixels) * 1e3, 3)


@pytest.mark.benchmark(timer=time.process_time)
def test_pool_dispatch_router_cpu(benchmark, tmp_path):
    """CPU of this (the router's) process per job: submit + wait, sidecars excluded."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(ROUTER_CPU_IMAGES):
        Image.new("RGB", (1, 1), (i % 256, i // 256 % 256, 0)).save(src / f"px{i:05d}.png", "PNG")
    rounds = iter(range(10**6))
    split: list[tuple[float, float]] = []  # (submit, run) CPU seconds per round

    def fresh():
        folder = tmp_path / f"round{next(rounds)}"
        shutil.copytree(src, folder)
        return (sorted(str(p) for p in folder.iterdir()),), {}

    def one(paths: list[str]) -> list[pyimgopt.Result]:
        c0 = time.process_time()
        batch = client.submit(paths, pyimgopt.Settings(), in_place=True, force=True)
        c1 = time.process_time()
        results = batch.wait(WAIT)
        split.append((c1 - c0, time.process_time() - c1))
        return results

    benchmark.group = GROUP_ROUTER_CPU
    benchmark.extra_info.update(suite="pool", kind="router_cpu", impl="pool-2", images=ROUTER_CPU_IMAGES)
    config = RouterConfig(liveness=3.0, heartbeat=0.2, state_dir=str(tmp_path / "state"))
    client = _local_pool(2, config)
    try:
        results = benchmark.pedantic(one, setup=fresh, rounds=ROUTER_CPU_ROUNDS, warmup_rounds=1,
                                     iterations=1)
    finally:
        client.close()
    failed = [(r.input, r.error.code) for r in results if r.error is not None]
    assert failed == [], failed
    assert len(results) == ROUTER_CPU_IMAGES
    timed = split[1:]  # the warm-up round is not timed
    benchmark.extra_info["submit_ms_per_job"] = round(
        statistics.median(s for s, _ in timed) / ROUTER_CPU_IMAGES * 1e3, 3)
    benchmark.extra_info["run_ms_per_job"] = round(
        statistics.median(r for _, r in timed) / ROUTER_CPU_IMAGES * 1e3, 3)


def test_pool_sidecar_memory(benchmark, tmp_path):
    paths = _small_images(tmp_path, MEMORY_IMAGES)
    out = tmp_path / "out"
    benchmark.group = GROUP_MEMORY
    config = RouterConfig(max_jobs_per_sidecar=None, max_rss=None)
    client = _local_pool(1, config)
    try:
        pid = client.status()["sidecars"][0]["pid"]
        first = _pool_pass(client, paths[:MEMORY_FIRST], out)
        rss_first = _statm_rss(pid)
        rest = run(
            benchmark,
            _pool_pass,
            client,
            paths[MEMORY_FIRST:],
            out,
            rounds=1,
            warmup_rounds=0,
            suite="pool",
            kind="memory",
            impl="pool-1",
            images=MEMORY_IMAGES,
        )
        rss_last = _statm_rss(pid)
        status = client.status()
    finally:
        client.close()
    results = first + rest
    failed = [(r.input, r.error.code) for r in results if r.error is not None]
    assert failed == [], failed
    # The same sidecar served every job: it was never recycled or lost.
    assert [s["pid"] for s in status["sidecars"]] == [pid], status["sidecars"]
    assert status["sidecars"][0]["jobs_done"] == MEMORY_IMAGES, status["sidecars"]
    benchmark.extra_info.update(
        rss_after_first=rss_first,
        rss_after_all=rss_last,
        first_images=MEMORY_FIRST,
        rss_change_pct=round(100 * (rss_last - rss_first) / rss_first, 1),
    )
