"""Quality targets and format="auto": the search meets the target with fewer bytes."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from skimage.metrics import structural_similarity

from pyimgopt import Settings, optimize_bytes, optimize_file
from pyimgopt.pipeline.encode import has_avif

from conftest import decode, encode, jpeg, photo


def luma(arr: np.ndarray) -> np.ndarray:
    a = arr.astype(np.float64)
    return 0.299 * a[..., 0] + 0.587 * a[..., 1] + 0.114 * a[..., 2]


def ssim_of(out: bytes, ref: np.ndarray) -> float:
    got = np.asarray(decode(out).convert("RGB"))
    return structural_similarity(luma(got), luma(ref), data_range=255)


@pytest.mark.parametrize("fmt", ["jpeg", "webp", pytest.param("avif", marks=pytest.mark.skipif(not has_avif(), reason="no AVIF"))])
@pytest.mark.parametrize("target", [0.95, 0.98])
def test_quality_target_ssim_met_and_reported(fmt, target):
    arr = photo(240, 180)
    data = encode(Image.fromarray(arr), "PNG")
    out, r = optimize_bytes(data, Settings(format=fmt, target_ssim=target))
    measured = ssim_of(out, arr)
    assert measured >= target - 2e-3, (measured, r)
    assert r.ssim is not None and abs(r.ssim - measured) < 2e-3
    assert r.quality is not None


def test_quality_lower_target_gives_smaller_output():
    data = encode(Image.fromarray(photo(240, 180)), "PNG")
    hi, r_hi = optimize_bytes(data, Settings(format="jpeg", target_ssim=0.995))
    lo, r_lo = optimize_bytes(data, Settings(format="jpeg", target_ssim=0.95))
    assert len(lo) < len(hi) and r_lo.quality < r_hi.quality


def test_quality_quality_caps_the_search():
    data = encode(Image.fromarray(photo(240, 180)), "PNG")
    out, r = optimize_bytes(data, Settings(format="jpeg", target_ssim=0.9999, quality=60))
    assert r.quality == 60 and r.ssim < 0.9999
    assert any("misses target" in n for n in r.notes)


def test_quality_auto_picks_smallest_meeting_target():
    data = jpeg(photo(320, 240), quality=95)
    out, r = optimize_bytes(data, Settings(format="auto"))
    assert r.format_out in ("jpeg", "webp", "avif")
    assert r.ssim >= 0.985 - 2e-3
    notes = [n for n in r.notes if n.startswith("auto candidates")]
    assert notes
    sizes = dict(part.split("=") for part in notes[0].split(": ", 1)[1].split(", "))
    assert len(out) <= min(int(v) for v in sizes.values())
    assert Image.open(io.BytesIO(out)).format.lower() == r.format_out


def test_quality_auto_keeps_alpha_and_few_colours_lossless():
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[16:48, 16:48] = (200, 30, 30, 255)
    out, r = optimize_bytes(encode(Image.fromarray(rgba), "PNG", compress_level=0), Settings(format="auto"))
    assert r.format_out in ("png", "webp", "avif")
    got = np.asarray(decode(out).convert("RGBA"))
    assert got[0, 0, 3] == 0 and got[32, 32, 3] == 255


def test_quality_auto_output_extension_follows_format(tmp_path):
    src = tmp_path / "photo.png"
    src.write_bytes(encode(Image.fromarray(photo(320, 240)), "PNG"))
    r = optimize_file(src, tmp_path / "out" / "photo.png", Settings(format="auto"))
    assert r.status == "optimized"
    assert r.output.endswith({"jpeg": ".jpg", "webp": ".webp", "avif": ".avif", "png": ".png"}[r.format_out])
    assert (tmp_path / "out").joinpath(r.output.rsplit("/", 1)[1]).is_file()


def test_quality_auto_in_place_keeps_format(tmp_path):
    src = tmp_path / "photo.jpg"
    src.write_bytes(jpeg(photo(320, 240), quality=98))
    r = optimize_file(src, None, Settings(format="auto"))
    assert r.format_out == "jpeg" and decode(src.read_bytes()).format == "JPEG"


def test_quality_target_ssim_validation():
    from pyimgopt.errors import InvalidSettingsError

    for bad in (0, 1.5, "0.9", True):
        with pytest.raises(InvalidSettingsError, match="target_ssim"):
            Settings(target_ssim=bad)


def _light_over_soft_alpha() -> bytes:
    """White pixels over a soft, detailed alpha (a glow or overlay asset): on white every
    candidate looks perfect, whatever it does to the alpha."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:96, 0:128]
    alpha = 127 + 60 * np.sin(x / 3.0) * np.cos(y / 4.0) + 60 * np.sin((x + y) / 7.0)
    alpha = np.clip(alpha + rng.normal(0, 8, alpha.shape), 0, 255).astype(np.uint8)
    rgba = np.dstack([np.full((96, 128, 3), 255, np.uint8), alpha])
    return encode(Image.fromarray(rgba), "PNG")


@pytest.mark.parametrize("settings", [
    Settings(format="auto"),
    pytest.param(Settings(format="avif", target_ssim=0.985),
                 marks=pytest.mark.skipif(not has_avif(), reason="no AVIF")),
    Settings(format="webp", target_ssim=0.985, lossless=False)], ids=["auto", "avif", "webp"])
def test_quality_target_sees_alpha(settings):
    """The score is the lower of the composites on white and on black: a target met on
    white alone cannot hide a damaged alpha (an AVIF at q20 scored 0.99996 on white,
    0.926 on black)."""
    from matrix import oracle

    data = _light_over_soft_alpha()
    ref = oracle.view(data).rgba
    out, r = optimize_bytes(data, settings)
    got = oracle.view(out).rgba
    on_black = oracle.ssim(oracle.composite(got, (0, 0, 0)), oracle.composite(ref, (0, 0, 0)))
    alpha = oracle.ssim(got[..., 3], ref[..., 3])
    assert r.ssim is not None and r.ssim >= 0.985, r
    assert on_black >= 0.97 and alpha >= 0.97, (r.format_out, r.quality, on_black, alpha)


def test_quality_auto_with_lossless_tries_only_exact_encodings():
    """format auto + lossless=True (the web UI offers both): the smallest exact encoding."""
    from matrix import oracle

    data = encode(Image.fromarray(photo(64, 48)), "PNG")
    out, r = optimize_bytes(data, Settings(format="auto", lossless=True))
    assert r.format_out in ("png", "webp") and r.ssim == 1.0
    assert np.array_equal(oracle.view(out).rgba, oracle.view(data).rgba)
    assert all("-lossless=" in part for part in r.notes[-1].split(": ", 1)[1].split(", "))
