"""Shared fixtures: image builders (Pillow + byte surgery), the corpus path,
and a guard that the backend under test is the one the run asked for."""

from __future__ import annotations

import io
import os
import pathlib
import struct
import time
import zlib

from types import ModuleType

import numpy as np
import pytest
from PIL import Image

from pyimgopt import _kernels

DATA = pathlib.Path(__file__).parent / "data"
CORPUS = pathlib.Path(
    os.environ.get("PYIMGOPT_CORPUS", pathlib.Path(__file__).resolve().parents[2] / "shared" / "corpus")
)


def photo(width: int = 320, height: int = 240, seed: int = 0) -> np.ndarray:
    """A smooth, photo-like RGB array (gradients + soft noise): compresses like a photo."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    r = 128 + 100 * np.sin(x / 23.0) * np.cos(y / 31.0)
    g = 128 + 90 * np.cos((x + y) / 41.0)
    b = 255 * x / max(1, width - 1)
    arr = np.stack([r, g, b], axis=-1) + rng.normal(0, 6, (height, width, 3))
    return np.clip(arr, 0, 255).astype(np.uint8)


def encode(im: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def jpeg(arr: np.ndarray | None = None, quality: int = 95, **params) -> bytes:
    im = Image.fromarray(photo() if arr is None else arr)
    return encode(im, "JPEG", quality=quality, **params)


def png_chunk(ctype: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(
        ">I", zlib.crc32(ctype + payload)
    )


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height, with one tiny IDAT (a header bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )


def exif_bytes(orientation: int | None = None, gps: bool = False, make: str | None = None) -> bytes:
    ex = Image.Exif()
    if orientation is not None:
        ex[0x0112] = orientation
    if make:
        ex[0x010F] = make
    if gps:
        ex.get_ifd(0x8825).update({1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)})
    return ex.tobytes()


def decode(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


@pytest.fixture(scope="session", autouse=True)
def _private_state_dir(tmp_path_factory):
    """Journals of CLI runs go to a temp folder, never the user's state dir."""
    old = os.environ.get("PYIMGOPT_STATE_DIR")
    os.environ["PYIMGOPT_STATE_DIR"] = str(tmp_path_factory.mktemp("state"))
    yield
    if old is None:
        os.environ.pop("PYIMGOPT_STATE_DIR", None)
    else:
        os.environ["PYIMGOPT_STATE_DIR"] = old


@pytest.fixture
def prophoto_icc() -> bytes:
    return (DATA / "ProPhotoRGB.icc").read_bytes()


@pytest.fixture(scope="session")
def corpus() -> pathlib.Path:
    if not (CORPUS / "MANIFEST.json").is_file():
        pytest.skip(f"corpus not found at {CORPUS} (set PYIMGOPT_CORPUS or place ../shared/corpus)")
    return CORPUS


def temp_files(root: pathlib.Path) -> list[pathlib.Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".pyimgopt-tmp")]


# -- kernel backends: each test taking `kernels` runs once per available backend


def _native_or_skip() -> ModuleType:
    if os.environ.get("PYIMGOPT_PURE") == "1":
        pytest.skip("PYIMGOPT_PURE=1 selects the pure backend only")
    try:
        return _kernels.load_backend("native")
    except ImportError as exc:
        pytest.skip(
            f"pyimgopt._native is not built ({exc}); "
            "build it with: python setup.py build_ext --inplace"
        )


@pytest.fixture(params=["native", "pure"])
def kernels(request: pytest.FixtureRequest) -> ModuleType:
    """Each available backend module in turn."""
    if request.param == "native":
        return _native_or_skip()
    return _kernels.load_backend("pure")


@pytest.fixture
def native() -> ModuleType:
    """The compiled backend (skipped when unavailable)."""
    return _native_or_skip()


@pytest.fixture
def pure() -> ModuleType:
    """The NumPy/Pillow backend; its resize is Pillow's."""
    return _kernels.load_backend("pure")


# -- the pure pass runs what the backend can change
#
# `make test` runs the suite twice: on the native kernels and on the pure
# fallback (PYIMGOPT_PURE=1). These modules test the router, the wire, the
# journal, trust boundaries, the UI and packaging: machinery that calls no
# kernel of its own, so their outcome does not depend on the backend and the
# pure pass skips them (they run in the native pass). A test in one of them
# that does exercise pixels through the pool opts back in with
# @pytest.mark.both_backends; a backend-independent test elsewhere says so with
# @pytest.mark.one_backend. Every other test runs on both backends.
ONE_BACKEND_MODULES = frozenset({
    "test_auth", "test_errors", "test_files", "test_fuzz_router", "test_journal",
    "test_logs", "test_metrics", "test_packaging", "test_pool", "test_protocol",
    "test_router_liveness", "test_router_scale", "test_security_paths",
    "test_security_router", "test_settings", "test_ui", "test_ui_browser",
})


def pytest_collection_modifyitems(config, items):
    if os.environ.get("PYIMGOPT_PURE") != "1":
        return
    skip = pytest.mark.skip(reason="backend-independent machinery: runs in the native pass only "
                                   "(tests/conftest.py ONE_BACKEND_MODULES)")
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
        one = module in ONE_BACKEND_MODULES and item.get_closest_marker("both_backends") is None
        if one or item.get_closest_marker("one_backend") is not None:
            item.add_marker(skip)


def wait_for(pred, timeout: float, what: str):
    """Poll ``pred`` every 50 ms until it returns something true (returned), at most
    ``timeout`` seconds; an AssertionError naming ``what`` past that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
