"""Shared fixtures for the pytest-benchmark suites: the 2725x2225 source image
(RGB, RGBA and JPEG q90 bytes), the corpus path, the two kernel backends,
and pyvips (single-threaded, uncached). Plain helpers live in ``_common.py``.

The source image is the one of sharp's benchmark (2725x2225 JPEG ->
720x588): a corpus photo cropped to that aspect and resized to exactly that
size with Pillow when ``../shared/corpus`` (or ``$PYIMGOPT_CORPUS``) exists,
else a synthetic photo-like NumPy image, so the suite also runs from a bare
clone. Which one was used is recorded in every benchmark's ``extra_info``.
"""

from __future__ import annotations

import io
import os
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
