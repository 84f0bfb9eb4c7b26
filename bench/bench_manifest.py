"""Re-runs (issue 20): a second run over an unchanged 1,000-file folder.

1,000 generated images (a third each JPEG q95, PNG and WebP q100; 640x480,
photo-like, different pixels each) are optimised to an output folder by
``Client.local(workers=2)`` with the default settings (first run, timed),
then the same batch is submitted again (second run, timed): every file must
come back ``unchanged`` with every output's mtime as it was. The ratio
second/first is what the issue's target (at most 5 %) is about. The pool is
started, and its sidecars ready, outside the timed region; each round uses a
fresh folder and a fresh manifest so the first run is a real first run.
"""

from __future__ import annotations

import io
import os
import pathlib
import shutil
import tempfile
import time

import numpy as np
import pytest
from PIL import Image

from pyimgopt import Settings
from pyimgopt.client import Client
from pyimgopt.router import RouterConfig

FILES = 1000
GROUP = f"manifest: {FILES:,} files, first run vs an unchanged second run"


def _photo(seed: int, w: int = 640, h: int = 480) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    arr = np.stack([128 + 100 * np.sin(x / (17 + seed % 11)) * np.cos(y / 29.0),
                    128 + 90 * np.cos((x + y) / 41.0), 255 * x / (w - 1)], axis=-1)
    return np.clip(arr + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8)


def _folder(root: pathlib.Path) -> None:
    root.mkdir(parents=True)
    for i in range(FILES):
        im = Image.fromarray(_photo(i))
        buf = io.BytesIO()
        kind = ("JPEG", "PNG", "WEBP")[i % 3]
        im.save(buf, kind, **({"quality": 95} if kind == "JPEG" else {"quality": 100} if kind == "WEBP" else {}))
        (root / f"img{i:04d}.{kind.lower().replace('jpeg', 'jpg')}").write_bytes(buf.getvalue())


@pytest.fixture(scope="module")
def source():
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="pyimgopt-bench-manifest-"))
    _folder(tmp / "in")
    yield tmp
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.timeout(3600)  # the first run of 1,000 images takes minutes on a shared machine
def test_manifest_second_run(benchmark, source):
    figures = {}

    def once():
        work = pathlib.Path(tempfile.mkdtemp(dir=source))
        state = work / "state"
        with Client.local(workers=2, config=RouterConfig(recover=False), state_dir=str(state)) as c:
            c.submit([str(source / "in" / "img0000.jpg")], Settings(), out_dir=str(work / "warm")).wait(120)
            t0 = time.perf_counter()
            first = c.submit([str(source / "in")], Settings(), out_dir=str(work / "out")).wait(1800)
            t1 = time.perf_counter()
            mtimes = {p: p.stat().st_mtime_ns for p in (work / "out").iterdir()}
            t2 = time.perf_counter()
            second = c.submit([str(source / "in")], Settings(), out_dir=str(work / "out")).wait(600)
            t3 = time.perf_counter()
        assert len(first) == len(second) == FILES
        assert {r.status for r in second} == {"unchanged"}
        assert {p: p.stat().st_mtime_ns for p in (work / "out").iterdir()} == mtimes
        figures.update(first_s=round(t1 - t0, 3), second_s=round(t3 - t2, 3),
                       ratio=round((t3 - t2) / (t1 - t0), 4))
        shutil.rmtree(work, ignore_errors=True)

    benchmark.group = GROUP
    benchmark.pedantic(once, rounds=1, iterations=1)
    benchmark.extra_info.update(figures, files=FILES, cpus=os.cpu_count())
    print(figures)
