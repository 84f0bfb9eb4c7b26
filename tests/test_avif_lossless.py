"""``lossless=True`` AVIF is exact or refused (issue 13, item 4).

The oracle decodes the output twice, with Pillow's libavif and with libvips
(pyvips, a separate libheif/dav1d build), and compares every value with the
source, alpha included. Cost: about 2 s per backend (one subprocess).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from pyimgopt import Settings, optimize_bytes
from pyimgopt.errors import UnsupportedFormatError
from pyimgopt.pipeline.encode import has_avif

from conftest import encode, photo

pytestmark = pytest.mark.skipif(not has_avif(), reason="this Pillow cannot write AVIF")


def _vips_pixels(data: bytes) -> np.ndarray:
    pyvips = pytest.importorskip("pyvips")
    img = pyvips.Image.new_from_buffer(data, "")
    return np.ndarray(buffer=img.write_to_memory(), dtype=np.uint8, shape=(img.height, img.width, img.bands))


def _sources() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(4)
    rgba = np.dstack([photo(53, 37), rng.integers(0, 256, (37, 53), dtype=np.uint8)])
    rgba[:5, :5, 3] = 0  # fully transparent corner
    return {
        "RGB": photo(61, 43),
        "RGBA": rgba,
        "L": photo(40, 30)[..., 0],
        "noise": rng.integers(0, 256, (29, 31, 3), dtype=np.uint8),
    }


@pytest.mark.parametrize("name", ["RGB", "RGBA", "L", "noise"])
def test_avif_lossless_is_exact_in_two_decoders(name):
    pytest.importorskip("pyvips")
    src = _sources()[name]
    out, r = optimize_bytes(encode(Image.fromarray(src), "PNG"), Settings(format="avif", lossless=True))
    assert r.format_out == "avif" and r.status == "optimized"
    mode = "L" if src.ndim == 2 else ("RGBA" if src.shape[2] == 4 else "RGB")
    with Image.open(io.BytesIO(out)) as im:
        got = np.asarray(im.convert(mode))
    assert np.array_equal(got, src)
    via_vips = _vips_pixels(out)
    if src.ndim == 2:
        assert np.array_equal(via_vips[..., 0], src)
    else:
        assert np.array_equal(via_vips[..., : src.shape[2]], src)
    assert r.ssim == 1.0


def test_avif_lossless_animation_is_refused():
    frames = [Image.new("RGB", (16, 16), (i * 80, 0, 0)) for i in range(3)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    with pytest.raises(UnsupportedFormatError, match="lossless AVIF"):
        optimize_bytes(data, Settings(format="avif", lossless=True))


def test_avif_lossless_without_libvips_is_refused_not_faked(tmp_path):
    src = tmp_path / "a.png"
    src.write_bytes(encode(Image.fromarray(photo(32, 24)), "PNG"))
    code = textwrap.dedent(f"""
        import pyimgopt
        r = pyimgopt.optimize_file({str(src)!r}, {str(tmp_path / "a.avif")!r},
                                   pyimgopt.Settings(format="avif", lossless=True))
        print(r.status, r.error.code if r.error else None, r.error.message if r.error else "")
    """)
    env = dict(os.environ, PYIMGOPT_DISABLE="vips")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    status, code_, message = done.stdout.strip().split(" ", 2)
    assert (status, code_) == ("failed", "unsupported_format")
    assert "pyvips" in message and "YUV" in message
    assert not (tmp_path / "a.avif").exists()
