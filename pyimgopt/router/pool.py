"""The local pool: sidecar processes this router starts and supervises.

Owns spawning pool sidecars with the pool's limits and environment — forked
warm by the zygote (:mod:`.zygote`) or, when it is off or has failed, as
``python -m pyimgopt_sidecar`` — reaping them, keeping the pool at its size with a
back-off when they die at start-up (so a broken environment never becomes a
spawn storm), giving up on a pool that never comes up in favour of the
degraded in-process worker (the same job loop in a thread, over
``inproc``), and reading a pool process's CPU time and state from
``/proc`` — the sign of life of a sidecar busy in a native call that holds
the GIL and cannot heartbeat.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING

from ..logs import event
from .zygote import WarmProcess, Zygote, adopt, pool_env

if TYPE_CHECKING:
    from .sidecars import SidecarExecutor

__all__ = ["LocalPool", "proc_stat"]

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
#: A sidecar that exits sooner than this after its start (or before it said
#: ready) counts as a failed start: the next spawn waits, longer each time.
EARLY_EXIT = 5.0
#: Seconds a spawn asked of the zygote may wait for its answer (a few ms when
#: it works; its first spawns also wait for its imports) before the pool stops
#: asking it and starts sidecars the plain way.
ZYGOTE_ANSWER = 10.0
MAX_BACKOFF = 30.0


def proc_stat(pid: int) -> tuple[str, float] | None:
    """``(state, CPU seconds)`` of process ``pid`` from ``/proc/PID/stat``, or None if gone.

    The state is the kernel's letter: ``R`` running, ``S``/``D`` sleeping,
    ``T``/``t`` stopped, ``Z`` zombie. CPU seconds are user plus system time.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    try:
        rest = raw[raw.rindex(b")") + 2:].split()  # the command name may hold spaces
        return rest[0].decode("ascii"), (int(rest[11]) + int(rest[12])) / _TICKS
    except (ValueError, IndexError):
        return None


class LocalPool:
    """The pool processes of one router, and its in-process worker.

    The in-process worker (the sidecar job loop in a thread, over
    ``inproc``) has two roles: while the pool first comes up it **covers the
    start** — small first attempts only (``START_JOB_MEMORY`` in
    :mod:`.sidecars`), so the first file starts at once and the process's
    GIL stays free for the router — and it retires once every sidecar of the
    pool has said ready; and when no sidecar can run it is the **degraded**
    worker, for every job.
    """

    def __init__(self, executor: SidecarExecutor) -> None:
        self.x = executor
        self.config = executor.config
        self.procs: dict[int, subprocess.Popen | WarmProcess] = {}
        self._spawned_at: dict[int, float] = {}
        self.registered: set[int] = set()  # pids that said ready
        self._failures = 0  # failed starts in a row
        self._next_spawn = 0.0
        self.degraded: threading.Thread | None = None  # the in-process worker's thread
        self.degraded_reason: str | None = None
        self.covering = False  # the in-process worker covers the pool's start
        self.full_once = False  # every sidecar of the pool said ready at least once
        self._first_failure = 0.0
        self.zygote: Zygote | None = None  # forks the pool's sidecars warm (RouterConfig.warm_start)
        self._zygote_off = False  # it failed once: sidecars start the plain way

    def ready(self, pid: int) -> None:
        """A pool sidecar announced itself: its start worked."""
        self.registered.add(pid)
        self._failures = 0

    def _spawn(self, endpoint: str) -> None:
        cfg = self.config
        args = ["--connect", endpoint, "--heartbeat", str(cfg.heartbeat), "--parent", str(os.getpid())]
        if cfg.max_jobs_per_sidecar:
            args += ["--max-jobs", str(cfg.max_jobs_per_sidecar)]
        if cfg.max_rss:
            args += ["--max-rss-mb", str(max(1, cfg.max_rss // (1024 * 1024)))]
        if cfg.max_sidecar_age:
            args += ["--max-age", str(cfg.max_sidecar_age)]
        if cfg.sidecar_address_space:
            args += ["--max-address-space-mb", str(cfg.sidecar_address_space // (1024 * 1024))]
        if cfg.cpu_per_job:
            args += ["--cpu-per-job", str(cfg.cpu_per_job)]
        args += [str(a) for a in cfg.sidecar_args]
        env = pool_env()  # one codec thread per sidecar, the allocator's settings
        zygote = self._zygote(env)
        if zygote is not None and zygote.spawn(args):
            return  # forked warm: the pid arrives with the zygote's report (:meth:`_take_warm`)
        try:
            proc = subprocess.Popen([sys.executable, "-m", "pyimgopt_sidecar", *args],
                                    stdin=subprocess.DEVNULL, env=env)
        except OSError as exc:
            self.go_degraded(f"cannot start sidecars ({exc}); processing in-process")
            return
        self._started(proc)

    def _started(self, proc) -> None:
        r = self.x.r
        self.procs[proc.pid] = proc
        self._spawned_at[proc.pid] = time.monotonic()
        r.counters["spawned"] += 1
        event(r._log, "sidecar_spawned", count=proc.pid)

    # -- the zygote (warm start) ---------------------------------------------------------

    def _zygote(self, env: dict[str, str]) -> Zygote | None:
        """The live zygote to fork sidecars from; None to start them the plain way."""
        if not self.config.warm_start or self._zygote_off:
            return None
        if self.zygote is not None and self.zygote.alive:
            return self.zygote
        if self.zygote is not None:  # it died: start sidecars the plain way from now on
            self._zygote_lost(self.zygote.why_dead or "the zygote exited")
            return None
        self.zygote = adopt(env)
        if self.zygote is None:
            try:
                self.zygote = Zygote(env)
            except OSError as exc:
                self._zygote_lost(f"cannot start the zygote ({exc})")
                return None
        return self.zygote

    def _zygote_lost(self, why: str) -> None:
        """Ask the zygote for nothing more (said once); its live sidecars keep serving."""
        if self._zygote_off:
            return
        self._zygote_off = True
        event(self.x.r._log, "zygote_lost", logging.WARNING, reason=why)

    def _take_warm(self, now: float) -> None:
        """Adopt the sidecars the zygote forked; fall back to plain starts when it fails.

        A refusal or a zygote that does not answer stops the asking: what it
        has not forked is started the plain way (the next :meth:`keep_up`),
        and what it forked runs on. A zygote that never said ready has no
        sidecar: it is killed at once."""
        z = self.zygote
        if z is None:
            return
        spawned, refused = z.take()
        for proc in spawned:
            self._started(proc)
        if self._zygote_off:
            return
        if refused:
            self._zygote_lost(refused[0])
        elif not z.alive:
            self._zygote_lost(z.why_dead or "the zygote exited")
        elif z.stale(now, min(ZYGOTE_ANSWER, self.config.spawn_grace)):
            self._zygote_lost(f"the zygote did not answer in {ZYGOTE_ANSWER:g} s")
            z.abandon()
            if not z.ready:
                z.close(timeout=0)

    def pending(self) -> int:
        """Sidecars asked of the zygote and not yet forked (none once it is no longer asked)."""
        z = self.zygote
        return len(z.pending) if z is not None and z.alive and not self._zygote_off else 0

    def owns(self, pid: int) -> bool:
        """Whether ``pid`` is a pool process (a forked one's report read first)."""
        if pid not in self.procs:
            self._take_warm(time.monotonic())
        return pid in self.procs

    def reap(self, now: float) -> list[tuple[int, int]]:
        """Forget pool processes that exited; return their ``(pid, exit code)``."""
        self._take_warm(now)
        gone = []
        for pid, proc in list(self.procs.items()):
            code = proc.poll()
            if code is None:
                continue
            started = self._spawned_at.pop(pid, now)
            if pid not in self.registered or now - started < EARLY_EXIT:
                self._failures += 1
                if self._failures == 1:
                    self._first_failure = now
                delay = min(MAX_BACKOFF, 0.5 * 2 ** (self._failures - 1))
                self._next_spawn = max(self._next_spawn, now + delay)
                event(self.x.r._log, "sidecar_start_failed", count=code, duration=round(delay, 2))
            del self.procs[pid]
            self.registered.discard(pid)
            gone.append((pid, code))
        return gone

    def keep_up(self, now: float, endpoint: str, live_sidecars: int) -> None:
        """Start what the pool lacks (after the back-off); degrade when it never comes up."""
        r = self.x.r
        if r._target <= 0 or not self.config.pool or self.degraded_reason is not None:
            return
        if live_sidecars >= r._target and not self.full_once:
            self.full_once = True
            self.covering = False  # the executor lets the in-process worker go once idle
        if (not live_sidecars and not self.registered and self._failures >= 3
                and now - self._first_failure > self.config.spawn_grace):
            self.go_degraded("no sidecar could start; processing in-process")
            return
        if now < self._next_spawn:
            return
        for _ in range(r._target - len(self.procs) - self.pending()):
            self._spawn(endpoint)
            if self._failures:  # while starts fail, one at a time
                self._next_spawn = now + min(MAX_BACKOFF, 0.5 * 2 ** (self._failures - 1))
                break

    def _worker(self) -> None:
        """Start the sidecar job loop in a thread of this process (over inproc)."""
        from pyimgopt_sidecar.worker import Sidecar  # the same job loop, in a thread, over inproc

        worker = Sidecar(self.x.inproc_endpoint, context=self.x.r._ctx, name="in-process",
                         heartbeat=self.config.heartbeat, router_timeout=1e9)
        self.degraded = threading.Thread(target=worker.run, name="pyimgopt-inprocess", daemon=True)
        self.degraded.start()

    def cover_start(self) -> None:
        """Let the in-process worker take small first attempts until the pool has come up."""
        if self.degraded is not None or self.full_once:
            return
        self.covering = True
        self._worker()

    def go_degraded(self, reason: str) -> None:
        """Run every job in the in-process worker (no pool)."""
        if self.degraded_reason is not None:
            return
        self.covering = False
        self.degraded_reason = reason
        if self.degraded is None or not self.degraded.is_alive():
            self._worker()
        self.x.degrade()
        self.x.r.announce_degraded(reason)

    def kill(self, pid: int) -> bool:
        """SIGKILL pool process ``pid`` and wait for it; True when it is ours and gone."""
        proc = self.procs.get(pid)
        if proc is None:
            return False
        if proc.poll() is None:
            proc.kill()
        try:
            proc.wait(5)  # dead for sure before its half-written files are removed
        except subprocess.TimeoutExpired:
            return False
        return True

    def shutdown(self) -> None:
        """Wait for the pool to exit (they were told to), kill what does not; stop the worker.

        A sidecar that never said ready holds no job and was told nothing: it
        is killed at once (a short run ends while its pool is still starting)."""
        for pid, proc in self.procs.items():
            if pid not in self.registered and proc.poll() is None:
                proc.kill()
        deadline = time.monotonic() + 5
        try:
            for proc in self.procs.values():
                try:
                    proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.send_signal(signal.SIGKILL)
                    try:
                        proc.wait(5)
                    except subprocess.TimeoutExpired:
                        event(self.x.r._log, "sidecar_not_reaped", logging.WARNING, count=proc.pid)
        finally:
            if self.zygote is not None:
                self.zygote.close()
        if self.degraded is not None:
            self.degraded.join(5)
