"""Tests for the quality kernels: ``ssim``, ``ssim_luma`` and ``reduce_box``,
on both backends.

The ``kernels`` fixture runs a test once per backend ("native", skipped with
a reason when the extension is not built or ``PYIMGOPT_PURE=1``, and "pure");
``native`` and ``pure`` give one backend each, for comparisons between them.

References: scikit-image's ``structural_similarity`` for SSIM (on synthetic
pairs and, when ../shared/corpus is present, on every corpus image), and a
block-by-block Python reduction written here for ``reduce_box``.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import warnings
from types import ModuleType

import numpy as np
import pytest
from PIL import Image, ImageFilter


skimage_metrics = pytest.importorskip(
    "skimage.metrics", reason="scikit-image is the SSIM reference (pip install .[test])"
)

PURE_ONLY = os.environ.get("PYIMGOPT_PURE") == "1"
TOLERANCE = 1e-3  # against scikit-image
BACKEND_TOLERANCE = 1e-6  # native against pure
LUMA = np.array([0.299, 0.587, 0.114])

# name -> (channels, 2-D input)
MODES = {"L2d": (1, True), "L": (1, False), "LA": (2, False), "RGB": (3, False), "RGBA": (4, False)}


# --------------------------------------------------------------------------
# Image builders and references


def _photo(height: int, width: int, channels: int, seed: int) -> np.ndarray:
    """Smooth gradients with soft noise and a few hard edges, (H, W, C) uint8."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    planes = [
        128 + 100 * np.sin(x / 9.0 + c) * np.cos(y / 13.0 - c) + 40 * ((x // 17 + y // 11) % 2)
        for c in range(channels)
    ]
    arr = np.stack(planes, axis=-1) + rng.normal(0, 8, (height, width, channels))
    return np.clip(arr, 0, 255).astype(np.uint8)


def _noisy(img: np.ndarray, seed: int, sigma: float = 18.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(img + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)


def _blurred(img: np.ndarray) -> np.ndarray:
    planes = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(img[..., c])).filter(ImageFilter.BoxBlur(2))
        )
        for c in range(img.shape[2])
    ]
    return np.stack(planes, axis=-1)


def _jpeg(img: np.ndarray, quality: int = 30) -> np.ndarray:
    """Colour (or grey) channels through a JPEG round trip; alpha kept as is."""
    channels = img.shape[2]
    colour = img[..., :3] if channels >= 3 else img[..., :1]
    pixels = np.ascontiguousarray(colour if colour.shape[2] == 3 else colour[..., 0])
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=quality)
    decoded = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
    decoded = decoded.reshape(colour.shape)
    return np.concatenate([decoded, img[..., colour.shape[2] :]], axis=-1)[..., :channels]


DEGRADE = {"noisy": lambda img: _noisy(img, 1), "blurred": _blurred, "jpeg": _jpeg}


def _as_mode(img3: np.ndarray, two_d: bool) -> np.ndarray:
    return img3[..., 0] if two_d else img3


def _skimage_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """scikit-image's SSIM with the defaults the kernels promise to match."""
    if a.ndim == 3 and a.shape[2] == 1:
        a, b = a[..., 0], b[..., 0]  # one channel: the plain 2-D metric
    channel_axis = -1 if a.ndim == 3 else None
    return float(
        skimage_metrics.structural_similarity(a, b, data_range=255, channel_axis=channel_axis)
    )


def _luma(img: np.ndarray) -> np.ndarray:
    """Float luma as ssim_luma defines it: 0.299 R + 0.587 G + 0.114 B, or channel 0."""
    img3 = img if img.ndim == 3 else img[..., np.newaxis]
    if img3.shape[2] >= 3:
        return img3[..., :3].astype(np.float64) @ LUMA
    return img3[..., 0].astype(np.float64)


def _skimage_ssim_luma(a: np.ndarray, b: np.ndarray) -> float:
    return float(skimage_metrics.structural_similarity(_luma(a), _luma(b), data_range=255))


def _reduce_reference(img: np.ndarray, fx: int, fy: int) -> np.ndarray:
    """Block by block in Python integers: round half up; alpha-weighted colour."""
    img3 = img if img.ndim == 3 else img[..., np.newaxis]
    height, width, channels = img3.shape
    out_h, out_w = -(-height // fy), -(-width // fx)
    out = np.zeros((out_h, out_w, channels), np.uint8)

    def rnd(p: int, q: int) -> int:  # round half up of p / q
        return (2 * p + q) // (2 * q)

    for oy in range(out_h):
        for ox in range(out_w):
            block = img3[oy * fy : (oy + 1) * fy, ox * fx : (ox + 1) * fx].reshape(-1, channels)
            block = [[int(v) for v in px] for px in block]
            n = len(block)
            if channels in (2, 4):
                sa = sum(px[-1] for px in block)
                for c in range(channels - 1):
                    sc = sum(px[c] * px[-1] for px in block)
                    out[oy, ox, c] = 0 if sa == 0 else rnd(sc, sa)
                out[oy, ox, -1] = rnd(sa, n)
            else:
                for c in range(channels):
                    out[oy, ox, c] = rnd(sum(px[c] for px in block), n)
    return out if img.ndim == 3 else out[..., 0]


# --------------------------------------------------------------------------
# ssim / ssim_luma against scikit-image


@pytest.mark.parametrize("degrade", sorted(DEGRADE))
@pytest.mark.parametrize("mode", sorted(MODES))
def test_ssim_matches_skimage(kernels: ModuleType, mode: str, degrade: str) -> None:
    channels, two_d = MODES[mode]
    ref3 = _photo(61, 83, channels, seed=channels)
    a, b = _as_mode(ref3, two_d), _as_mode(DEGRADE[degrade](ref3), two_d)
    expected = _skimage_ssim(a, b)
    assert expected < 0.99  # the pair really differs
    assert kernels.ssim(a, b) == pytest.approx(expected, abs=TOLERANCE)


@pytest.mark.parametrize("degrade", sorted(DEGRADE))
@pytest.mark.parametrize("mode", sorted(MODES))
def test_ssim_luma_matches_skimage_on_luma_image(
    kernels: ModuleType, mode: str, degrade: str
) -> None:
    channels, two_d = MODES[mode]
    ref3 = _photo(58, 71, channels, seed=10 + channels)
    a, b = _as_mode(ref3, two_d), _as_mode(DEGRADE[degrade](ref3), two_d)
    expected = _skimage_ssim_luma(a, b)
    assert kernels.ssim_luma(a, b) == pytest.approx(expected, abs=TOLERANCE)


def test_ssim_luma_ignores_alpha(kernels: ModuleType) -> None:
    a = _photo(30, 30, 4, seed=3)
    b = _noisy(a, 4)
    b_alpha = b.copy()
    b_alpha[..., 3] = 255 - b[..., 3]
    assert kernels.ssim_luma(a, b_alpha) == kernels.ssim_luma(a, b)
    assert kernels.ssim(a, b_alpha) != kernels.ssim(a, b)  # plain SSIM counts alpha


@pytest.mark.parametrize("shape", [(7, 7), (7, 7, 3), (7, 40, 4), (40, 7, 2)])
def test_ssim_smallest_images_match_skimage(kernels: ModuleType, shape: tuple) -> None:
    rng = np.random.default_rng(5)
    a = rng.integers(0, 256, shape, dtype=np.uint8)
    b = _noisy(a, 6, sigma=40)
    assert kernels.ssim(a, b) == pytest.approx(_skimage_ssim(a, b), abs=TOLERANCE)
    assert kernels.ssim_luma(a, b) == pytest.approx(_skimage_ssim_luma(a, b), abs=TOLERANCE)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_ssim_identical_images_exactly_one(kernels: ModuleType, mode: str) -> None:
    channels, two_d = MODES[mode]
    a = _as_mode(_photo(37, 45, channels, seed=7), two_d)
    assert kernels.ssim(a, a.copy()) == 1.0
    assert kernels.ssim_luma(a, a.copy()) == 1.0


def test_ssim_constant_and_extreme_images(kernels: ModuleType) -> None:
    black = np.zeros((20, 20, 3), np.uint8)
    white = np.full((20, 20, 3), 255, np.uint8)
    assert kernels.ssim(black, black) == 1.0
    assert kernels.ssim(black, white) == pytest.approx(_skimage_ssim(black, white), abs=TOLERANCE)
    assert kernels.ssim(black, white) < 0.01


def test_ssim_is_symmetric(kernels: ModuleType) -> None:
    a = _photo(25, 33, 3, seed=8)
    b = _jpeg(a, 20)
    assert kernels.ssim(a, b) == pytest.approx(kernels.ssim(b, a), abs=1e-12)


def test_ssim_decreases_with_stronger_degradation(kernels: ModuleType) -> None:
    a = _photo(64, 64, 3, seed=9)
    scores = [kernels.ssim_luma(a, _jpeg(a, q)) for q in (90, 50, 10)]
    assert scores[0] > scores[1] > scores[2]


STRIDED = {
    "crop": lambda img: img[5:-3, 4:-6],
    "step": lambda img: img[::2, ::3],
    "flip-rows": lambda img: img[::-1],
    "flip-cols": lambda img: img[:, ::-1],
    "channel-reversed": lambda img: img[..., ::-1],
    "fortran": lambda img: np.asfortranarray(img),
}


@pytest.mark.parametrize("view", sorted(STRIDED))
def test_ssim_strided_views_match_contiguous_and_skimage(kernels: ModuleType, view: str) -> None:
    big_a = _photo(70, 90, 4, seed=12)
    big_b = _jpeg(big_a, 40)
    a, b = STRIDED[view](big_a), STRIDED[view](big_b)
    ca, cb = np.ascontiguousarray(a), np.ascontiguousarray(b)
    assert kernels.ssim(a, b) == kernels.ssim(ca, cb)
    assert kernels.ssim_luma(a, b) == kernels.ssim_luma(ca, cb)
    assert kernels.ssim(a, b) == pytest.approx(_skimage_ssim(ca, cb), abs=TOLERANCE)


def test_ssim_accepts_read_only_input_and_leaves_it_unchanged(kernels: ModuleType) -> None:
    a = _photo(20, 20, 3, seed=13)
    b = _noisy(a, 14)
    a_copy, b_copy = a.copy(), b.copy()
    a.flags.writeable = False
    b.flags.writeable = False
    kernels.ssim(a, b)
    kernels.ssim_luma(a, b)
    assert np.array_equal(a, a_copy) and np.array_equal(b, b_copy)


@pytest.mark.parametrize("seed", range(6))
def test_ssim_native_matches_pure(native: ModuleType, pure: ModuleType, seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    channels = int(rng.integers(1, 5))
    shape = (int(rng.integers(7, 90)), int(rng.integers(7, 90)), channels)
    a = rng.integers(0, 256, shape, dtype=np.uint8)
    b = np.clip(a + rng.normal(0, rng.uniform(1, 60), shape), 0, 255).astype(np.uint8)
    assert native.ssim(a, b) == pytest.approx(pure.ssim(a, b), abs=BACKEND_TOLERANCE)
    assert native.ssim_luma(a, b) == pytest.approx(pure.ssim_luma(a, b), abs=BACKEND_TOLERANCE)


# --------------------------------------------------------------------------
# The corpus (../shared/corpus), downscaled so the sweep stays fast

CORPUS_SIDE = 160


@pytest.fixture(scope="module")
def corpus_pairs(request: pytest.FixtureRequest) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, image, JPEG-degraded image) for every corpus image Pillow opens."""
    corpus: pathlib.Path = request.getfixturevalue("corpus")
    pairs = []
    for entry in json.loads((corpus / "MANIFEST.json").read_text()):
        # Decoding is not under test here: quiet Pillow's format warnings
        # (pyproject turns warnings into errors) and skip what it cannot open.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                with Image.open(corpus / entry["file"]) as im:
                    im.draft("RGB", (CORPUS_SIDE * 2, CORPUS_SIDE * 2))  # JPEG: decode small
                    im.thumbnail((CORPUS_SIDE, CORPUS_SIDE))
                    if im.mode not in ("L", "LA", "RGB", "RGBA"):
                        alpha = "A" in im.getbands() or "transparency" in im.info
                        im = im.convert("RGBA" if alpha else "RGB")
                    pixels = np.asarray(im)
            except OSError:
                continue
        if min(pixels.shape[:2]) < 7:
            continue
        img3 = pixels if pixels.ndim == 3 else pixels[..., np.newaxis]
        degraded = _jpeg(img3, quality=25)
        pairs.append((entry["file"], pixels, degraded.reshape(pixels.shape)))
    assert pairs, "no corpus image could be opened"
    return pairs


@pytest.mark.corpus
def test_ssim_matches_skimage_on_corpus(
    kernels: ModuleType, corpus_pairs: list[tuple[str, np.ndarray, np.ndarray]]
) -> None:
    for name, a, b in corpus_pairs:
        assert kernels.ssim(a, b) == pytest.approx(_skimage_ssim(a, b), abs=TOLERANCE), name
        assert kernels.ssim_luma(a, b) == pytest.approx(_skimage_ssim_luma(a, b), abs=TOLERANCE), (
            name
        )
        assert kernels.ssim(a, a) == 1.0, name


@pytest.mark.corpus
def test_ssim_native_matches_pure_on_corpus(
    native: ModuleType, pure: ModuleType, corpus_pairs: list[tuple[str, np.ndarray, np.ndarray]]
) -> None:
    for name, a, b in corpus_pairs:
        assert native.ssim(a, b) == pytest.approx(pure.ssim(a, b), abs=BACKEND_TOLERANCE), name


# --------------------------------------------------------------------------
# reduce_box

# (height, width, fx, fy): exact blocks, partial edge blocks, 1xN, factor > size.
REDUCE_CASES = [
    pytest.param(12, 16, 2, 2, id="exact-2x2"),
    pytest.param(13, 17, 2, 3, id="partial-2x3"),
    pytest.param(11, 10, 4, 4, id="partial-4x4"),
    pytest.param(9, 14, 1, 3, id="rows-only"),
    pytest.param(9, 14, 5, 1, id="cols-only"),
    pytest.param(1, 23, 3, 3, id="1xN"),
    pytest.param(23, 1, 3, 3, id="Nx1"),
    pytest.param(5, 6, 9, 11, id="factor-beyond-size"),
    pytest.param(8, 8, 1, 1, id="identity"),
]


@pytest.mark.parametrize(("height", "width", "fx", "fy"), REDUCE_CASES)
@pytest.mark.parametrize("mode", sorted(MODES))
def test_reduce_box_matches_reference_exactly(
    kernels: ModuleType, mode: str, height: int, width: int, fx: int, fy: int
) -> None:
    channels, two_d = MODES[mode]
    rng = np.random.default_rng(height * 31 + width)
    img3 = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    if channels in (2, 4):
        img3[rng.random((height, width)) < 0.3, -1] = 0  # some fully transparent pixels
    img = _as_mode(img3, two_d)
    out = kernels.reduce_box(img, fx, fy)
    expected = _reduce_reference(img, fx, fy)
    assert out.shape == expected.shape
    assert out.dtype == np.uint8 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("channels", [1, 3])
def test_reduce_box_edge_blocks_average_only_their_pixels(
    kernels: ModuleType, channels: int
) -> None:
    img = np.zeros((3, 5, channels), np.uint8)
    img[:, 4] = 200  # the last column is a block of its own with fx = 2
    img[2, :] = 90  # and the last row with fy = 2
    img[2, 4] = 60
    out = kernels.reduce_box(img, 2, 2)
    assert out.shape == (2, 3, channels)
    assert (out[0, 2] == 200).all()  # 2 pixels, not 4: no phantom zeros
    assert (out[1, 0] == 90).all() and (out[1, 2] == 60).all()  # 2 and 1 pixels


def test_reduce_box_rounds_half_up(kernels: ModuleType) -> None:
    img = np.array([[0, 1, 1, 2, 3, 4, 254, 255]], np.uint8)
    assert kernels.reduce_box(img, 2, 1).tolist() == [[1, 2, 4, 255]]


@pytest.mark.parametrize("channels", [2, 4])
def test_reduce_box_transparent_colour_does_not_bleed(kernels: ModuleType, channels: int) -> None:
    img = np.zeros((2, 4, channels), np.uint8)
    img[:, :2, 0] = 255  # left block: half opaque colour 90, half transparent 255
    img[0, :2, 0] = 90
    img[0, :2, -1] = 255
    img[1, :2, -1] = 0
    img[:, 2:, 0] = 77  # right block: fully transparent
    out = kernels.reduce_box(img, 2, 2)
    assert out[0, 0, 0] == 90  # only the opaque pixels give colour
    assert out[0, 0, -1] == 128  # round(510 / 4) = 127.5 -> 128
    assert out[0, 1, 0] == 0 and out[0, 1, -1] == 0  # fully transparent block


def test_reduce_box_alpha_weighted_colour(kernels: ModuleType) -> None:
    # colour 200 at alpha 255 and colour 0 at alpha 85: (200*255) / 340 = 150.
    img = np.array([[[200, 255], [0, 85]]], np.uint8)
    assert kernels.reduce_box(img, 2, 1).tolist() == [[[150, 170]]]


@pytest.mark.parametrize("view", sorted(STRIDED))
def test_reduce_box_strided_view_matches_contiguous(kernels: ModuleType, view: str) -> None:
    img = STRIDED[view](_photo(40, 50, 4, seed=21))
    out = kernels.reduce_box(img, 3, 2)
    np.testing.assert_array_equal(out, kernels.reduce_box(np.ascontiguousarray(img), 3, 2))


def test_reduce_box_native_matches_pure_large(native: ModuleType, pure: ModuleType) -> None:
    img = _photo(301, 257, 4, seed=22)
    for fx, fy in [(2, 2), (3, 5), (8, 8), (300, 1)]:
        np.testing.assert_array_equal(native.reduce_box(img, fx, fy), pure.reduce_box(img, fx, fy))


def test_reduce_box_huge_factor_is_one_block(kernels: ModuleType) -> None:
    img = _photo(9, 9, 3, seed=23)
    out = kernels.reduce_box(img, 2**40, 2**63)
    np.testing.assert_array_equal(out, _reduce_reference(img, 9, 9))


def test_reduce_box_leaves_input_unchanged(kernels: ModuleType) -> None:
    img = _photo(10, 10, 2, seed=24)
    before = img.copy()
    kernels.reduce_box(img, 3, 3)
    np.testing.assert_array_equal(img, before)


# --------------------------------------------------------------------------
# Validation

GOOD = np.zeros((8, 9, 3), np.uint8)

SSIM_BAD_CALLS = [
    pytest.param(
        (GOOD, np.zeros((8, 10, 3), np.uint8)),
        ValueError,
        r"Expected images of the same shape but received \(8, 9, 3\) and \(8, 10, 3\)",
        id="shape-mismatch",
    ),
    pytest.param(
        (GOOD, np.zeros((8, 9, 4), np.uint8)),
        ValueError,
        r"Expected images of the same shape but received \(8, 9, 3\) and \(8, 9, 4\)",
        id="channels-mismatch",
    ),
    pytest.param(
        (np.zeros((6, 30), np.uint8), np.zeros((6, 30), np.uint8)),
        ValueError,
        r"Expected height and width >= 7 \(the SSIM window\) for a and b "
        r"but received shape \(6, 30\)",
        id="too-small",
    ),
    pytest.param(
        (GOOD, GOOD.astype(np.float32)),
        TypeError,
        "Expected dtype uint8 for b but received dtype float32",
        id="dtype",
    ),
    pytest.param(
        ([[0] * 9] * 8, GOOD),
        TypeError,
        "Expected numpy.ndarray for a but received list",
        id="not-array",
    ),
    pytest.param(
        (np.zeros((8, 9, 5), np.uint8), np.zeros((8, 9, 5), np.uint8)),
        ValueError,
        "Expected 1 to 4 channels .* for a but received 5 channels",
        id="channels",
    ),
]

REDUCE_BAD_CALLS = [
    pytest.param(
        (GOOD, 0, 2), ValueError, "Expected positive integer for fx but received 0", id="fx0"
    ),
    pytest.param(
        (GOOD, 2, -1), ValueError, "Expected positive integer for fy but received -1", id="fy-neg"
    ),
    pytest.param(
        (GOOD, 1.5, 2),
        TypeError,
        "Expected positive integer for fx but received 1.5",
        id="fx-float",
    ),
    pytest.param(
        (GOOD, True, 2),
        TypeError,
        "Expected positive integer for fx but received True",
        id="fx-bool",
    ),
    pytest.param(
        (np.zeros((0, 4), np.uint8), 2, 2),
        ValueError,
        "Expected height and width >= 1 for img but received shape",
        id="empty",
    ),
    pytest.param(
        (GOOD.astype(np.uint16), 2, 2),
        TypeError,
        "Expected dtype uint8 for img but received dtype uint16",
        id="dtype",
    ),
]


@pytest.mark.parametrize("function", ["ssim", "ssim_luma"])
@pytest.mark.parametrize(("args", "exc", "pattern"), SSIM_BAD_CALLS)
def test_ssim_rejects_bad_arguments(
    kernels: ModuleType, function: str, args: tuple, exc: type, pattern: str
) -> None:
    with pytest.raises(exc, match=pattern):
        getattr(kernels, function)(*args)


@pytest.mark.parametrize(("args", "exc", "pattern"), REDUCE_BAD_CALLS)
def test_reduce_box_rejects_bad_arguments(
    kernels: ModuleType, args: tuple, exc: type, pattern: str
) -> None:
    with pytest.raises(exc, match=pattern):
        kernels.reduce_box(*args)


@pytest.mark.parametrize(
    ("function", "args", "exc"),
    [("ssim", p.values[0], p.values[1]) for p in SSIM_BAD_CALLS]
    + [("reduce_box", p.values[0], p.values[1]) for p in REDUCE_BAD_CALLS],
)
def test_quality_error_messages_identical_across_backends(
    native: ModuleType, pure: ModuleType, function: str, args: tuple, exc: type
) -> None:
    with pytest.raises(exc) as from_native:
        getattr(native, function)(*args)
    with pytest.raises(exc) as from_pure:
        getattr(pure, function)(*args)
    assert str(from_native.value) == str(from_pure.value)
