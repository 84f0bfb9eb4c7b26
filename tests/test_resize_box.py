"""``resize(..., box=(x0, y0, x1, y1))``: the output covers only that input region.

Both backends against a float64 reference built here (Pillow's geometry with
the box's start and extent, the weights normalised per output), the argument
checks, and that the whole input as box is the plain resize. About 0.3 s.
"""

from __future__ import annotations

import math
from types import ModuleType

import numpy as np
import pytest

from pyimgopt import _kernels


@pytest.fixture(params=["native", "pure"])
def kernels(request: pytest.FixtureRequest) -> ModuleType:
    if request.param == "native" and not _kernels.native_available():
        pytest.skip("pyimgopt._native is not built")
    return _kernels.load_backend(request.param)


def _lanczos3(x: float) -> float:
    if x == 0:
        return 1.0
    if abs(x) >= 3:
        return 0.0
    px = math.pi * x
    return 3 * math.sin(px) * math.sin(px / 3) / (px * px)


def _weights(n_in: int, lo: float, hi: float, n_out: int) -> np.ndarray:
    m = np.zeros((n_out, n_in))
    scale = (hi - lo) / n_out
    fs = max(scale, 1.0)
    support = 3 * fs
    for i in range(n_out):
        center = lo + (i + 0.5) * scale
        a = max(int(center - support + 0.5), 0)
        b = min(int(center + support + 0.5), n_in)
        w = np.array([_lanczos3((x - center + 0.5) / fs) for x in range(a, b)])
        m[i, a:b] = w / w.sum()
    return m


def _reference(img: np.ndarray, w: int, h: int, box: tuple[float, float, float, float]) -> np.ndarray:
    x0, y0, x1, y1 = box
    wy = _weights(img.shape[0], y0, y1, h)
    wx = _weights(img.shape[1], x0, x1, w)
    out = np.einsum("yi,ijc,xj->yxc", wy, img.astype(np.float64), wx)
    return np.floor(np.clip(out, 0, 255) + 0.5).astype(np.uint8)


def _smooth(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    arr = np.stack([128 + 100 * np.sin(x / 5.0), 128 + 90 * np.cos(y / 4.0), 200 * x / w], axis=-1)
    return np.clip(arr, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("box", [(0, 0, 100.25, 60.5), (0.75, 0.5, 101, 61), (0.5, 0, 100.5, 60.125)])
def test_resize_box_matches_the_float64_reference(kernels: ModuleType, box: tuple) -> None:
    img = _smooth(61, 101)
    out = kernels.resize(img, 37, 23, "lanczos3", box=box)
    ref = _reference(img, 37, 23, box)
    # native: within one level of the exact result; Pillow (pure) rounds to 8 bits between
    # its two passes: one more level at most on this smooth image
    assert np.abs(out.astype(int) - ref).max() <= (1 if kernels.__name__.endswith("native") else 2)
    # and the box is not ignored: the whole-image result differs from it
    whole = _reference(img, 37, 23, (0, 0, 101, 61))
    assert np.abs(whole.astype(int) - ref).max() > 3


def test_resize_whole_box_is_the_plain_resize(kernels: ModuleType) -> None:
    img = _smooth(61, 101)
    for name in ("lanczos3", "nearest"):
        np.testing.assert_array_equal(kernels.resize(img, 37, 23, name, box=(0, 0, 101, 61)),
                                      kernels.resize(img, 37, 23, name))


@pytest.mark.parametrize("box", [(0, 0, 100, 61), (0, 0, 101.5, 61), (1, 0, 101, 61), (-0.1, 0, 101, 61),
                                 (0, 0, 101, float("nan"))])
def test_resize_box_outside_the_edge_pixels_is_refused(kernels: ModuleType, box: tuple) -> None:
    with pytest.raises(ValueError, match="Expected a box"):
        kernels.resize(_smooth(61, 101), 37, 23, box=box)


def test_resize_box_bad_type_and_nearest(kernels: ModuleType) -> None:
    img = _smooth(61, 101)
    with pytest.raises(TypeError, match="for box"):
        kernels.resize(img, 37, 23, box=(0, 0, 101))
    # strings, bools and unordered collections are not a box of numbers
    for bad in [("0", "0", "101", "61"), (False, False, 101, 61), {0.5, 0, 101, 61}, iter((0, 0, 101, 61))]:
        with pytest.raises(TypeError, match="for box"):
            kernels.resize(img, 37, 23, box=bad)
    assert kernels.resize(img, 37, 23, box=(np.float64(0), 0, np.int64(101), 61.0)).shape[:2] == (23, 37)
    with pytest.raises(ValueError, match="nearest"):
        kernels.resize(img, 37, 23, "nearest", box=(0, 0, 100.5, 61))
