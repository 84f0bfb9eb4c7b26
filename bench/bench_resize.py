"""Resize kernel: pyimgopt native vs Pillow ``Image.resize`` vs Pillow-SIMD
vs the pure (Pillow-based) backend, on the 2725x2225 source image.

One benchmark group per (filter, mode, target size), each holding the four
contenders, so ``--benchmark-group-by=group`` compares like with like. For
Pillow only ``Image.resize`` is timed, on an ``Image`` built beforehand: the
NumPy <-> Pillow conversions are not Pillow's resampling cost. Pillow-SIMD
replaces ``PIL``, so it runs in its own interpreter (``bench/conftest.py``,
``pillow_simd_worker.py``), which times its ``Image.resize`` the same way;
those times are in ``extra_info["inner_seconds"]`` (the round trip that
pytest-benchmark measures adds the pipe) and skip with a reason when no
Pillow-SIMD is built. The pure backend is timed through its public
``resize`` (conversions included: that is what a caller pays on that
backend).
"""

from __future__ import annotations

import statistics

import numpy as np
import pytest
from _common import SOURCE_MPIX, SOURCE_SIZE, run
from PIL import Image

FILTERS = {"lanczos3": Image.Resampling.LANCZOS, "bicubic": Image.Resampling.BICUBIC}
MODES = ["RGB", "RGBA"]
TARGETS = [(720, 588), (1362, 1112)]
IMPLS = ["native", "pillow", "pillow-simd", "pure"]
ROUNDS = 15


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("target", TARGETS, ids=lambda t: f"{t[0]}x{t[1]}")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("filter_name", list(FILTERS))
def test_resize(benchmark, request, source, filter_name, mode, target, impl):
    width, height = target
    arr = source.array(mode)
    benchmark.group = (
        f"resize {filter_name} {mode} {SOURCE_SIZE[0]}x{SOURCE_SIZE[1]}->{width}x{height}"
    )
    info = {}
    if impl == "pillow":
        im = Image.fromarray(arr)
        assert im.mode == mode
        fn, args = im.resize, ((width, height), FILTERS[filter_name])
    elif impl == "pillow-simd":
        worker = request.getfixturevalue("pillow_simd")
        fn, args = worker.resize, (mode, (width, height), filter_name)
        info["pillow_simd"] = worker.version
        first = len(worker.seconds)
    else:
        backend = request.getfixturevalue(impl)
        fn, args = backend.resize, (arr, width, height, filter_name)
    out = run(
        benchmark,
        fn,
        *args,
        rounds=ROUNDS,
        mpix=SOURCE_MPIX,
        suite="resize",
        impl=impl,
        filter=filter_name,
        mode=mode,
        target=f"{width}x{height}",
        source=source.origin,
        **info,
    )
    if impl == "pillow-simd":
        # The worker's own times of the timed rounds (the warm-up comes first).
        inner = worker.seconds[first:][-ROUNDS:]
        benchmark.extra_info["inner_seconds"] = inner
        benchmark.extra_info["mpix_per_s"] = round(SOURCE_MPIX / statistics.median(inner), 2)
        shape = out
    else:
        shape = np.asarray(out).shape
    assert shape == (height, width, len(mode)), shape
