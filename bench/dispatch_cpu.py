"""Dispatch: CPU time of the router's process per job, source trees side by side.

Not a pytest-benchmark suite (``bench_pool.py -k router_cpu`` is the one-tree
case): each round runs, for every tree in turn, a fresh interpreter (the
tree on ``PYTHONPATH``, so its pool sidecars run that tree too) that starts
``Client.local(workers=2)`` with ``RouterConfig(liveness=3.0,
heartbeat=0.2)`` and a journal, waits until both sidecars said ready, then
submits N 1x1 PNGs **in place** (a fresh copy per run) and waits for the
batch. What is timed is the CPU time of that process alone — the router's
thread, the journal and manifest writers, the offload workers, ZeroMQ's I/O
threads and the client's thread — never the sidecars' (other processes) and
never wall time, so a shared machine's load moves the figure little:

- *submit*: ``Client.submit`` until the router acknowledged the batch (the
  client's plan, the chunks, the router's checks, the durable journal rows);
- *run*: from then until ``Batch.wait`` returned every result (dispatch,
  results, journal and manifest rows, events, progress).

The table gives medians over the rounds, per job, and each tree's per-thread
split of the run (median). A tree other than this checkout needs its native
module and a ``pyimgopt_sidecar`` link to its ``sidecar/`` folder, e.g.::

    mkdir /tmp/base && git archive main | tar -x -C /tmp/base
    ln -s sidecar /tmp/base/pyimgopt_sidecar && cp pyimgopt/_native*.so /tmp/base/pyimgopt/
    .venv/bin/python bench/dispatch_cpu.py --rounds 5 --jobs 3000 before=/tmp/base after=.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

_CHILD = r"""
import json, os, shutil, sys, tempfile, threading, time
from pyimgopt import Settings
from pyimgopt.client import Client
from pyimgopt.router import RouterConfig

src, workers = sys.argv[1], int(sys.argv[2])
work = tempfile.mkdtemp(prefix="pyimgopt-dispatch-")
files = os.path.join(work, "files")
shutil.copytree(src, files)
paths = sorted(os.path.join(files, f) for f in os.listdir(files))
tick = os.sysconf("SC_CLK_TCK")

def threads():
    names = {t.native_id: t.name for t in threading.enumerate()}
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat", "rb") as fh:
                raw = fh.read()
        except OSError:
            continue
        comm = raw[raw.index(b"(") + 1:raw.rindex(b")")].decode()
        rest = raw[raw.rindex(b")") + 2:].split()
        name = names.get(int(tid), comm)
        name = "offload" if name.startswith("pyimgopt-offload") else name
        name = "zmq I/O" if comm.startswith("ZMQbg") else name
        out[name] = out.get(name, 0.0) + (int(rest[11]) + int(rest[12])) / tick
    return out

client = Client.local(workers=workers, config=RouterConfig(liveness=3.0, heartbeat=0.2),
                      state_dir=os.path.join(work, "state"))
try:
    deadline = time.monotonic() + 60
    while len(client.status()["sidecars"]) < workers:
        if time.monotonic() > deadline:
            raise SystemExit("pool not ready within 60 s")
        time.sleep(0.05)
    time.sleep(0.3)  # the start's last echoes (sidecar imports are other processes)
    t0, c0 = threads(), time.process_time()
    batch = client.submit(paths, Settings(), in_place=True)
    c1 = time.process_time()
    results = batch.wait(600)
    c2, t2 = time.process_time(), threads()
    failed = [r.error.code for r in results if r.error is not None]
    if len(results) != len(paths) or failed:
        raise SystemExit(f"{len(results)} results of {len(paths)}, failed: {failed[:5]}")
    split = {k: v - t0.get(k, 0.0) for k, v in t2.items() if v - t0.get(k, 0.0) > 0}
    print(json.dumps({"submit": c1 - c0, "run": c2 - c1, "threads": split}))
finally:
    client.close()
    shutil.rmtree(work, ignore_errors=True)
"""


def _pixels(root: str, n: int) -> None:
    from PIL import Image

    for i in range(n):
        Image.new("RGB", (1, 1), (i % 256, i // 256 % 256, 0)).save(os.path.join(root, f"px{i:05d}.png"), "PNG")


def _once(tree: str, src: str, workers: int) -> dict:
    env = {**os.environ, "PYTHONPATH": os.path.abspath(tree)}
    proc = subprocess.run([sys.executable, "-c", _CHILD, src, str(workers)], capture_output=True,
                          text=True, env=env, check=False, cwd=tempfile.gettempdir())
    if proc.returncode:
        raise SystemExit(f"{tree}: failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trees", nargs="+", help="NAME=PATH of a source tree (PATH alone: its name)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=3000)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    trees = [t.split("=", 1) if "=" in t else (t, t) for t in args.trees]
    src = tempfile.mkdtemp(prefix="pyimgopt-pixels-")
    runs: dict[str, list[dict]] = {name: [] for name, _ in trees}
    try:
        _pixels(src, args.jobs)
        for r in range(args.rounds):
            for name, path in trees:
                row = _once(path, src, args.workers)
                runs[name].append(row)
                print(f"round {r + 1} {name}: submit {row['submit'] * 1e3 / args.jobs:.3f} ms/job, "
                      f"run {row['run'] * 1e3 / args.jobs:.3f} ms/job", file=sys.stderr)
    finally:
        shutil.rmtree(src, ignore_errors=True)
    n = args.jobs
    first = statistics.median(x["run"] for x in runs[trees[0][0]])
    print(f"\n{n} 1x1 PNGs in place, Client.local(workers={args.workers}), "
          f"{args.rounds} rounds; CPU of the router's process, medians\n")
    print("| tree | submit ms/job | run ms/job | run vs first |")
    print("| --- | ---: | ---: | ---: |")
    for name, _ in trees:
        sub = statistics.median(x["submit"] for x in runs[name])
        run = statistics.median(x["run"] for x in runs[name])
        print(f"| {name} | {sub * 1e3 / n:.3f} | {run * 1e3 / n:.3f} | {run / first:.2f}x |")
    for name, _ in trees:
        keys = sorted({k for x in runs[name] for k in x["threads"]})
        split = {k: statistics.median(x["threads"].get(k, 0.0) for x in runs[name]) for k in keys}
        parts = ", ".join(f"{k} {v * 1e3 / n:.3f}" for k, v in sorted(split.items(), key=lambda kv: -kv[1]))
        print(f"\n{name}, run by thread (ms/job; submit and run windows together): {parts}")


if __name__ == "__main__":
    main()
