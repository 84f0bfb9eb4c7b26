"""The native kernels release the GIL: two threads resizing at once finish
in about the time one thread takes for its share.

This is the one coarse timing check the test suite allows (everything else
that measures speed lives in bench/): a kernel that kept the GIL would
serialise the threads and take about 2x as long, far outside the margin.
"""

from __future__ import annotations

import os
import threading
import time
from types import ModuleType

import numpy as np
import pytest

from pyimgopt import _kernels

CALLS_PER_THREAD = 4
ATTEMPTS = 3  # best of 3, to ride out a noisy machine
# Two threads, each doing one thread's share: ~1.0x with the GIL released,
# ~2.0x with it held.
MAX_RATIO = 1.6


def _usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@pytest.fixture
def native() -> ModuleType:
    if os.environ.get("PYIMGOPT_PURE") == "1":
        pytest.skip("PYIMGOPT_PURE=1 selects the pure backend only")
    try:
        return _kernels.load_backend("native")
    except ImportError as exc:
        pytest.skip(f"pyimgopt._native is not built ({exc})")


def _work(native: ModuleType, img: np.ndarray) -> None:
    for _ in range(CALLS_PER_THREAD):
        native.resize(img, 1000, 750, "lanczos3")


def _threaded(native: ModuleType, img: np.ndarray, n_threads: int) -> float:
    """Wall time for n_threads threads each doing _work, started together."""
    barrier = threading.Barrier(n_threads + 1)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait(timeout=30)
            _work(native, img)
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=run, daemon=True) for _ in range(n_threads)]
    for thread in threads:
        thread.start()
    barrier.wait(timeout=30)
    start = time.perf_counter()
    for thread in threads:
        thread.join(timeout=120)
    elapsed = time.perf_counter() - start
    assert not any(thread.is_alive() for thread in threads), "a resize thread hung"
    if errors:
        raise errors[0]
    return elapsed


def test_gil_resize_runs_in_parallel_on_two_threads(native: ModuleType) -> None:
    if _usable_cpus() < 2:
        pytest.skip("needs at least 2 usable CPUs (os.sched_getaffinity)")
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (1500, 2000, 3), dtype=np.uint8)
    native.resize(img, 1000, 750, "lanczos3")  # warm up: page in, resolve ifuncs
    ratios = []
    for _ in range(ATTEMPTS):
        one = _threaded(native, img, 1)
        two = _threaded(native, img, 2)
        ratios.append(two / one)
        if ratios[-1] < MAX_RATIO:
            break
    assert min(ratios) < MAX_RATIO, (
        f"2 threads took {min(ratios):.2f}x one thread's time for twice the work "
        f"(expected < {MAX_RATIO}x if the GIL is released); ratios {ratios}"
    )
