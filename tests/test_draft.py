"""JPEG shrink-on-load (DCT-scaled decode) against an independent full decode.

The pipeline decodes a JPEG at 1/2, 1/4 or 1/8 scale when it downscales
(Pillow's ``draft``), keeping at least ``DCT_SHRINK_MARGIN`` times the target,
and maps the source's exact extent (W / s, not the ceil(W / s) pixels the
decoder returns) onto the output. The oracle here never uses that path: it
decodes the whole JPEG with Pillow, turns it upright with ``exif_transpose``
and resizes it with Pillow's LANCZOS; the pipeline writes PNG so that no lossy
encoder sits between the two. Images are built here: odd sizes (so the last
DCT block is partial), 4:2:0 / 4:4:4 RGB, gray and CMYK, EXIF orientations
1, 3, 6 and 8 (and 2, 4, 5, 7 for 4:2:0). About 5 s for the file per backend on the shared 2-core machine.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image, ImageOps
from skimage.metrics import structural_similarity

from pyimgopt import Settings, optimize_bytes
from pyimgopt.pipeline import geometry
from pyimgopt.pipeline.decode import decode
from pyimgopt.pipeline.probe import probe

W, H = 1001, 751  # odd: the last 8x8 block of every DCT scale is partial
BOX = 120  # fit inside 120x120: 1/4 scale keeps 250 px (>= 1.85 x 120); Pillow's own draft takes 1/8
#: Luma SSIM floor against the full-decode reference (README: "luma SSIM >= 0.99"). Measured
#: 0.9964-0.9967 here; before the margin and the exact extent (Pillow's own 1/8 scale, the
#: ceil(W / 8) pixels stretched over the output) 0.705 in every case.
FLOOR = 0.99


def _texture(seed: int = 7) -> Image.Image:
    """Detail at every scale the output keeps: noise upsampled 3x (bicubic), plus a hard edge."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (H // 3 + 1, W // 3 + 1, 3), dtype=np.uint8)
    arr = np.asarray(Image.fromarray(small).resize((W, H), Image.Resampling.BICUBIC)).copy()
    arr[:, W // 2 : W // 2 + 40] = (250, 20, 20)
    return Image.fromarray(arr)


def _jpeg(kind: str, orientation: int) -> bytes:
    im = _texture()
    params: dict = {"quality": 95}
    if kind == "rgb420":
        params["subsampling"] = 2
    elif kind == "rgb444":
        params["subsampling"] = 0
    elif kind == "gray":
        im = im.convert("L")
    elif kind == "cmyk":
        im = im.convert("CMYK")
    if orientation != 1:
        exif = Image.Exif()
        exif[0x0112] = orientation
        params["exif"] = exif.tobytes()
    buf = io.BytesIO()
    im.save(buf, "JPEG", **params)
    return buf.getvalue()


def _luma(im: Image.Image) -> np.ndarray:
    return np.asarray(im.convert("RGB"), np.float64) @ np.array([0.299, 0.587, 0.114])


CASES = [(kind, o) for kind in ("rgb420", "rgb444", "gray", "cmyk") for o in (1, 3, 6, 8)]
CASES += [("rgb420", o) for o in (2, 4, 5, 7)]  # the flips, transpose and transverse


@pytest.mark.parametrize(("kind", "orientation"), CASES)
def test_shrink_on_load_matches_a_full_decode_resized(kind: str, orientation: int) -> None:
    data = _jpeg(kind, orientation)
    out, r = optimize_bytes(data, Settings(max_width=BOX, max_height=BOX, format="png"))
    with Image.open(io.BytesIO(data)) as src:
        upright = ImageOps.exif_transpose(src.convert("RGB") if kind == "cmyk" else src)
    uw, uh = upright.size
    scale = min(BOX / uw, BOX / uh)
    size = (max(1, math.floor(uw * scale + 0.5)), max(1, math.floor(uh * scale + 0.5)))
    got = Image.open(io.BytesIO(out))
    assert got.size == size == (r.width, r.height)
    ref = upright.resize(size, Image.Resampling.LANCZOS)
    score = structural_similarity(_luma(ref), _luma(got), data_range=255)
    assert score >= FLOOR, (kind, orientation, score)


@pytest.mark.parametrize("orientation", [1, 6])
def test_decode_shrinks_in_the_dct_and_keeps_the_exact_extent(orientation: int) -> None:
    data = _jpeg("rgb420", orientation)
    pr = probe(data, Settings(), None)
    dec = decode(pr, all_frames=False, draft_size=(BOX, round(BOX * H / W)), keep_palette=False,
                 keep_exif=False)
    # 1/4 scale (1/8 would keep 125 px, under 1.85 x 120): ceil(W / 4) x ceil(H / 4) pixels
    # for W / 4 x H / 4 of the source; the stored last column is partial, and turned 90
    # degrees clockwise (orientation 6) it is the last row, the stored last row the first column
    size, box = (251, 188), (0, 0, W / 4, H / 4)
    if orientation == 6:
        size, box = (188, 251), (188 - H / 4, 0, 188, W / 4)
    assert dec.size == size and dec.box == box


def test_dct_scale_keeps_the_margin() -> None:
    assert geometry.dct_scale(2725, 2225, (720, 588)) == 2  # the sharp benchmark task
    assert geometry.dct_scale(W, H, (120, 90)) == 4
    assert geometry.dct_scale(W, H, (W, H)) == 1
    assert geometry.dct_scale(4000, 3000, (200, 150)) == 8
    for tw in range(1, 600, 7):
        th = max(1, round(tw * H / W))
        s = geometry.dct_scale(W, H, (tw, th))
        assert s == 1 or W / s >= geometry.DCT_SHRINK_MARGIN * tw and H / s >= geometry.DCT_SHRINK_MARGIN * th
        if s < 8:  # and the next scale would not keep it
            assert W / (2 * s) < geometry.DCT_SHRINK_MARGIN * tw or H / (2 * s) < (
                geometry.DCT_SHRINK_MARGIN * th)
