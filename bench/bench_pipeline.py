"""The sharp benchmark task, in one process: 2725x2225 JPEG bytes -> fit
inside 720x588 with lanczos3 -> JPEG q80 bytes.

Contenders: ``pyimgopt.optimize_bytes`` at the default effort (mozjpeg
table 8, no trellis: trellis is effort 8) and at ``effort=4`` (libjpeg-turbo through Pillow); Pillow plain (open, ``resize``
LANCZOS, save q80); Pillow with ``draft`` (JPEG DCT-domain downscale on
decode, then resize); pyvips ``thumbnail_buffer`` + ``write_to_buffer``
with ``VIPS_CONCURRENCY=1`` (set in conftest.py before pyvips is imported)
and its operation cache off. Encoder settings differ as each library's
defaults do: pyimgopt writes a progressive JPEG with optimised Huffman
tables (table 8, not trellis-quantised at the default effort), Pillow and pyvips a baseline one; ``bytes_out`` is recorded so the
size side of that trade is visible, and ``ssim_vs_full``: the output's luma
SSIM against the source decoded at full size and resized with Pillow's
LANCZOS, the quality side (a DCT shrink-on-load that goes too far, or maps
the source's extent wrongly, shows there).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from _common import SOURCE_MPIX, run
from PIL import Image

import pyimgopt
from pyimgopt import _kernels

WIDTH, HEIGHT, QUALITY = 720, 588, 80
GROUP = "sharp task: JPEG 2725x2225 -> 720x588 lanczos3 -> JPEG q80"
ROUNDS = 15


def pyimgopt_task(data: bytes) -> bytes:
    settings = pyimgopt.Settings(max_width=WIDTH, max_height=HEIGHT, format="jpeg", quality=QUALITY)
    out, _result = pyimgopt.optimize_bytes(data, settings)
    return out


def pyimgopt_fast_task(data: bytes) -> bytes:
    """effort 4: libjpeg-turbo through Pillow (no trellis), the speed-first setting."""
    settings = pyimgopt.Settings(max_width=WIDTH, max_height=HEIGHT, format="jpeg", quality=QUALITY,
                                 effort=4)
    out, _result = pyimgopt.optimize_bytes(data, settings)
    return out


def pillow_task(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as im:
        small = im.resize((WIDTH, HEIGHT), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=QUALITY)
    return buf.getvalue()


def pillow_draft_task(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as im:
        im.draft("RGB", (WIDTH, HEIGHT))
        small = im.resize((WIDTH, HEIGHT), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=QUALITY)
    return buf.getvalue()


IMPLS = ["pyimgopt", "pyimgopt-effort4", "pillow", "pillow-draft", "pyvips"]
_REFERENCE: dict[int, np.ndarray] = {}


def full_decode_reference(data: bytes) -> np.ndarray:
    """The source decoded at full size (no draft) and resized with Pillow's LANCZOS."""
    key = id(data)
    if key not in _REFERENCE:
        with Image.open(io.BytesIO(data)) as im:
            ref = im.convert("RGB").resize((WIDTH, HEIGHT), Image.Resampling.LANCZOS)
        _REFERENCE[key] = np.asarray(ref)
    return _REFERENCE[key]


@pytest.mark.parametrize("impl", IMPLS)
def test_sharp_task(benchmark, request, source, impl):
    data = source.jpeg
    if impl == "pyvips":
        vips = request.getfixturevalue("pyvips")

        def fn(data: bytes) -> bytes:
            thumb = vips.Image.thumbnail_buffer(data, WIDTH, height=HEIGHT)
            return thumb.write_to_buffer(f".jpg[Q={QUALITY}]")

    else:
        fn = {"pyimgopt": pyimgopt_task, "pyimgopt-effort4": pyimgopt_fast_task,
              "pillow": pillow_task, "pillow-draft": pillow_draft_task}[impl]
    benchmark.group = GROUP
    out = run(
        benchmark,
        fn,
        data,
        rounds=ROUNDS,
        mpix=SOURCE_MPIX,
        suite="pipeline",
        impl=impl,
        bytes_in=len(data),
        source=source.origin,
    )
    benchmark.extra_info["bytes_out"] = len(out)
    with Image.open(io.BytesIO(out)) as im:
        assert (im.format, im.size) == ("JPEG", (WIDTH, HEIGHT)), (im.format, im.size)
        got = np.asarray(im.convert("RGB"))
    benchmark.extra_info["ssim_vs_full"] = round(_kernels.ssim_luma(full_decode_reference(data), got), 5)
