"""``Settings.target_size`` / ``--target-size`` (issue 20 item 3).

Every output is at most the target or the file fails alone with
``target_unreachable`` (and its best size); the quality chosen is the largest
that fits, within one step (checked by encoding one quality higher without a
target and seeing it not fit); ``min_scale`` allows a downscale and only that
much; with ``target_ssim`` both hold. Outputs are decoded by Pillow.
"""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
from PIL import Image

from conftest import decode, encode, jpeg, photo, temp_files
from pyimgopt import Settings
from pyimgopt.errors import TargetUnreachableError
from pyimgopt.pipeline import optimize_bytes, optimize_file

SRC = jpeg(photo(200, 150), quality=97)


def size_at(fmt="keep", **kw):
    return len(optimize_bytes(SRC, Settings(format=fmt, **kw))[0])


@pytest.mark.parametrize("fmt", ["keep", "webp", "avif"])
@pytest.mark.parametrize("fraction", [0.8, 0.55])
def test_target_size_fits_at_the_largest_quality_that_fits(fmt, fraction):
    plain, q20 = size_at(fmt), size_at(fmt, quality=20)
    limit = int(q20 + fraction * (plain - q20))  # between the smallest and the usual output
    out, r = optimize_bytes(SRC, Settings(format=fmt, target_size=limit))
    assert r.status == "optimized" and len(out) == r.bytes_out <= limit
    im = decode(out)
    assert im.size == (200, 150) and im.format.lower() == (r.format_out if fmt != "keep" else "jpeg")
    # one quality step up (no size target) no longer fits: q is the largest that fits
    up, _ = optimize_bytes(SRC, Settings(format=fmt, quality=r.quality + 1))
    assert len(up) > limit, (r.quality, len(up))


def test_target_size_that_already_fits_keeps_the_usual_quality():
    plain, p = optimize_bytes(SRC, Settings())
    out, r = optimize_bytes(SRC, Settings(target_size=len(plain) + 1000))
    assert out == plain and r.quality == p.quality  # a ceiling, not a reason to raise quality


def test_target_size_auto_picks_a_fitting_format_that_scores_best():
    limit = int(0.7 * size_at())
    out, r = optimize_bytes(SRC, Settings(format="auto", target_size=limit,
                                          formats_allowed=("jpeg", "webp")))
    assert len(out) <= limit and r.format_out in ("jpeg", "webp")
    others = {"jpeg": "webp", "webp": "jpeg"}
    other, o = optimize_bytes(SRC, Settings(format=others[r.format_out], target_size=limit))
    assert r.ssim >= o.ssim - 1e-9  # the other format, at its best fitting quality, scores no better
    assert decode(out).size == (200, 150)


def test_target_size_unreachable_fails_alone_with_best_size(tmp_path):
    (tmp_path / "a.jpg").write_bytes(SRC)
    (tmp_path / "b.jpg").write_bytes(SRC)
    bad = optimize_file(str(tmp_path / "a.jpg"), str(tmp_path / "out" / "a.jpg"), Settings(target_size=500))
    assert bad.status == "failed" and bad.error.code == "target_unreachable"
    best = int(re.search(r"smallest output was (\d+) bytes", bad.error.message).group(1))
    assert best > 500 and "min_scale" in bad.error.message
    assert not (tmp_path / "out" / "a.jpg").exists() and not temp_files(tmp_path)
    good = optimize_file(str(tmp_path / "b.jpg"), str(tmp_path / "out" / "b.jpg"), Settings(target_size=9000))
    assert good.status == "optimized" and (tmp_path / "out" / "b.jpg").stat().st_size <= 9000
    with pytest.raises(TargetUnreachableError):
        optimize_bytes(SRC, Settings(target_size=500))


def test_target_size_min_scale_downscales_only_as_far_as_allowed():
    limit = int(size_at(quality=20) * 0.6)  # not even the lowest quality fits at full size
    out, r = optimize_bytes(SRC, Settings(target_size=limit, min_scale=0.3))
    assert len(out) <= limit and 0.3 * 200 - 1 <= r.width < 200
    assert decode(out).size == (r.width, r.height)
    assert abs(r.width / r.height - 200 / 150) < 0.05  # the same picture, smaller
    with pytest.raises(TargetUnreachableError, match=r"scaled to 0\.900"):
        optimize_bytes(SRC, Settings(target_size=limit, min_scale=0.9))


def test_target_size_lossless_png_needs_a_downscale():
    arr = photo(120, 90)
    src = encode(Image.fromarray(arr), "PNG")
    with pytest.raises(TargetUnreachableError, match="lossless"):
        optimize_bytes(src, Settings(target_size=len(src) // 3))
    out, r = optimize_bytes(src, Settings(target_size=len(src) // 3, min_scale=0.2))
    assert len(out) <= len(src) // 3 and r.format_out == "png" and r.width < 120
    small = np.asarray(decode(out).convert("RGB"))
    assert small.shape == (r.height, r.width, 3)


def test_target_size_with_target_ssim_both_hold_or_target_unreachable():
    out, r = optimize_bytes(SRC, Settings(target_size=12000, target_ssim=0.8))
    assert len(out) <= 12000 and r.ssim >= 0.8
    with pytest.raises(TargetUnreachableError, match=r"SSIM >= 0\.99.*smallest output with SSIM"):
        optimize_bytes(SRC, Settings(target_size=6000, target_ssim=0.99))


def test_target_size_cli_json_reports_target_unreachable(tmp_path, capsys):
    from pyimgopt.cli import main

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jpg").write_bytes(SRC)
    (tmp_path / "in" / "b.png").write_bytes(encode(Image.fromarray(photo(120, 90)), "PNG"))
    rc = main(["optimize", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--target-size", "9KB",
               "--json", "-j", "0", "--no-progress", "--state-dir", str(tmp_path / "st")])
    recs = {r["input"].rsplit("/", 1)[-1]: r for r in map(json.loads, capsys.readouterr().out.splitlines())
            if r["type"] == "result"}
    assert rc == 1 and recs["a.jpg"]["status"] == "optimized" and recs["a.jpg"]["bytes_out"] <= 9000
    assert recs["b.png"]["error"]["code"] == "target_unreachable"
    assert (tmp_path / "out" / "a.jpg").stat().st_size <= 9000 and not (tmp_path / "out" / "b.png").exists()


def _animated_gif(n: int = 4) -> bytes:
    frames = [Image.fromarray(photo(64, 48, seed=i)).quantize(64) for i in range(n)]
    import io

    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buf.getvalue()


def test_target_size_searches_quality_for_an_animation():
    """Review finding 3: an animated GIF -> WebP whose usual output is over the target but a
    lower quality fits is written at that quality (was a false target_unreachable)."""
    gif = _animated_gif()
    plain, _ = optimize_bytes(gif, Settings(format="webp"))
    low, _ = optimize_bytes(gif, Settings(format="webp", quality=20))
    limit = (len(plain) + len(low)) // 2
    out, r = optimize_bytes(gif, Settings(format="webp", target_size=limit))
    assert r.status == "optimized" and len(out) == r.bytes_out <= limit, r
    with Image.open(io.BytesIO(out)) as im:
        assert im.format == "WEBP" and im.n_frames == 4 and im.size == (64, 48)
    assert 20 <= r.quality < 80
    up, _ = optimize_bytes(gif, Settings(format="webp", quality=r.quality + 1))
    assert len(up) > limit  # the largest quality that fits


def test_target_size_searches_quality_for_a_thin_image():
    """A 4000x6 JPEG (a side under the SSIM window) is searched too; no score is needed."""
    src = jpeg(photo(4000, 6, seed=3), quality=95)
    plain, _ = optimize_bytes(src, Settings())
    low, _ = optimize_bytes(src, Settings(quality=20))
    limit = (len(plain) + len(low)) // 2
    out, r = optimize_bytes(src, Settings(target_size=limit))
    assert r.status == "optimized" and len(out) <= limit
    assert decode(out).size == (4000, 6) and r.quality < 95
