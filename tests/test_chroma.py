"""Quality targets see colour, not only luma (issue 13, item 8).

An equal-luma red/green pattern is the worst case for a luma-only SSIM: 4:2:0
chroma turns it to brown mush while luma SSIM stays near 1. The oracle here
measures the damage itself (RGB PSNR and the per-channel error, in NumPy) on
the decoded output. Cost: about 4 s per backend (AVIF searches).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pyimgopt import Settings, _kernels, optimize_bytes
from pyimgopt.pipeline import quality
from pyimgopt.pipeline.encode import has_avif

from conftest import encode, photo


def red_green(block: int, w: int = 192, h: int = 128) -> np.ndarray:
    """Checkerboard of (230, 60, 60) and (40, 161, 40): the same luma, 110.8."""
    y, x = np.mgrid[0:h, 0:w]
    on = ((x // block + y // block) % 2 == 1)[..., None]
    return np.where(on, np.array([230, 60, 60]), np.array([40, 161, 40])).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def rgb(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def test_chroma_pattern_is_equal_luma_and_luma_ssim_is_blind_to_420():
    src = red_green(8)
    damaged = rgb(encode(Image.fromarray(src), "JPEG", quality=95, subsampling=2))
    assert _kernels.ssim_luma(src, damaged) > 0.99  # what a luma-only check sees
    assert psnr(src, damaged) < 24  # what a viewer sees
    assert quality.measure(encode(Image.fromarray(src), "JPEG", quality=95, subsampling=2), src,
                           (255, 255, 255)) < 0.985


@pytest.mark.parametrize("fmt", ["jpeg", "avif", "webp"])
@pytest.mark.parametrize("block", [4, 8])
def test_chroma_target_is_never_met_by_luma_alone(fmt, block):
    if fmt == "avif" and not has_avif():
        pytest.skip("this Pillow cannot write AVIF")
    src = red_green(block)
    settings = Settings(format=fmt, target_ssim=0.985, lossless=False,
                        chroma_subsampling="4:2:0" if fmt == "jpeg" else "auto")
    out, r = optimize_bytes(encode(Image.fromarray(src), "PNG"), settings)
    got = rgb(out)
    if r.ssim is not None and r.ssim >= 0.985:  # a claim that the target was met ...
        assert psnr(src, got) >= 26, (fmt, block, r.ssim, psnr(src, got))  # ... must hold in colour
    else:
        assert any("misses target" in n for n in r.notes)


def test_chroma_auto_keeps_the_colours():
    src = red_green(4)
    out, r = optimize_bytes(encode(Image.fromarray(src), "PNG"), Settings(format="auto"))
    assert psnr(src, rgb(out)) >= 26, (r.format_out, r.notes)


def test_chroma_check_leaves_photos_to_luma():
    """On a photo the score is the luma SSIM: its colour error is far below the floor."""
    from pyimgopt.pipeline import perceptual

    src = photo(160, 120)
    for q in (60, 80, 95):
        got = rgb(encode(Image.fromarray(src), "JPEG", quality=q))
        assert perceptual.score(src, got) == pytest.approx(float(_kernels.ssim_luma(src, got)), abs=1e-12)


def test_chroma_error_is_the_mean_chroma_difference():
    from pyimgopt.pipeline import perceptual

    src = red_green(8, 32, 24)
    assert perceptual.score(src, src.copy()) == 1.0 and perceptual.chroma_error(src, src) == 0.0
    flat = np.zeros_like(src)
    flat[:] = (128, 128, 128)
    moved = flat.copy()
    moved[:] = (128, 128, 140)  # dB = 12: dCb = 0.5 * 12, dCr = -0.081312 * 12
    assert perceptual.chroma_error(flat, moved) == pytest.approx(6.975744, abs=1e-12)
    assert perceptual.score(flat, moved) == pytest.approx(1 - 6.975744 / perceptual.COLOUR_SCALE)
    tiny = red_green(1, 5, 5)  # below the SSIM window: colour still counts
    shifted = red_green(1, 6, 5)[:, 1:].copy()  # every pixel the other colour
    assert perceptual.score(tiny, shifted) < 0.9


# -- the kernel behind the colour check: both backends, one exact definition -----------


def _chroma_reference(a: np.ndarray, b: np.ndarray) -> float:
    """Float64 BT.601 full-range chroma difference, written out independently."""
    d = a[..., :3].astype(np.float64) - b[..., :3].astype(np.float64)
    cb = -0.168736 * d[..., 0] - 0.331264 * d[..., 1] + 0.5 * d[..., 2]
    cr = 0.5 * d[..., 0] - 0.418688 * d[..., 1] - 0.081312 * d[..., 2]
    return float(np.mean(np.abs(cb) + np.abs(cr)))


@pytest.mark.parametrize("shape", [(1, 1, 3), (7, 5, 3), (33, 40, 4), (64, 48, 3)])
def test_chroma_kernel_matches_its_definition(kernels, shape):
    rng = np.random.default_rng(sum(shape))
    a = rng.integers(0, 256, shape, dtype=np.uint8)
    b = rng.integers(0, 256, shape, dtype=np.uint8)
    assert kernels.chroma_error(a, b) == pytest.approx(_chroma_reference(a, b), rel=1e-12)
    assert kernels.chroma_error(a, a.copy()) == 0.0
    if shape[2] == 4:  # alpha is not colour
        c = b.copy()
        c[..., 3] = 255 - c[..., 3]
        assert kernels.chroma_error(a, c) == kernels.chroma_error(a, b)


def test_chroma_kernel_backends_agree_exactly_on_any_strides(native, pure):
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (120, 90, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (120, 90, 3), dtype=np.uint8)
    for x, y in ((a, b), (a[::-1, ::2], b[:, 1::2]), (a[:, :, :3].transpose(1, 0, 2), b.transpose(1, 0, 2))):
        assert native.chroma_error(x, y) == pure.chroma_error(x, y)
    gray = rng.integers(0, 256, (20, 20), dtype=np.uint8)
    assert native.chroma_error(gray, gray[::-1]) == pure.chroma_error(gray, gray[::-1]) == 0.0


def test_chroma_kernel_rejects_mismatched_shapes(kernels):
    a = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="same shape"):
        kernels.chroma_error(a, np.zeros((8, 9, 3), np.uint8))
    with pytest.raises(TypeError):
        kernels.chroma_error(a, a.astype(np.float32))


def _avif_subsampling(data: bytes) -> tuple[int, int]:
    """(chroma_subsampling_x, chroma_subsampling_y) from the av1C box: (1, 1) is 4:2:0."""
    at = data.index(b"av1C") + 4
    flags = data[at + 2]
    return (flags >> 3) & 1, (flags >> 2) & 1


@pytest.mark.skipif(not has_avif(), reason="this Pillow cannot write AVIF")
def test_chroma_avif_keeps_full_chroma_for_graphics():
    graphic, _ = optimize_bytes(encode(Image.fromarray(red_green(8)), "PNG"), Settings(format="avif"))
    assert _avif_subsampling(graphic) == (0, 0)
    picture, _ = optimize_bytes(encode(Image.fromarray(photo(96, 64)), "PNG"), Settings(format="avif"))
    assert _avif_subsampling(picture) == (1, 1)
