"""Encoders on the corpus: pyimgopt vs Pillow defaults vs Pillow optimize vs oxipng alone.

Per file and contender: bytes out and seconds (one round each; the table
sums bytes and medians the times), and for lossy JPEG the luma SSIM against
the decoded input. Also pyimgopt's lossless JPEG mode on camera JPEGs, with
a pixel-identity check. Results go to bench/README.md through report.py.

JPEG has two pyimgopt rows. ``pyimgopt-encoder`` is the like-for-like one:
pyimgopt's JPEG encoder at default quality on exactly the pixels Pillow's
contender gets (Pillow's decode), so bytes compare at the mean SSIM each
reaches. ``pyimgopt`` is the whole pipeline, which also converts ICC profiles
to sRGB and never re-encodes above the source's own quality: both lower the
SSIM against the raw decode, so that row is not an equal-SSIM comparison.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from _common import CORPUS, corpus_available
from PIL import Image

import pyimgopt
from pyimgopt import _kernels
from pyimgopt.pipeline import boost


def _manifest():
    if not corpus_available():
        return []
    return json.loads((CORPUS / "MANIFEST.json").read_text())


PNGS = [e["file"] for e in _manifest() if e["format"] == "PNG"]
JPEGS = [e["file"] for e in _manifest() if e["format"] == "JPEG" and e["mode"] == "RGB"]
CAMERA = [e["file"] for e in _manifest()
          if e["format"] == "JPEG" and e.get("exif_orientation") is not None]


def _need_corpus():
    if not corpus_available():
        pytest.skip(f"no image corpus at {CORPUS} (set PYIMGOPT_CORPUS)")


def _luma_ssim(a: bytes, b: bytes) -> float:
    """Luma SSIM of output ``b`` against the upright decoded input ``a``."""
    from PIL import ImageOps

    src = Image.open(io.BytesIO(a))
    y = np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))
    x = np.asarray(ImageOps.exif_transpose(src).convert("RGB"))
    if x.shape != y.shape:  # an encoder that dropped the EXIF orientation without applying it
        x = np.asarray(Image.open(io.BytesIO(a)).convert("RGB"))
    return float(_kernels.ssim_luma(x, y))


def _pillow(data: bytes, fmt: str, **params) -> bytes:
    im = Image.open(io.BytesIO(data))
    im.load()
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


PNG_CASES = {
    "pyimgopt": lambda d: pyimgopt.optimize_bytes(d, pyimgopt.Settings(allow_larger=True))[0],
    "pillow-default": lambda d: _pillow(d, "PNG"),
    "pillow-optimize": lambda d: _pillow(d, "PNG", optimize=True),
    "oxipng-alone": lambda d: boost.png_optimize(d, 6),
}


@pytest.mark.parametrize("case", list(PNG_CASES))
@pytest.mark.parametrize("name", PNGS or ["-"])
def test_png(benchmark, name, case):
    _need_corpus()
    if case == "oxipng-alone" and not boost.available("oxipng"):
        pytest.skip("pyoxipng not installed")
    data = (CORPUS / name).read_bytes()
    benchmark.group = f"encoders png {name}"
    out = benchmark.pedantic(PNG_CASES[case], args=(data,), rounds=1, iterations=1)
    benchmark.extra_info.update(suite="encoders", kind="png", impl=case, image=name,
                                bytes_in=len(data), bytes_out=len(out))


def _pyimgopt_encoder(data: bytes) -> bytes:
    from pyimgopt.pipeline.decode import Decoded
    from pyimgopt.pipeline.encode import encode

    im = Image.open(io.BytesIO(data))
    im.load()
    return encode(Decoded(frames=[im.convert("RGB")]), "jpeg", pyimgopt.Settings(quality=80),
                  source_format="png", source_lossless=True).data


JPEG_CASES = {
    "pyimgopt": lambda d: pyimgopt.optimize_bytes(
        d, pyimgopt.Settings(format="jpeg", quality=80, allow_larger=True))[0],
    "pyimgopt-encoder": _pyimgopt_encoder,
    "pillow-optimize": lambda d: _pillow(d, "JPEG", quality=80, optimize=True, progressive=True),
}


@pytest.mark.parametrize("case", list(JPEG_CASES))
@pytest.mark.parametrize("name", JPEGS or ["-"])
def test_jpeg(benchmark, name, case):
    _need_corpus()
    data = (CORPUS / name).read_bytes()
    benchmark.group = f"encoders jpeg {name}"
    out = benchmark.pedantic(JPEG_CASES[case], args=(data,), rounds=1, iterations=1)
    benchmark.extra_info.update(suite="encoders", kind="jpeg", impl=case, image=name,
                                bytes_in=len(data), bytes_out=len(out), ssim=_luma_ssim(data, out))


@pytest.mark.parametrize("name", CAMERA or ["-"])
def test_jpeg_lossless(benchmark, name):
    _need_corpus()
    data = (CORPUS / name).read_bytes()
    benchmark.group = f"encoders jpeg-lossless {name}"
    out = benchmark.pedantic(
        lambda d: pyimgopt.optimize_bytes(d, pyimgopt.Settings(lossless=True))[0],
        args=(data,), rounds=1, iterations=1)
    same = np.array_equal(np.asarray(Image.open(io.BytesIO(data))), np.asarray(Image.open(io.BytesIO(out))))
    benchmark.extra_info.update(suite="encoders", kind="jpeg-lossless", impl="pyimgopt", image=name,
                                bytes_in=len(data), bytes_out=len(out), identical=bool(same))
