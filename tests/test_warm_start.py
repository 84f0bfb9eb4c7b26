"""Warm start: pool sidecars forked by a pre-imported zygote (``RouterConfig.warm_start``).

Real router, zygote and sidecar processes; the process tree is read from
``/proc``, never from the router's own account of it.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image

from pyimgopt import Settings
from pyimgopt.client import Client
from pyimgopt.router import RouterConfig

from conftest import wait_for

# backend-independent machinery: the pure pass skips it (tests/conftest.py)
pytestmark = pytest.mark.one_backend

FAST = dict(liveness=3.0, heartbeat=0.2)


def _proc(pid: int) -> tuple[int, list[bytes], dict[bytes, bytes]] | None:
    """``(ppid, argv, environ)`` of a live, non-zombie process; None once it is gone."""
    base = pathlib.Path(f"/proc/{pid}")
    try:
        state, ppid = (base / "stat").read_text().rsplit(")", 1)[1].split()[:2]
        argv = (base / "cmdline").read_bytes().split(b"\0")[:-1]
        env = dict(e.partition(b"=")[::2] for e in (base / "environ").read_bytes().split(b"\0") if e)
    except (OSError, ValueError):
        return None
    return None if state == "Z" else (int(ppid), argv, env)


def _images(folder: pathlib.Path, n: int) -> list[pathlib.Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"img{i}.png"
        Image.new("RGB", (40 + i, 30), (10 * i % 256, 200, 30)).save(p)
        paths.append(p)
    return paths


def _same_pixels(a: pathlib.Path, b: pathlib.Path) -> bool:
    with Image.open(a) as x, Image.open(b) as y:
        return x.size == y.size and x.convert("RGB").tobytes() == y.convert("RGB").tobytes()


def _pool(client: Client, n: int) -> list[int]:
    def up():
        st = client.status()
        pids = [s["pid"] for s in st["sidecars"] if s.get("pool")]
        return pids if len(pids) == n else None
    return wait_for(up, 60, f"{n} pool sidecars")


def test_warm_start_sidecars_are_forked_by_one_zygote_with_the_pool_environment(tmp_path):
    """By default every pool sidecar is a child of one zygote (itself our child, started
    as ``-m pyimgopt_sidecar.zygote``) and runs with the pool's environment (one codec
    thread); the files come out right. (About 1 s.)"""
    inputs = _images(tmp_path / "in", 4)
    with Client.local(workers=2, config=RouterConfig(**FAST)) as c:
        results = c.submit([tmp_path / "in"], Settings(), out_dir=tmp_path / "out").wait(60)
        pids = _pool(c, 2)
        info = {pid: _proc(pid) for pid in pids}
    assert sorted(r.status for r in results) == ["optimized"] * 4 or all(r.ok for r in results), results
    for p in inputs:
        assert _same_pixels(p, tmp_path / "out" / p.name)
    parents = {ppid for ppid, _, _ in info.values()}
    assert len(parents) == 1, info
    (zygote,) = parents
    assert zygote != os.getpid()
    z = _proc(zygote)
    assert z is None or z[0] == os.getpid()  # gone already (the pool closed), or our child
    for ppid, argv, env in info.values():
        assert argv[1:3] == [b"-m", b"pyimgopt_sidecar.zygote"], argv
        assert env.get(b"PYIMGOPT_CODEC_THREADS") == b"1" and env.get(b"OPENBLAS_NUM_THREADS") == b"1"
    wait_for(lambda: all(_proc(pid) is None for pid in [*pids, zygote]), 10, "the pool and zygote to exit")


def test_warm_start_off_starts_sidecars_the_plain_way(tmp_path):
    """``warm_start=False``: each sidecar is our child running ``-m pyimgopt_sidecar``. (About 1 s.)"""
    _images(tmp_path / "in", 1)
    with Client.local(workers=1, config=RouterConfig(warm_start=False, **FAST)) as c:
        results = c.submit([tmp_path / "in"], Settings(), out_dir=tmp_path / "out").wait(60)
        (pid,) = _pool(c, 1)
        ppid, argv, _ = _proc(pid)
    assert all(r.ok for r in results), results
    assert ppid == os.getpid() and argv[1:3] == [b"-m", b"pyimgopt_sidecar"], (ppid, argv)


def test_warm_start_pool_survives_its_zygote_being_killed(tmp_path):
    """SIGKILL the zygote: its sidecars exit (their parent is gone), the router starts
    new ones the plain way, and a batch submitted then finishes, right. (About 3 s.)"""
    inputs = _images(tmp_path / "in", 6)
    with Client.local(workers=2, config=RouterConfig(**FAST)) as c:
        first = _pool(c, 2)
        zygote = _proc(first[0])[0]
        assert zygote != os.getpid()
        os.kill(zygote, signal.SIGKILL)
        wait_for(lambda: all(_proc(pid) is None for pid in first), 15, "the forked sidecars to exit")

        def replaced():
            pids = _pool(c, 2)
            return pids if not set(pids) & set(first) else None
        again = wait_for(replaced, 30, "a new pool")
        for pid in again:
            ppid, argv, _ = _proc(pid)
            assert ppid == os.getpid() and argv[1:3] == [b"-m", b"pyimgopt_sidecar"], argv
        results = c.submit([tmp_path / "in"], Settings(), out_dir=tmp_path / "out").wait(60)
        assert c.status()["degraded"] is None
    assert len(results) == 6 and all(r.ok for r in results), results
    for p in inputs:
        assert _same_pixels(p, tmp_path / "out" / p.name)


def _descendants_of(pid: int) -> list[int]:
    """Processes whose command line names ``--parent PID`` (a zygote or a sidecar of that run)."""
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit():
            info = _proc(int(entry.name))
            if info is not None:
                argv = info[1]
                if any(a == b"--parent" and b == str(pid).encode() for a, b in zip(argv, argv[1:])):
                    found.append(int(entry.name))
    return found


@pytest.mark.parametrize("args", [
    ["optimize", "{src}", "-o", "{out}"],
    ["resume", "0123456789abcdef"],  # fails after the zygote was started: nothing is left either
], ids=["optimize", "resume-unknown-batch"])
def test_warm_start_command_line_leaves_no_process_behind(tmp_path, args):
    """The command line starts its zygote first thing; when it exits, with work done or
    with an error, no zygote or sidecar of it is left running. (About 1 s each.)"""
    (src,) = _images(tmp_path / "in", 1)
    argv = [a.format(src=src, out=tmp_path / "out") for a in args]
    proc = subprocess.Popen([sys.executable, "-m", "pyimgopt.cli", *argv, "--state-dir", str(tmp_path / "state")],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen: set[int] = set()
    while proc.poll() is None:
        seen.update(_descendants_of(proc.pid))
        time.sleep(0.02)
    _, err = proc.communicate(timeout=60)
    if args[0] == "optimize":
        assert proc.returncode == 0, err
        assert _same_pixels(src, tmp_path / "out" / src.name)
        assert seen, "no zygote or sidecar was seen while the command ran"
    else:
        assert proc.returncode == 1 and b"unknown batch" in err, err
    wait_for(lambda: not _descendants_of(proc.pid), 10, "no process of the run to remain")
    assert b"Traceback" not in err, err


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_warm_start_sidecar_dying_while_its_zygote_is_stopped_is_replaced(tmp_path):
    """The zygote stopped (SIGSTOP), one of its sidecars killed: the pool sees the death
    from the sidecar's pidfd (no exit report can come), replaces it — the plain way once
    the zygote has not answered for ``ZYGOTE_ANSWER`` s — runs a batch, and closes without
    an error in the router's thread and without leaving the zygote behind. (About 20 s.)"""
    import threading

    from pyimgopt.router.pool import ZYGOTE_ANSWER

    inputs = _images(tmp_path / "in", 3)
    errors: list[str] = []
    old_hook = threading.excepthook
    threading.excepthook = lambda a: errors.append(f"{a.exc_type.__name__}: {a.exc_value}")
    zygote = None
    try:
        with Client.local(workers=2, config=RouterConfig(**FAST)) as c:
            first = _pool(c, 2)
            zygote = _proc(first[0])[0]
            os.kill(zygote, signal.SIGSTOP)
            os.kill(first[0], signal.SIGKILL)

            def replaced():
                pids = _pool(c, 2)
                return pids if first[0] not in pids else None
            again = wait_for(replaced, ZYGOTE_ANSWER + 30, "the dead sidecar to be replaced")
            assert first[1] in again  # the stopped zygote's other sidecar still serves
            results = c.submit([tmp_path / "in"], Settings(), out_dir=tmp_path / "out").wait(60)
    finally:
        threading.excepthook = old_hook
        if zygote is not None and _proc(zygote) is not None:
            os.kill(zygote, signal.SIGKILL)  # only if the pool left it: the assertion below says so
            left = True
        else:
            left = False
    assert not errors, errors
    assert not left, "the stopped zygote outlived the pool"
    assert len(results) == 3 and all(r.ok for r in results), results
    for p in inputs:
        assert _same_pixels(p, tmp_path / "out" / p.name)
