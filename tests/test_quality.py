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
def test_quality_search_interpolates_to_the_lowest_passing_quality():
    """search_quality finds the lowest quality meeting the target of a rising curve (or one
    above it) in at most six probes (bisection took seven or eight), and the cap when
    nothing meets it."""
    from pyimgopt.pipeline.search import search_quality

    import math

    def curve(q):  # SSIM rises with quality, steeply at first, as the codecs' do
        return 1.0 - 0.3 * math.exp(-q / 18)

    for knee in (21, 23, 35, 47, 60, 71, 88, 99):
        calls = []

        def at(q):
            calls.append(q)
            return curve(q)

        target = (curve(knee) + curve(knee - 1)) / 2
        got = search_quality(at, 20, 100, target, 80)
        assert knee <= got <= knee + 1 and curve(got) >= target  # never below the target
        assert len(calls) <= 6
    assert search_quality(lambda q: 0.5, 20, 90, 0.985, 80) == 90


def test_quality_proxy_is_a_mosaic_of_the_whole_image():
    from pyimgopt.pipeline.decode import Decoded
    from pyimgopt.pipeline.search import PROXY_PIXELS, proxy

    small = Decoded(frames=[Image.fromarray(photo(400, 300))])
    assert proxy(small) is None  # small images are searched as they are
    arr = photo(1600, 1000)
    dec = Decoded(frames=[Image.fromarray(arr)], source_quality=77)
    p = proxy(dec)
    assert p is not None and p.size == (512, 512) and p.size[0] * p.size[1] < PROXY_PIXELS * 2
    got = np.asarray(p.frames[0])
    assert np.array_equal(got[:128, :128], arr[61:189, 136:264])  # first tile: centred in its cell
    assert np.array_equal(got[-128:, -128:], arr[811:939, 1336:1464])  # last tile
    mid = proxy(Decoded(frames=[Image.fromarray(photo(800, 600))]))
    assert mid is not None and mid.size == (256, 256)  # 64 px tiles under 1.5 MP
    assert p.source_quality == 77 and len(dec.frames) == 1


@pytest.mark.parametrize("fmt", ["jpeg", "webp", pytest.param("avif", marks=pytest.mark.skipif(not has_avif(), reason="no AVIF"))])
def test_quality_auto_meets_the_target_at_full_size_for_each_format(fmt):
    """A large image is searched on a proxy; whatever format auto keeps, its output meets the
    target at full size (luma SSIM measured here by scikit-image on the decoded output)."""
    arr = photo(900, 600)  # 0.54 MP: above PROXY_PIXELS
    data = encode(Image.fromarray(arr), "PNG")
    out, r = optimize_bytes(data, Settings(format="auto", formats_allowed=(fmt,)))
    assert r.format_out == fmt and r.status == "optimized"
    assert r.ssim is not None and r.ssim >= 0.985
    assert ssim_of(out, arr) >= 0.985 - 2e-3


def test_quality_auto_prunes_formats_that_cannot_win():
    """JPEG is not a candidate when WebP or AVIF may be chosen (it won none of 40), but is
    when it is the only lossy format allowed; PNG is not tried for a decoded JPEG (a gray
    one has <= 256 values) nor for a photo from a PNG, and is for a few-colour image."""
    from pyimgopt.pipeline.decode import Decoded
    from pyimgopt.pipeline.quality import auto_formats

    rgb = Decoded(frames=[Image.fromarray(photo(300, 200))])
    gray = Decoded(frames=[Image.fromarray(photo(300, 200)).convert("L")])
    few = Decoded(frames=[Image.fromarray(photo(300, 200)).quantize(16).convert("RGB")])
    assert "jpeg" not in auto_formats(rgb, "png", False)
    assert auto_formats(rgb, "png", False, ("jpeg", "png")) == ["jpeg", "png"]
    assert "png" not in auto_formats(gray, "jpeg", False)
    assert "png" not in auto_formats(rgb, "png", False)
    assert "png" in auto_formats(few, "png", False)
    assert "png" in auto_formats(rgb, "png", False, ("jpeg", "png", "gif"))  # no WebP: kept


def test_quality_auto_ranking_note_names_what_was_not_encoded():
    """A large photo: the lossy formats are ranked on the proxy; one that was not encoded at
    full size is named in the note with its proxy bytes, and the output meets the target."""
    arr = photo(1000, 700)
    out, r = optimize_bytes(encode(Image.fromarray(arr), "PNG"), Settings(format="auto"))
    note = next(n for n in r.notes if n.startswith("auto candidates"))
    encoded = [part.split("=")[0] for part in note.split(": ", 1)[1].split(" (")[0].split(", ")]
    assert r.format_out in encoded and "jpeg" not in note
    if "not encoded for real" in note:
        assert "proxy bytes" in note
    assert r.ssim >= 0.985 and ssim_of(out, arr) >= 0.985 - 2e-3


def test_quality_full_size_miss_searches_at_full_size_not_at_the_cap():
    """A proxy that misjudges the image (its tiles fall on flat areas, the detail lies
    between them) plans far too low a quality. The full-size check then searches on
    full-size encodes: the quality kept is at most the first multiple of 5 that meets the
    target (scanned here with fixed-quality encodes decoded by Pillow), never the cap
    (the proxy's near-zero slope used to jump to q100: 2.4x the bytes). ~1 s."""
    from pyimgopt.pipeline import perceptual

    side, tile = 560, 64  # 0.31 MP: searched on a 4x4 mosaic of 64 px tiles
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:side, 0:side]
    cells = [(i + 0.5) * side / 4 for i in range(4)]

    def near(v):
        return np.any([np.abs(v - c) < tile / 2 + 8 for c in cells], axis=0)

    tex = (128 + 60 * np.sin(x / 3.1) * np.cos(y / 2.7) + rng.normal(0, 18, x.shape)).clip(0, 255)
    arr = np.repeat(np.where(near(x) & near(y), 128, tex).astype(np.uint8)[..., None], 3, -1)
    arr[..., 1] = (arr[..., 1] * 0.8).astype(np.uint8)
    data = encode(Image.fromarray(arr), "PNG")
    target = 0.985
    out, r = optimize_bytes(data, Settings(format="webp", target_ssim=target))
    first_ok = next(q for q in range(60, 101, 5) if perceptual.score(arr, np.asarray(decode(
        optimize_bytes(data, Settings(format="webp", quality=q))[0]).convert("RGB"))) >= target)
    assert first_ok < 100
    assert r.ssim >= target and perceptual.score(arr, np.asarray(decode(out).convert("RGB"))) >= target
    assert r.quality <= first_ok, (r.quality, first_ok)
