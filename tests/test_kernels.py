"""Tests for the pixel kernels: backend selection (pyimgopt._kernels), alpha
premultiplication and resampling, on both backends.

The ``kernels`` fixture runs a test once per backend: "native" (skipped with
a reason when the extension is not built, or when ``PYIMGOPT_PURE=1`` asks
for the pure backend only) and "pure". Tests that compare the native kernel
with something else use the ``native`` fixture.

The references are (a) NumPy formulas for premultiplication, (b) a float64
NumPy implementation of the resampler written here, independent of both
backends, and (c) Pillow, through the pure backend. All test images are
generated from seeds; no files.
"""

from __future__ import annotations

import math
import os
import pathlib
import platform
from types import ModuleType

import numpy as np
import pytest

from pyimgopt import _kernels

PURE_ONLY = os.environ.get("PYIMGOPT_PURE") == "1"
FILTERS = ("lanczos3", "bicubic", "bilinear", "box", "nearest")
SMOOTH_FILTERS = ("lanczos3", "bicubic", "bilinear", "box")

# (in_h, in_w, out_h, out_w): down, up, mixed, primes, degenerate edges.
SIZES = [
    pytest.param(48, 64, 20, 27, id="down"),
    pytest.param(13, 17, 40, 45, id="up"),
    pytest.param(30, 40, 61, 9, id="mixed"),
    pytest.param(89, 97, 13, 31, id="primes"),
    pytest.param(1, 1, 1, 1, id="1x1"),
    pytest.param(1, 1, 5, 7, id="1x1-up"),
    pytest.param(1, 37, 3, 11, id="1xN"),
    pytest.param(37, 1, 11, 3, id="Nx1"),
    pytest.param(25, 25, 25, 25, id="same"),
]

# name -> (channels, 2-D input)
MODES = {"L2d": (1, True), "L": (1, False), "LA": (2, False), "RGB": (3, False), "RGBA": (4, False)}


# --------------------------------------------------------------------------
# Test images


def noise_image(h: int, w: int, channels: int, seed: int, two_d: bool = False) -> np.ndarray:
    """Uniform noise over the full 0..255 range, alpha included."""
    img = np.random.default_rng(seed).integers(0, 256, (h, w, channels), dtype=np.uint8)
    return img[:, :, 0] if two_d else img


def smooth_image(
    h: int, w: int, channels: int, seed: int, two_d: bool = False, opaque: bool = True
) -> np.ndarray:
    """Gradients plus mild noise, colour kept inside 30..225.

    Inside that band no filter overshoots 0 or 255, so Pillow's clipping of
    its uint8 intermediate never triggers and the comparison with Pillow
    measures rounding only. Alpha, when present, is 255 (opaque) or a smooth
    ramp from 64 to 255.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    fx = x / max(w - 1, 1)
    fy = y / max(h - 1, 1)
    planes = [60 + 90 * fx + 40 * np.sin(3 * fy + c) for c in range(channels)]
    img = np.stack(planes, axis=-1) + rng.uniform(-15, 15, (h, w, channels))
    img = np.clip(img, 30, 225).astype(np.uint8)
    if channels in (2, 4):
        img[..., -1] = 255 if opaque else np.round(64 + 191 * (fx + fy) / 2).astype(np.uint8)
    return img[:, :, 0] if two_d else img


# --------------------------------------------------------------------------
# Float64 reference resampler (independent of both backends)

_SUPPORT = {"box": 0.5, "bilinear": 1.0, "bicubic": 2.0, "lanczos3": 3.0}


def _sinc(t: float) -> float:
    return 1.0 if t == 0.0 else math.sin(math.pi * t) / (math.pi * t)


def _kernel(name: str, x: float) -> float:
    if name == "box":
        return 1.0 if -0.5 < x <= 0.5 else 0.0
    if name == "bilinear":
        return max(0.0, 1.0 - abs(x))
    if name == "bicubic":
        a, x = -0.5, abs(x)
        if x < 1.0:
            return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
        if x < 2.0:
            return (((x - 5.0) * x + 8.0) * x - 4.0) * a
        return 0.0
    return _sinc(x) * _sinc(x / 3.0) if -3.0 <= x < 3.0 else 0.0


def reference_weights(n_in: int, n_out: int, name: str) -> np.ndarray:
    """(n_out, n_in) resampling matrix with Pillow's geometry."""
    m = np.zeros((n_out, n_in))
    if name == "nearest":
        for i in range(n_out):
            m[i, (2 * i + 1) * n_in // (2 * n_out)] = 1.0  # floor((i + .5) * scale)
        return m
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support = _SUPPORT[name] * filterscale
    for i in range(n_out):
        center = (i + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), n_in)
        w = np.array([_kernel(name, (x - center + 0.5) / filterscale) for x in range(lo, hi)])
        m[i, lo:hi] = w / w.sum() if w.sum() != 0 else w
    return m


def reference_resize(img: np.ndarray, width: int, height: int, name: str) -> np.ndarray:
    """Resample in float64 throughout, alpha premultiplied; round half up once."""
    a = img.astype(np.float64)
    a = a[:, :, None] if a.ndim == 2 else a
    has_alpha = a.shape[2] in (2, 4) and name != "nearest"
    if has_alpha:
        a[..., :-1] *= a[..., -1:] / 255.0
    wy = reference_weights(a.shape[0], height, name)
    wx = reference_weights(a.shape[1], width, name)
    out = np.einsum("yi,ijc,xj->yxc", wy, a, wx, optimize=True)

    def to_u8(v: np.ndarray) -> np.ndarray:
        return np.floor(np.clip(v, 0.0, 255.0) + 0.5)

    if has_alpha:
        alpha = out[..., -1:]
        alpha8 = to_u8(alpha)
        colour = np.where(alpha8 > 0, out[..., :-1] * 255.0 / np.where(alpha8 > 0, alpha, 1.0), 0)
        out = np.concatenate([to_u8(colour), alpha8], axis=2)
    else:
        out = to_u8(out)
    out = out.astype(np.uint8)
    return out[:, :, 0] if img.ndim == 2 else out


def absdiff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    assert a.shape == b.shape, (a.shape, b.shape)
    return np.abs(a.astype(np.int16) - b.astype(np.int16))


def nearest_ties(n_in: int, n_out: int) -> np.ndarray:
    """Output indices whose sample point (i + 0.5) * n_in / n_out is an exact
    integer, where Pillow's accumulated floating-point position may land one
    source pixel lower than the exact floor."""
    i = np.arange(n_out)
    return i[((2 * i + 1) * n_in) % (2 * n_out) == 0]


# --------------------------------------------------------------------------
# Backend selection


def test_kernels_backend_follows_environment() -> None:
    if PURE_ONLY:
        expected = "pure"
    else:
        expected = "native" if _kernels.native_available() else "pure"
    assert _kernels.backend == expected


def test_kernels_select_backend_one_is_pure() -> None:
    name, module = _kernels.select_backend("1")
    assert name == "pure"
    assert module.__name__ == "pyimgopt._fallback"


@pytest.mark.parametrize("value", ["", "0"])
def test_kernels_select_backend_default_prefers_native(value: str) -> None:
    name, _ = _kernels.select_backend(value)
    assert name == ("native" if _kernels.native_available() else "pure")


@pytest.mark.parametrize("value", ["2", "true", "yes", " 1"])
def test_kernels_select_backend_invalid_value_lists_valid_ones(value: str) -> None:
    with pytest.raises(ValueError, match="PYIMGOPT_PURE") as info:
        _kernels.select_backend(value)
    message = str(info.value)
    assert "'0'" in message and "'1'" in message and repr(value) in message


def test_kernels_public_api_exported_by_backend(kernels: ModuleType) -> None:
    for name in _kernels.PUBLIC_API:
        assert hasattr(kernels, name), name
    assert tuple(kernels.FILTERS) == FILTERS


def test_kernels_module_reexports_public_api() -> None:
    for name in _kernels.PUBLIC_API:
        assert getattr(_kernels, name) is not None


# --------------------------------------------------------------------------
# premultiply / unpremultiply


def _all_pairs(channels: int) -> np.ndarray:
    """Every (colour, alpha) pair once: 256x256 pixels, colour = row, alpha = column."""
    c, a = np.mgrid[0:256, 0:256].astype(np.uint8)
    planes = [c] * (channels - 1) + [a]
    return np.stack(planes, axis=-1)


@pytest.mark.parametrize("channels", [2, 4])
def test_premultiply_exact_for_every_pair(kernels: ModuleType, channels: int) -> None:
    img = _all_pairs(channels)
    c = img[..., :-1].astype(np.float64)
    a = img[..., -1:].astype(np.float64)
    expected = np.floor(c * a / 255.0 + 0.5)  # c*a/255 is never a tie
    out = kernels.premultiply(img)
    assert out.dtype == np.uint8 and out.shape == img.shape
    np.testing.assert_array_equal(out[..., :-1], expected)
    np.testing.assert_array_equal(out[..., -1], img[..., -1])


@pytest.mark.parametrize("channels", [2, 4])
def test_unpremultiply_exact_for_every_pair(kernels: ModuleType, channels: int) -> None:
    img = _all_pairs(channels)  # includes colour > alpha, which must clamp to 255
    c = img[..., :-1].astype(np.float64)
    a = img[..., -1:].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        # c * 255 / a is correctly rounded, so exact ties (k + 0.5) survive
        # and floor(q + 0.5) is round-half-up.
        expected = np.where(a == 0, 0, np.minimum(255, np.floor(c * 255.0 / a + 0.5)))
    out = kernels.unpremultiply(img)
    np.testing.assert_array_equal(out[..., :-1], expected)
    np.testing.assert_array_equal(out[..., -1], img[..., -1])


@pytest.mark.parametrize("channels", [2, 4])
def test_premultiply_round_trip_identity_when_opaque(kernels: ModuleType, channels: int) -> None:
    img = noise_image(31, 17, channels, seed=3)
    img[..., -1] = 255
    np.testing.assert_array_equal(kernels.premultiply(img), img)
    np.testing.assert_array_equal(kernels.unpremultiply(kernels.premultiply(img)), img)


def test_premultiply_native_matches_fallback_exactly(native: ModuleType, pure: ModuleType) -> None:
    img = noise_image(40, 33, 4, seed=4)
    np.testing.assert_array_equal(native.premultiply(img), pure.premultiply(img))
    np.testing.assert_array_equal(native.unpremultiply(img), pure.unpremultiply(img))


def test_premultiply_strided_input_matches_contiguous(kernels: ModuleType) -> None:
    base = noise_image(40, 50, 4, seed=5)
    for view in (base[::2, 1:-1], base[::-1, ::-3], np.asfortranarray(base)):
        expected = kernels.premultiply(np.ascontiguousarray(view))
        np.testing.assert_array_equal(kernels.premultiply(view), expected)
        expected = kernels.unpremultiply(np.ascontiguousarray(view))
        np.testing.assert_array_equal(kernels.unpremultiply(view), expected)


def test_premultiply_input_left_unchanged(kernels: ModuleType) -> None:
    img = noise_image(8, 9, 2, seed=6)
    before = img.copy()
    out = kernels.premultiply(img)
    np.testing.assert_array_equal(img, before)
    assert out is not img and out.flags.c_contiguous


@pytest.mark.parametrize("shape", [(4, 4), (4, 4, 1), (4, 4, 3), (4, 4, 5)])
def test_premultiply_rejects_non_alpha_shapes(kernels: ModuleType, shape: tuple) -> None:
    img = np.zeros(shape, np.uint8)
    with pytest.raises(ValueError, match=r"Expected .* for img but received"):
        kernels.premultiply(img)
    with pytest.raises(ValueError, match=r"Expected .* for img but received"):
        kernels.unpremultiply(img)


def test_premultiply_rejects_bad_dtype(kernels: ModuleType) -> None:
    with pytest.raises(TypeError, match="Expected dtype uint8 for img but received dtype uint16"):
        kernels.premultiply(np.zeros((4, 4, 4), np.uint16))


# --------------------------------------------------------------------------
# resize: agreement with the float64 reference and with Pillow


@pytest.mark.parametrize("filter_name", FILTERS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("in_h", "in_w", "out_h", "out_w"), SIZES)
def test_resize_matches_float64_reference_when_opaque(
    native: ModuleType, filter_name: str, mode: str, in_h: int, in_w: int, out_h: int, out_w: int
) -> None:
    channels, two_d = MODES[mode]
    img = noise_image(in_h, in_w, channels, seed=in_h * 1000 + in_w, two_d=two_d)
    if channels in (2, 4):
        img[..., -1] = 255
    out = native.resize(img, out_w, out_h, filter_name)
    expected = reference_resize(img, out_w, out_h, filter_name)
    # float32 accumulation only moves values that sit within ~1e-4 of a
    # rounding boundary, and those by one level.
    assert absdiff(out, expected).max() <= 1


@pytest.mark.parametrize("filter_name", FILTERS)
@pytest.mark.parametrize("channels", [2, 4])
@pytest.mark.parametrize(("in_h", "in_w", "out_h", "out_w"), SIZES[:4])
def test_resize_matches_float64_reference_with_alpha(
    native: ModuleType,
    filter_name: str,
    channels: int,
    in_h: int,
    in_w: int,
    out_h: int,
    out_w: int,
) -> None:
    img = noise_image(in_h, in_w, channels, seed=in_h + in_w)  # alpha is noise too
    out = native.resize(img, out_w, out_h, filter_name)
    expected = reference_resize(img, out_w, out_h, filter_name)
    assert absdiff(out, expected).max() <= 1


# Native vs Pillow (the pure backend), on smooth images (see smooth_image).
# Pillow holds weights as 22-bit fixed point, as exact as float32 here, but
# rounds to uint8 after its horizontal pass; that extra half level, carried
# through the vertical weights, moves a pixel by at most one level.
# With alpha Pillow also rounds the premultiplied colour to uint8 and then
# unpremultiplies with a truncating division (always rounding down), where
# the native kernel stays in float; at alpha a the colour error is magnified
# by 255 / a, so alpha images are compared premultiplied (colour * a / 255,
# what is seen over black), where the three roundings add up to < 3 levels.
PILLOW_OPAQUE_MAX, PILLOW_OPAQUE_MEAN = 1, 0.3
PILLOW_ALPHA_MAX, PILLOW_ALPHA_MEAN = 3, 0.5


def _premultiplied(img: np.ndarray) -> np.ndarray:
    f = img.astype(np.float64)
    f[..., :-1] *= f[..., -1:] / 255.0
    return f


@pytest.mark.parametrize("filter_name", SMOOTH_FILTERS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("in_h", "in_w", "out_h", "out_w"), SIZES)
def test_resize_native_agrees_with_pillow(
    native: ModuleType,
    pure: ModuleType,
    filter_name: str,
    mode: str,
    in_h: int,
    in_w: int,
    out_h: int,
    out_w: int,
) -> None:
    channels, two_d = MODES[mode]
    img = smooth_image(in_h, in_w, channels, seed=in_w, two_d=two_d, opaque=False)
    ours = native.resize(img, out_w, out_h, filter_name)
    pillow = pure.resize(img, out_w, out_h, filter_name)
    assert ours.shape == pillow.shape
    if channels in (2, 4):
        assert absdiff(ours[..., -1], pillow[..., -1]).max() <= PILLOW_OPAQUE_MAX
        diff = np.abs(_premultiplied(ours) - _premultiplied(pillow))
        assert diff.max() <= PILLOW_ALPHA_MAX
        assert diff.mean() <= PILLOW_ALPHA_MEAN
    else:
        diff = absdiff(ours, pillow)
        assert diff.max() <= PILLOW_OPAQUE_MAX
        assert diff.mean() <= PILLOW_OPAQUE_MEAN


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("in_h", "in_w", "out_h", "out_w"), SIZES)
def test_resize_nearest_agrees_with_pillow_away_from_ties(
    native: ModuleType,
    pure: ModuleType,
    mode: str,
    in_h: int,
    in_w: int,
    out_h: int,
    out_w: int,
) -> None:
    channels, two_d = MODES[mode]
    img = noise_image(in_h, in_w, channels, seed=7, two_d=two_d)
    ours = native.resize(img, out_w, out_h, "nearest")
    pillow = pure.resize(img, out_w, out_h, "nearest")
    # Where (i + 0.5) * scale is an exact integer the native kernel takes the
    # exact floor; Pillow steps a float position and may pick the pixel
    # before. Everywhere else the two pick the same source pixel.
    rows = np.setdiff1d(np.arange(out_h), nearest_ties(in_h, out_h))
    cols = np.setdiff1d(np.arange(out_w), nearest_ties(in_w, out_w))
    np.testing.assert_array_equal(ours[rows][:, cols], pillow[rows][:, cols])


def test_resize_nearest_takes_exact_floor_at_ties(native: ModuleType) -> None:
    # 60 -> 130: output 45 samples at 45.5 * 60 / 130 = 21 exactly.
    ramp = np.tile(np.arange(60, dtype=np.uint8), (2, 1))
    out = native.resize(ramp, 130, 2, "nearest")
    expected = (2 * np.arange(130) + 1) * 60 // 260
    np.testing.assert_array_equal(out[0], expected)
    assert out[0, 45] == 21


# --------------------------------------------------------------------------
# resize: the fixed-point and float32 paths inside the native kernel
#
# With AVX2, images without alpha (and RGBA that is opaque everywhere) take
# the fixed-point path, alpha images the float32 one; without SIMD every
# image takes the float32 path. ``_resize_ex`` switches parts off:
# simd=False runs the portable C loops (what a CPU without AVX2 or a non-x86
# build runs), avx512=False caps the SIMD at AVX2, fixed=False forces the
# float path and fixed=True the fixed one (its portable loops are the twin
# the SIMD loops must match bit for bit). These sizes reach every SIMD main loop and its tail:
# rows of >= 32 values, >= 6 output pixels, odd widths and heights (a source
# row pair without its second row), windows that start on odd pixels, and
# degenerate 1-pixel edges.
PATH_SIZES = [
    pytest.param(67, 93, 29, 41, id="down"),
    pytest.param(13, 17, 40, 45, id="up"),
    pytest.param(40, 61, 61, 9, id="mixed"),
    pytest.param(1, 200, 1, 37, id="1xN"),
    pytest.param(200, 1, 37, 1, id="Nx1"),
    pytest.param(33, 35, 33, 35, id="same"),
    pytest.param(5, 300, 7, 13, id="wide"),
]


def _opaque(img: np.ndarray) -> np.ndarray:
    if img.ndim == 3 and img.shape[2] in (2, 4):
        img = img.copy()
        img[..., -1] = 255
    return img


@pytest.mark.parametrize("filter_name", SMOOTH_FILTERS)
@pytest.mark.parametrize("mode", ["L2d", "RGB", "RGBA"])
@pytest.mark.parametrize(("in_h", "in_w", "out_h", "out_w"), PATH_SIZES)
def test_resize_simd_variants_bit_identical_on_fixed_path(
    native: ModuleType, filter_name: str, mode: str, in_h: int, in_w: int, out_h: int, out_w: int
) -> None:
    # Integer sums are exact, so every instruction set gives the same bytes.
    channels, two_d = MODES[mode]
    img = _opaque(noise_image(in_h, in_w, channels, seed=in_h * 7 + in_w, two_d=two_d))
    auto = native._resize_ex(img, out_w, out_h, filter_name, fixed=True)
    portable = native._resize_ex(img, out_w, out_h, filter_name, simd=False, fixed=True)
    avx2 = native._resize_ex(img, out_w, out_h, filter_name, avx512=False, fixed=True)
    np.testing.assert_array_equal(portable, auto)
    np.testing.assert_array_equal(avx2, auto)


@pytest.mark.parametrize("filter_name", SMOOTH_FILTERS)
@pytest.mark.parametrize("channels", [2, 4])
@pytest.mark.parametrize(("in_h", "in_w", "out_h", "out_w"), PATH_SIZES[:3])
def test_resize_simd_variants_agree_on_float_path(
    native: ModuleType,
    filter_name: str,
    channels: int,
    in_h: int,
    in_w: int,
    out_h: int,
    out_w: int,
) -> None:
    # The AVX2 float loops fuse multiply-adds (one rounding fewer), so they
    # may differ from the baseline loops by one level, and only rarely.
    img = noise_image(in_h, in_w, channels, seed=in_w)
    auto = native.resize(img, out_w, out_h, filter_name)
    portable = native._resize_ex(img, out_w, out_h, filter_name, simd=False)
    diff = absdiff(auto, portable)
    assert diff.max() <= 1
    assert (diff > 0).mean() <= 0.01
    assert absdiff(portable, reference_resize(img, out_w, out_h, filter_name)).max() <= 1


@pytest.mark.parametrize("filter_name", SMOOTH_FILTERS)
@pytest.mark.parametrize("mode", ["L2d", "RGB", "RGBA"])
@pytest.mark.parametrize("simd", [True, False], ids=["simd", "portable"])
@pytest.mark.parametrize(("out_h", "out_w"), [(45, 31), (113, 131)], ids=["down", "up"])
def test_resize_fixed_path_close_to_float64_reference(
    native: ModuleType, filter_name: str, mode: str, simd: bool, out_h: int, out_w: int
) -> None:
    # Within one level always (the proven bound), and off by that level
    # rarely: the fixed-point error is ~0.01 level, so only values that sit
    # that close to a rounding boundary move. Exact ties (k + 0.5, common
    # with the box filter's equal weights: a mean of 6 values, say) round
    # either way once a weight like 1/3 is quantised, so they are not
    # counted.
    channels, two_d = MODES[mode]
    img = _opaque(noise_image(89, 97, channels, seed=11, two_d=two_d))
    out = native._resize_ex(img, out_w, out_h, filter_name, simd=simd, fixed=True)
    diff = absdiff(out, reference_resize(img, out_w, out_h, filter_name))
    assert diff.max() <= 1
    wy = reference_weights(89, out_h, filter_name)
    wx = reference_weights(97, out_w, filter_name)
    exact = np.einsum(
        "yi,ijc,xj->yxc", wy, img.reshape(89, 97, channels).astype(float), wx, optimize=True
    )
    tie = np.abs(exact - np.floor(exact) - 0.5) < 1e-9
    off = diff.reshape(exact.shape)[~tie] > 0
    assert off.mean() <= 0.01, off.mean()


def test_resize_images_without_alpha_take_the_fixed_path_with_simd(native: ModuleType) -> None:
    # The two paths round differently somewhere in ~20k noise values; equal
    # output would mean resize never left the float path.
    if native._simd_level() == "none":
        pytest.skip("no AVX2 here: every image takes the float path")
    img = noise_image(200, 300, 3, seed=12)
    out = native.resize(img, 110, 70, "lanczos3")
    np.testing.assert_array_equal(out, native._resize_ex(img, 110, 70, "lanczos3", fixed=True))
    assert absdiff(out, native._resize_ex(img, 110, 70, "lanczos3", fixed=False)).max() == 1


def test_resize_without_simd_takes_the_float_path(native: ModuleType) -> None:
    # Without SIMD the float path's vectorised loops are the faster ones.
    img = noise_image(200, 300, 3, seed=12)
    out = native._resize_ex(img, 110, 70, "lanczos3", simd=False)
    np.testing.assert_array_equal(
        out, native._resize_ex(img, 110, 70, "lanczos3", simd=False, fixed=False)
    )
    fixed = native._resize_ex(img, 110, 70, "lanczos3", simd=False, fixed=True)
    assert absdiff(out, fixed).max() == 1


def test_resize_alpha_images_take_the_float_path(native: ModuleType) -> None:
    img = noise_image(200, 300, 4, seed=13)
    np.testing.assert_array_equal(
        native.resize(img, 110, 70, "lanczos3"),
        native._resize_ex(img, 110, 70, "lanczos3", fixed=False),
    )


def test_resize_fixed_path_declines_huge_windows(native: ModuleType) -> None:
    # 20000 -> 50 gives 2400-tap windows: the int16 weights' worst-case error
    # bound passes half a level, so the float path runs (same bytes).
    img = noise_image(64, 20000, 3, seed=14)
    np.testing.assert_array_equal(
        native._resize_ex(img, 50, 64, "lanczos3", fixed=True),
        native._resize_ex(img, 50, 64, "lanczos3", fixed=False),
    )
    assert absdiff(native.resize(img, 50, 64), reference_resize(img, 50, 64, "lanczos3")).max() <= 1


@pytest.mark.parametrize("filter_name", SMOOTH_FILTERS)
def test_resize_opaque_rgba_filters_colour_like_rgb(native: ModuleType, filter_name: str) -> None:
    rgb = noise_image(57, 71, 3, seed=15)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    for simd in (True, False):
        out = native._resize_ex(rgba, 23, 31, filter_name, simd=simd, fixed=True)
        expected = native._resize_ex(rgb, 23, 31, filter_name, simd=simd, fixed=True)
        np.testing.assert_array_equal(out[..., :3], expected)
        assert (out[..., 3] == 255).all()


def test_resize_simd_level_matches_cpu(native: ModuleType) -> None:
    level = native._simd_level()
    assert level in ("none", "avx2", "avx512vnni")
    cpuinfo = pathlib.Path("/proc/cpuinfo")
    if platform.machine() != "x86_64" or not cpuinfo.is_file():
        pytest.skip("CPU flags are read from /proc/cpuinfo on x86-64 Linux")
    flags = set()
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    if {"avx2", "fma"} <= flags:
        vnni = {"avx512_vnni", "avx512vl"} <= flags
        assert level == ("avx512vnni" if vnni else "avx2")
    else:
        assert level == "none"


# --------------------------------------------------------------------------
# resize: behaviour on both backends


@pytest.mark.parametrize("filter_name", FILTERS)
@pytest.mark.parametrize("value", [(200, 17, 90, 255), (0, 255, 1), (254,)])
@pytest.mark.parametrize(("in_h", "in_w", "out_h", "out_w"), SIZES)
def test_resize_constant_image_stays_constant(
    kernels: ModuleType,
    filter_name: str,
    value: tuple,
    in_h: int,
    in_w: int,
    out_h: int,
    out_w: int,
) -> None:
    # Opaque RGBA, RGB and L: the native fixed-point path.
    img = np.empty((in_h, in_w, len(value)), np.uint8)
    img[...] = value
    out = kernels.resize(img, out_w, out_h, filter_name)
    assert out.shape == (out_h, out_w, len(value))
    # Normalised weights keep a flat field flat, at every size and edge.
    assert (out == np.array(value, np.uint8)).all()


@pytest.mark.parametrize("filter_name", FILTERS)
@pytest.mark.parametrize("value", [(200, 17, 90, 77), (17, 3)])
@pytest.mark.parametrize(("in_h", "in_w", "out_h", "out_w"), SIZES)
def test_resize_translucent_constant_image_stays_constant(
    native: ModuleType, filter_name: str, value: tuple, in_h: int, in_w: int, out_h: int, out_w: int
) -> None:
    # The float path premultiplies exactly, so a translucent flat field
    # stays flat too (Pillow's 8-bit premultiplication does not: native only).
    img = np.empty((in_h, in_w, len(value)), np.uint8)
    img[...] = value
    out = native.resize(img, out_w, out_h, filter_name)
    assert (out == np.array(value, np.uint8)).all()


def _views(base: np.ndarray) -> dict[str, np.ndarray]:
    views = {
        "rows-cropped": base[::2, 1:-1],
        "flipped": base[::-1],
        "mirrored": base[:, ::-1],
        "fortran": np.asfortranarray(base),
        "broadcast-rows": np.broadcast_to(base[:1], base.shape),
    }
    if base.ndim == 3 and base.shape[2] == 4:
        views["channel-slice"] = base[..., :3]  # pixel stride 4, 3 channels
        views["single-channel"] = base[..., 1:2]
    return views


@pytest.mark.parametrize("filter_name", ["lanczos3", "nearest"])
@pytest.mark.parametrize("mode", ["L2d", "RGBA"])
def test_resize_strided_view_matches_contiguous_copy(
    kernels: ModuleType, filter_name: str, mode: str
) -> None:
    channels, two_d = MODES[mode]
    base = noise_image(41, 38, channels, seed=8, two_d=two_d)
    for name, view in _views(base).items():
        assert not view.flags.c_contiguous or name == "broadcast-rows", name
        expected = kernels.resize(np.ascontiguousarray(view), 17, 23, filter_name)
        np.testing.assert_array_equal(
            kernels.resize(view, 17, 23, filter_name), expected, err_msg=name
        )


def test_resize_accepts_read_only_input(kernels: ModuleType) -> None:
    img = noise_image(20, 20, 3, seed=9)
    img.flags.writeable = False
    assert kernels.resize(img, 7, 9).shape == (9, 7, 3)


@pytest.mark.parametrize("filter_name", SMOOTH_FILTERS)
@pytest.mark.parametrize(("in_h", "in_w", "out_h", "out_w"), [(40, 40, 15, 15), (16, 16, 45, 45)])
def test_resize_transparent_colour_does_not_bleed(
    kernels: ModuleType, filter_name: str, in_h: int, in_w: int, out_h: int, out_w: int
) -> None:
    img = np.zeros((in_h, in_w, 4), np.uint8)
    img[:, : in_w // 2] = (255, 0, 0, 0)  # fully transparent red
    img[:, in_w // 2 :] = (0, 0, 255, 255)  # opaque blue
    out = kernels.resize(img, out_w, out_h, filter_name)
    visible = out[..., 3] > 0
    assert visible.any() and (out[..., 3] < 255).any()  # the edge was resampled
    # Premultiplied, the transparent half contributes nothing, so no visible
    # pixel may pick up red (unpremultiplied filtering would turn the edge
    # purple) and mostly opaque ones stay fully blue.
    assert out[..., 0][visible].max() == 0
    solid = out[..., 3] >= 128
    assert out[..., 2][solid].min() >= 250


def test_resize_transparent_la_grey_does_not_bleed(kernels: ModuleType) -> None:
    img = np.zeros((30, 30, 2), np.uint8)
    img[:, :15] = (255, 0)  # transparent white
    img[:, 15:] = (0, 255)  # opaque black
    out = kernels.resize(img, 11, 11, "lanczos3")
    assert out[..., 0][out[..., 1] > 0].max() == 0


def test_resize_two_d_input_returns_two_d(kernels: ModuleType) -> None:
    out = kernels.resize(noise_image(10, 12, 1, seed=10, two_d=True), 5, 7)
    assert out.shape == (7, 5) and out.dtype == np.uint8 and out.flags.c_contiguous


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_resize_three_d_input_keeps_channels(kernels: ModuleType, channels: int) -> None:
    out = kernels.resize(noise_image(10, 12, channels, seed=11), 5, 7)
    assert out.shape == (7, 5, channels) and out.dtype == np.uint8 and out.flags.c_contiguous


def test_resize_default_filter_is_lanczos3(kernels: ModuleType) -> None:
    img = noise_image(30, 30, 3, seed=12)
    np.testing.assert_array_equal(
        kernels.resize(img, 11, 13), kernels.resize(img, 11, 13, "lanczos3")
    )


def test_resize_accepts_numpy_integer_sizes(kernels: ModuleType) -> None:
    img = noise_image(9, 9, 3, seed=13)
    assert kernels.resize(img, np.int64(4), np.uint16(5)).shape == (5, 4, 3)


def test_resize_leaves_input_unchanged(kernels: ModuleType) -> None:
    img = noise_image(16, 16, 4, seed=14)
    before = img.copy()
    kernels.resize(img, 30, 5)
    np.testing.assert_array_equal(img, before)


# --------------------------------------------------------------------------
# resize: validation (same exceptions and messages on both backends)

GOOD = np.zeros((4, 5, 3), np.uint8)

BAD_CALLS = [
    pytest.param(
        (np.zeros((4, 5, 3), np.float32), 2, 2),
        {},
        TypeError,
        "Expected dtype uint8 for img but received dtype float32",
        id="dtype",
    ),
    pytest.param(
        ([[1, 2], [3, 4]], 2, 2), {}, TypeError, "Expected numpy.ndarray for img", id="list"
    ),
    pytest.param(
        (np.zeros(5, np.uint8), 2, 2), {}, ValueError, "for img but received 1-D", id="ndim-1"
    ),
    pytest.param(
        (np.zeros((2, 2, 2, 2), np.uint8), 2, 2),
        {},
        ValueError,
        "for img but received 4-D",
        id="ndim-4",
    ),
    pytest.param(
        (np.zeros((4, 5, 5), np.uint8), 2, 2),
        {},
        ValueError,
        "Expected 1 to 4 channels .* for img but received 5 channels",
        id="channels-5",
    ),
    pytest.param(
        (np.zeros((4, 5, 0), np.uint8), 2, 2),
        {},
        ValueError,
        "for img but received 0 channels",
        id="channels-0",
    ),
    pytest.param(
        (np.zeros((0, 5, 3), np.uint8), 2, 2),
        {},
        ValueError,
        "Expected height and width >= 1 for img but received shape",
        id="empty",
    ),
    pytest.param(
        (GOOD, 0, 2), {}, ValueError, "Expected positive integer for width but received 0", id="w0"
    ),
    pytest.param(
        (GOOD, 2, -3),
        {},
        ValueError,
        "Expected positive integer for height but received -3",
        id="h-neg",
    ),
    pytest.param(
        (GOOD, 2.5, 2),
        {},
        TypeError,
        "Expected positive integer for width but received 2.5",
        id="w-float",
    ),
    pytest.param(
        (GOOD, True, 2),
        {},
        TypeError,
        "Expected positive integer for width but received True",
        id="w-bool",
    ),
    pytest.param(
        (GOOD, 2, 2),
        {"filter": "cubic"},
        ValueError,
        "Expected one of 'lanczos3', .* for filter but received 'cubic'",
        id="filter-unknown",
    ),
    pytest.param(
        (GOOD, 2, 2),
        {"filter": None},
        TypeError,
        "Expected one of .* for filter but received None",
        id="filter-none",
    ),
]


@pytest.mark.parametrize(("args", "kwargs", "exc", "pattern"), BAD_CALLS)
def test_resize_rejects_bad_arguments(
    kernels: ModuleType, args: tuple, kwargs: dict, exc: type, pattern: str
) -> None:
    with pytest.raises(exc, match=pattern):
        kernels.resize(*args, **kwargs)


@pytest.mark.parametrize(("args", "kwargs", "exc", "pattern"), BAD_CALLS)
def test_resize_error_messages_identical_across_backends(
    native: ModuleType, pure: ModuleType, args: tuple, kwargs: dict, exc: type, pattern: str
) -> None:
    with pytest.raises(exc) as from_native:
        native.resize(*args, **kwargs)
    with pytest.raises(exc) as from_pure:
        pure.resize(*args, **kwargs)
    assert str(from_native.value) == str(from_pure.value)
