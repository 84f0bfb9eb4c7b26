"""Best-in-class encoders: oxipng, libimagequant, mozjpeg's lossless pass, and their fallbacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from pyimgopt import Settings, optimize_bytes
from pyimgopt.pipeline import boost

from conftest import decode, encode, exif_bytes, photo


def pixels(data):
    return np.asarray(decode(data).convert("RGBA"))


def camera_jpeg():
    """Like a camera file: q95, unoptimised Huffman tables, EXIF with GPS and a maker."""
    return encode(Image.fromarray(photo(640, 480)), "JPEG", quality=95, optimize=False,
                  exif=exif_bytes(1, gps=True, make="Canon"))


@pytest.mark.skipif(not boost.available("mozjpeg"), reason="mozjpeg-lossless-optimization not installed")
def test_encoders_lossless_jpeg_mode_is_pixel_identical_and_smaller():
    data = camera_jpeg()
    out, r = optimize_bytes(data, Settings(lossless=True))
    assert r.status == "optimized" and len(out) <= 0.97 * len(data)
    assert np.array_equal(pixels(out), pixels(data))
    assert b"Canon" not in out  # metadata stripped, pixels untouched


def test_encoders_lossless_jpeg_keeps_orientation_it_cannot_apply():
    data = encode(Image.fromarray(photo(300, 200)), "JPEG", quality=95, optimize=False, exif=exif_bytes(6))
    out, r = optimize_bytes(data, Settings(lossless=True, allow_larger=True))
    assert decode(out).getexif().get(0x0112) == 6  # without re-encoding, the tag must stay
    assert np.array_equal(pixels(out), pixels(data))


@pytest.mark.skipif(not boost.available("oxipng"), reason="pyoxipng not installed")
def test_encoders_png_oxipng_lossless_and_not_larger_than_pillow_optimize():
    arr = np.dstack([photo(400, 300), np.tile(np.linspace(0, 255, 400).astype(np.uint8), (300, 1))])
    src = Image.fromarray(arr)
    data = encode(src, "PNG", compress_level=0)
    out, r = optimize_bytes(data)
    assert np.array_equal(pixels(out), arr)
    assert len(out) <= len(encode(src, "PNG", optimize=True))


@pytest.mark.skipif(not boost.available("imagequant"), reason="imagequant not installed")
def test_encoders_lossy_png_keeps_alpha_and_meets_target():
    arr = np.zeros((128, 128, 4), np.uint8)
    arr[..., :3] = photo(128, 128)
    arr[32:96, 32:96, 3] = 255
    arr[:, :16, 3] = 128
    data = encode(Image.fromarray(arr), "PNG")
    out, r = optimize_bytes(data, Settings(lossy_png=True, target_ssim=0.9))
    got = pixels(out)
    assert "lossy palette (libimagequant)" in r.notes and len(out) < len(data)
    assert (got[..., 3] == arr[..., 3]).mean() > 0.99  # alpha kept
    strict, r2 = optimize_bytes(data, Settings(lossy_png=True, target_ssim=0.99999))
    assert "lossy palette (libimagequant)" not in r2.notes  # missed the target: truecolour kept
    assert np.array_equal(pixels(strict), arr)


_SCRIPT = """
import io, json, sys
from PIL import Image
import numpy as np
from pyimgopt import Settings, optimize_bytes
sys.path.insert(0, sys.argv[1])
from conftest import photo
png = io.BytesIO(); Image.fromarray(photo(200, 150)).save(png, "PNG", compress_level=0)
jpg = io.BytesIO(); Image.fromarray(photo(200, 150)).save(jpg, "JPEG", quality=95)
out = {}
for name, data, s in (("png", png.getvalue(), Settings()), ("jpeg", jpg.getvalue(), Settings()),
                      ("lossy", png.getvalue(), Settings(lossy_png=True)),
                      ("lossless", jpg.getvalue(), Settings(lossless=True, allow_larger=True))):
    b, r = optimize_bytes(data, s)
    Image.open(io.BytesIO(b)).load()
    out[name] = {"notes": list(r.notes), "status": r.status, "smaller": len(b) <= len(data)}
print(json.dumps(out))
"""


def test_encoders_missing_optional_packages_fall_back_and_say_so():
    env = {**os.environ, "PYIMGOPT_DISABLE": "oxipng,mozjpeg,imagequant"}
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, os.path.dirname(__file__)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert any("pyoxipng not installed" in n for n in res["png"]["notes"]) or res["png"]["status"] == "skipped"
    assert any("mozjpeg-lossless-optimization not installed" in n for n in res["jpeg"]["notes"] + res["lossless"]["notes"])
    assert any("imagequant not installed" in n for n in res["lossy"]["notes"])
    assert all(v["smaller"] for v in res.values())


def _screenshot():
    im = Image.new("RGB", (320, 200), (250, 250, 250))
    from PIL import ImageDraw

    d = ImageDraw.Draw(im)
    for y in range(10, 190, 14):
        d.text((8, y), "pyimgopt keeps text sharp 0123456789", fill=(200, 20, 20))
        d.line((0, y + 11, 320, y + 11), fill=(20, 20, 200))
    return im


def test_encoders_chroma_subsampling_by_content():
    from PIL import JpegImagePlugin

    shot, _ = optimize_bytes(encode(_screenshot(), "PNG"), Settings(format="jpeg", quality=80))
    pic, _ = optimize_bytes(encode(Image.fromarray(photo(320, 200)), "PNG"), Settings(format="jpeg", quality=80))
    assert JpegImagePlugin.get_sampling(decode(shot)) == 0  # 4:4:4 for graphics and text
    assert JpegImagePlugin.get_sampling(decode(pic)) == 2   # 4:2:0 for photos


def test_encoders_graphic_to_webp_lossless_when_smaller():
    src = _screenshot()
    out, r = optimize_bytes(encode(src, "PNG"), Settings(format="webp"))
    if "lossless WebP (graphic, smaller than lossy)" in r.notes:
        assert np.array_equal(np.asarray(decode(out).convert("RGB")), np.asarray(src))
    lossy = encode(src.convert("RGB"), "WEBP", quality=80, method=4)
    assert len(out) <= len(lossy)
