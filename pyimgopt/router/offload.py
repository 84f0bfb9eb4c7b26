"""Work the router's thread must not wait for, done on worker threads.

Owns the small thread pool that runs blocking calls for the router — path
resolution and ``stat`` of submitted files, reads and writes of inline
(remote-sidecar) images — and the hand-back of their completions to the
router's thread: a completion is queued and the router woken through an
``inproc`` socket it polls, then :meth:`Offload.run_completions` calls each
``then`` on the router's thread, so router state is only ever touched there.
The journal's writer thread hands its completions back the same way
(:meth:`Offload.post`).
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import threading
import uuid
from collections.abc import Callable
from typing import Any

import zmq

__all__ = ["Offload"]


class Offload:
    """Run blocking calls on ``workers`` threads; deliver results on the router's thread."""

    def __init__(self, ctx: zmq.Context, workers: int = 2) -> None:
        self._pool = cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pyimgopt-router-io")
        self._done: collections.deque[Callable[[], None]] = collections.deque()
        addr = f"inproc://pyimgopt-offload-{uuid.uuid4().hex}"
        self.wake_rx = ctx.socket(zmq.PULL)
        self.wake_rx.setsockopt(zmq.LINGER, 0)
        self.wake_rx.bind(addr)
        self._wake_tx = ctx.socket(zmq.PUSH)
        self._wake_tx.setsockopt(zmq.LINGER, 0)
        self._wake_tx.setsockopt(zmq.SNDHWM, 1)
        self._wake_tx.connect(addr)
        self._lock = threading.Lock()
        self.pending = 0  # calls submitted and not yet completed (router thread only)

    def submit(self, fn: Callable[..., Any], *args: Any,
               then: Callable[[Any, BaseException | None], None]) -> None:
        """Run ``fn(*args)`` on a worker; later ``then(value, error)`` on the router's thread."""
        self.pending += 1

        def finished(fut: cf.Future) -> None:
            exc = fut.exception()
            value = None if exc is not None else fut.result()

            def call() -> None:
                self.pending -= 1
                then(value, exc)

            self.post(call)

        self._pool.submit(fn, *args).add_done_callback(finished)

    def post(self, call: Callable[[], None]) -> None:
        """Queue ``call`` for the router's thread and wake it (any thread)."""
        self._done.append(call)
        with self._lock:
            try:
                self._wake_tx.send(b"", zmq.NOBLOCK)
            except zmq.ZMQError:
                pass  # a wake-up is already pending: the router will drain everything

    def run_completions(self, budget: int = 10_000,
                        guard: Callable[..., Any] | None = None) -> int:
        """Run queued completions on the router's thread (at most ``budget``); return how many.

        ``guard(what, fn)`` runs each one (the router's: an exception in one is
        logged and the others still run)."""
        while True:
            try:
                self.wake_rx.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
        n = 0
        while self._done and n < budget:
            call = self._done.popleft()
            if guard is None:
                call()
            else:
                guard("completion", call)
            n += 1
        return n

    @property
    def backlog(self) -> int:
        """Completions queued and not yet run."""
        return len(self._done)

    def close(self) -> None:
        """Finish running calls, drop what was not delivered, close the sockets."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._done.clear()
        with self._lock:
            self._wake_tx.close(0)
        self.wake_rx.close(0)
