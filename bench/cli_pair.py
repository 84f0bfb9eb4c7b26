"""The CLI as a user runs it, contenders side by side: wall and CPU time per run.

Not a pytest-benchmark suite: each round runs every contender once, in turn,
as a fresh ``pyimgopt optimize`` process (so start-up is included), and the
table gives medians over the rounds and ratios to the first contender. CPU
time is the children's user+system time (the CLI and every sidecar it
starts). With ``--json`` runs, "file s" is the sum of the per-file
``seconds`` the CLI reports (the work itself, wherever it ran).

    .venv/bin/python bench/cli_pair.py --rounds 5 one_tiny.png
    .venv/bin/python bench/cli_pair.py --rounds 3 --fit 1600 FOLDER
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

CONTENDERS = {"-j 0": ["-j", "0"], "-j 0 1t": ["-j", "0"], "default": [], "-j 1": ["-j", "1"]}
#: Library contenders (``Client.local`` in a fresh interpreter, router start
#: included): the pool (sidecars forked warm by the zygote), the pool with plain
#: sidecar starts (``warm_start=False``), and with ``inprocess_start=True``.
LIBRARY = {"lib -j 0": "workers=0", "lib pool": "", "lib pool plain": "warm_start=False",
           "lib pool+inprocess_start": "inprocess_start=True"}
_LIB = """
import sys
from pyimgopt import Settings
from pyimgopt.client import Client
from pyimgopt.router import RouterConfig
kw = dict({cfg})
workers = kw.pop("workers", None)
with Client.local(workers=workers, config=RouterConfig(**kw), state_dir=sys.argv[3]) as c:
    b = c.submit([sys.argv[1]], Settings(**({fit} and dict(max_width={fit}, max_height={fit}) or {{}})),
                 out_dir=sys.argv[2])
    for r in b.wait(600):
        print('{{"input": 1, "seconds": %r}}' % r.seconds)
"""
#: ``-j 0 1t``: in-process with one codec thread, as every pool sidecar runs
#: (like with like for the per-file cost).
ONE_THREAD = {"RAYON_NUM_THREADS": "1", "PYIMGOPT_CODEC_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def _run(cli: str, src: str, name: str, fit: int | None) -> tuple[float, float, float]:
    extra = CONTENDERS.get(name, [])
    env = {**os.environ, **ONE_THREAD} if name.endswith(" 1t") else None
    out = tempfile.mkdtemp(prefix="pyimgopt-bench-")
    state = tempfile.mkdtemp(prefix="pyimgopt-bench-state-")
    if name in LIBRARY:
        cmd = [sys.executable, "-c", _LIB.format(cfg=LIBRARY[name], fit=fit or 0), src, out, state]
    else:
        cmd = [cli, "optimize", src, "-o", out, "--json", "--no-progress", "--state-dir", state, *extra]
        if fit:
            cmd += ["--max-width", str(fit), "--max-height", str(fit)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(state, ignore_errors=True)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{cmd} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    file_s = 0.0
    for line in proc.stdout.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("seconds"), (int, float)) and "input" in row:
            file_s += row["seconds"]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, file_s


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--fit", type=int, default=None, help="--max-width/--max-height")
    p.add_argument("--contenders", default="-j 0,default,-j 1")
    a = p.parse_args(argv)
    cli = os.path.join(os.path.dirname(sys.executable), "pyimgopt")
    names = [n.strip() for n in a.contenders.split(",")]
    runs: dict[str, list[tuple[float, float, float]]] = {n: [] for n in names}
    _run(cli, a.src, names[0], a.fit)  # warm the file cache and the imports
    for _ in range(a.rounds):
        for n in names:
            runs[n].append(_run(cli, a.src, n, a.fit))
    base = statistics.median(r[0] for r in runs[names[0]])
    base_cpu = statistics.median(r[1] for r in runs[names[0]])
    print(f"`{a.src}`{' fit ' + str(a.fit) if a.fit else ''}, {a.rounds} rounds, load {os.getloadavg()[0]:.1f}\n")
    print("| contender | median wall s | wall / first | median CPU s | CPU / first | median file s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for n in names:
        wall = statistics.median(r[0] for r in runs[n])
        cpu = statistics.median(r[1] for r in runs[n])
        file_s = statistics.median(r[2] for r in runs[n])
        print(f"| `{n}` | {wall:.2f} | {wall / base:.2f}x | {cpu:.2f} | {cpu / base_cpu:.2f}x | {file_s:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
