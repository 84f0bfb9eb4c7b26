"""Shared fixtures for the pytest-benchmark suites: the 2725x2225 source image
(RGB, RGBA and JPEG q90 bytes), the corpus path, the two kernel backends,
pyvips (single-threaded, uncached) and Pillow-SIMD (in its own interpreter,
when one is built). Plain helpers live in ``_common.py``.

The source image is the one of sharp's benchmark (2725x2225 JPEG ->
720x588): a corpus photo cropped to that aspect and resized to exactly that
size with Pillow when ``../shared/corpus`` (or ``$PYIMGOPT_CORPUS``) exists,
else a synthetic photo-like NumPy image, so the suite also runs from a bare
clone. Which one was used is recorded in every benchmark's ``extra_info``.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import select
import subprocess
import time
from collections.abc import Iterator
from types import ModuleType

# libvips reads VIPS_CONCURRENCY once, when it initialises (on `import
# pyvips`), so it must be set before any bench module imports pyvips. One
# thread: every contender here runs on one core, and the 2-core bench machine
# is shared.
os.environ["VIPS_CONCURRENCY"] = "1"
# The same for the codecs pyimgopt drives (oxipng's rayon pool, libvips'
# mozjpeg, AVIF): one thread, as in a pool sidecar, so the times compare with
# single-threaded Pillow.
os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["PYIMGOPT_CODEC_THREADS"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from _common import (  # noqa: E402
    CORPUS,
    REPO,
    SOURCE_JPEG_QUALITY,
    SOURCE_PHOTO,
    SOURCE_SIZE,
    Source,
    corpus_available,
    soft_alpha,
    synthetic_rgb,
)
from PIL import Image, ImageOps  # noqa: E402


@pytest.fixture(scope="session")
def source() -> Source:
    width, height = SOURCE_SIZE
    if corpus_available() and (CORPUS / SOURCE_PHOTO).is_file():
        with Image.open(CORPUS / SOURCE_PHOTO) as im:
            # Crop to the target aspect, then resize: no distortion.
            im = ImageOps.fit(im.convert("RGB"), SOURCE_SIZE, Image.Resampling.LANCZOS)
        rgb = np.asarray(im, dtype=np.uint8).copy()
        origin = f"corpus:{SOURCE_PHOTO}"
    else:
        rgb = synthetic_rgb(width, height)
        origin = "synthetic"
    assert rgb.shape == (height, width, 3)
    rgba = np.ascontiguousarray(np.dstack([rgb, soft_alpha(width, height)]))
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=SOURCE_JPEG_QUALITY)
    return Source(rgb=rgb, rgba=rgba, jpeg=buf.getvalue(), origin=origin)


@pytest.fixture(scope="session")
def native() -> ModuleType:
    from pyimgopt import _kernels

    if not _kernels.native_available():
        pytest.skip("pyimgopt._native is not built (PYIMGOPT_PURE=1 build, or no C compiler)")
    return _kernels.load_backend("native")


@pytest.fixture(scope="session")
def pure() -> ModuleType:
    from pyimgopt import _kernels

    return _kernels.load_backend("pure")


@pytest.fixture(scope="session")
def pyvips() -> ModuleType:
    """pyvips with one worker thread and no operation cache (a cache would
    turn every round after the first into a lookup)."""
    try:
        import pyvips as vips
    except (ImportError, OSError) as exc:  # OSError: the libvips shared library
        pytest.skip(
            "pyvips is not usable, pyvips cases skipped "
            f"(pip install -e '.[bench]' installs pyvips + pyvips-binary): {exc}"
        )
    vips.cache_set_max(0)
    return vips


#: Where bench/README.md's command builds Pillow-SIMD (``.benchmarks/`` is
#: git-ignored); ``PYIMGOPT_PILLOW_SIMD`` may name another interpreter.
PILLOW_SIMD_PYTHON = REPO / ".benchmarks" / "pillow-simd-venv" / "bin" / "python"
PILLOW_SIMD_WORKER = pathlib.Path(__file__).with_name("pillow_simd_worker.py")
PILLOW_SIMD_BUILD = (
    "python3 -m venv .benchmarks/pillow-simd-venv && CC='cc -mavx2' "
    ".benchmarks/pillow-simd-venv/bin/pip install --no-binary pillow-simd pillow-simd numpy"
)
WORKER_TIMEOUT = 60.0  # seconds for one reply (start-up loads two 6-MP arrays)


class PillowSimd:
    """A Pillow-SIMD interpreter running ``pillow_simd_worker.py``.

    ``resize`` asks it for one ``Image.resize`` and returns the output shape;
    ``seconds`` collects the worker's own timing of each call (the resize
    alone, as the Pillow contender is timed), which report.py prefers over
    the round trip that pytest-benchmark measures.
    """

    def __init__(self, proc: subprocess.Popen, hello: dict) -> None:
        self.proc = proc
        self.version = hello["version"]
        self.seconds: list[float] = []

    def _line(self) -> dict:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + WORKER_TIMEOUT
        data = b""
        fd = self.proc.stdout.fileno()
        while not data.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError(f"Pillow-SIMD worker silent for {WORKER_TIMEOUT:g} s")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError(f"Pillow-SIMD worker exited (status {self.proc.poll()})")
            data += chunk
        return json.loads(data)

    def hello(self) -> dict:
        return self._line()

    def resize(self, mode: str, size: tuple[int, int], filter_name: str) -> tuple[int, ...]:
        assert self.proc.stdin is not None
        req = {"mode": mode, "size": list(size), "filter": filter_name}
        self.proc.stdin.write((json.dumps(req) + "\n").encode())
        self.proc.stdin.flush()
        reply = self._line()
        self.seconds.append(reply["seconds"])
        width, height = reply["size"]
        return (height, width, len(reply["mode"]))

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture(scope="session")
def pillow_simd(source: Source, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PillowSimd]:
    """Pillow-SIMD in a separate interpreter, fed the same source image;
    skipped, with the reason and the build command, when none is built."""
    python = pathlib.Path(os.environ.get("PYIMGOPT_PILLOW_SIMD") or PILLOW_SIMD_PYTHON)
    if not python.is_file():
        pytest.skip(f"no Pillow-SIMD interpreter at {python} (build one: {PILLOW_SIMD_BUILD})")
    folder = tmp_path_factory.mktemp("pillow-simd")
    np.save(folder / "RGB.npy", source.rgb)
    np.save(folder / "RGBA.npy", source.rgba)
    proc = subprocess.Popen(
        [str(python), str(PILLOW_SIMD_WORKER), str(folder)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": ""},
    )
    worker = None
    try:
        hello = PillowSimd(proc, {"version": None}).hello()
        if not hello.get("ok"):
            pytest.skip(f"Pillow-SIMD worker not usable: {hello.get('reason')}")
        worker = PillowSimd(proc, hello)
        yield worker
    finally:
        (worker or PillowSimd(proc, {"version": None})).close()


def pytest_benchmark_update_machine_info(config, machine_info):
    """Record the versions that decide the numbers in the JSON report."""
    import PIL

    import pyimgopt

    versions = {
        "pyimgopt_backend": pyimgopt.backend,
        "pillow": PIL.__version__,
        "numpy": np.__version__,
        "VIPS_CONCURRENCY": os.environ.get("VIPS_CONCURRENCY"),
    }
    try:
        import pyvips as vips

        versions["pyvips"] = vips.__version__
        versions["libvips"] = ".".join(str(vips.version(i)) for i in range(3))
    except (ImportError, OSError):
        versions["pyvips"] = None
    machine_info["bench_versions"] = versions
