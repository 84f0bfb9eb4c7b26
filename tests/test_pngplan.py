"""The PNG compression plan (pipeline/pngplan.py): lossless on every variant, the filter it
picks, which plan each image size gets, and the colour of fully transparent pixels.

Oracle: libvips decodes input and output (16-bit samples kept as 16 bits), never
oxipng or pyimgopt; both are widened to 16-bit RGBA before comparing; the cases
against Pillow ``optimize=True`` are also decoded by Pillow. Cost: about 6 s in
all on the shared 2-core machine (no test over 1 s: the two large variants go
through libdeflate 10 once each).
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from matrix import png as mpng
from matrix.png import iccp_chunk
from pyimgopt import Settings, optimize_bytes
from pyimgopt.pipeline import boost, pngfile, pngplan

from matrix import icc as icclib

pyvips = pytest.importorskip("pyvips")
pytestmark = pytest.mark.skipif(not boost.available("oxipng"), reason="pyoxipng not installed")

RNG = np.random.default_rng(15)


def rgba16(data: bytes) -> np.ndarray:
    """Every pixel of the PNG ``data`` as 16-bit RGBA, decoded by libvips."""
    im = pyvips.Image.new_from_buffer(data, "")
    arr = im.numpy().reshape(im.height, im.width, im.bands)
    arr = arr.astype(np.uint32) * (257 if arr.dtype == np.uint8 else 1)
    if arr.shape[2] in (1, 2):  # gray (+ alpha)
        arr = np.concatenate([arr[..., :1]] * 3 + [arr[..., 1:]], axis=2)
    if arr.shape[2] == 3:
        arr = np.concatenate([arr, np.full(arr.shape[:2] + (1,), 65535, np.uint32)], axis=2)
    return arr


def same_visible(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal RGBA wherever either image is not fully transparent (and equal alpha everywhere)."""
    seen = (a[..., 3] > 0) | (b[..., 3] > 0)
    return np.array_equal(a[..., 3], b[..., 3]) and np.array_equal(a[seen], b[seen])


def _samples(h: int, w: int, ctype: int, depth: int) -> np.ndarray:
    """Smooth-plus-noise samples at ``depth`` bits (a gradient, so filters matter)."""
    top = (1 << depth) - 1
    c = mpng.CHANNELS[ctype]
    ramp = np.linspace(0, 1, w)[None, :, None] * np.linspace(0.3, 1, h)[:, None, None]
    noise = RNG.random((h, w, c)) * 0.08
    out = np.clip((ramp + noise) * top, 0, top).astype(np.uint16 if depth == 16 else np.uint8)
    if ctype in (4, 6):  # an alpha channel with opaque, soft and fully transparent parts
        out[..., -1] = top
        out[: h // 3, :, -1] = 0
        out[h // 3 : h // 2, :, -1] = top // 2
    return out


def _variants(h: int, w: int):
    for ctype, depths in mpng.LEGAL_DEPTHS.items():
        for depth in depths:
            if ctype == 3:
                n = 1 << depth
                pal = RNG.integers(0, 256, (n, 3), dtype=np.uint8)
                idx = (np.arange(h * w).reshape(h, w) * 7 // 5 % n).astype(np.uint8)
                trns = bytes(RNG.integers(0, 256, n // 2 or 1, dtype=np.uint8))
                yield f"P{depth}-tRNS", mpng.write_png(idx, 3, depth, palette=pal, trns=trns)
                yield f"P{depth}", mpng.write_png(idx, 3, depth, palette=pal)
                continue
            samples = _samples(h, w, ctype, depth)
            yield f"ct{ctype}-{depth}", mpng.write_png(samples, ctype, depth)
            if ctype in (0, 2):  # a tRNS colour key that some pixels use
                key = samples[0, 0]
                payload = b"".join(int(v).to_bytes(2, "big") for v in np.atleast_1d(key))
                yield f"ct{ctype}-{depth}-tRNS", mpng.write_png(samples, ctype, depth, trns=payload)


SMALL = list(_variants(17, 24))
#: Past SMALL_RAW: the sampled-filter path (8-bit RGB) and oxipng's evaluation (16-bit).
def _plain_png(samples: np.ndarray, color_type: int, depth: int) -> bytes:
    """An 8- or 16-bit PNG with every row unfiltered (numpy-fast, for the large inputs:
    ``matrix.png.write_png`` filters byte by byte in Python)."""
    h, w = samples.shape[:2]
    rows = samples.astype(">u2" if depth == 16 else np.uint8).reshape(h, -1).view(np.uint8)
    scan = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1).tobytes()
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 0)
    return b"".join([b"\x89PNG\r\n\x1a\n", mpng.chunk(b"IHDR", ihdr),
                     mpng.chunk(b"IDAT", zlib.compress(scan, 1)), mpng.chunk(b"IEND", b"")])


LARGE = [("ct2-8-large", _plain_png(_samples(600, 600, 2, 8), 2, 8)),
         ("ct2-16-large", _plain_png(_samples(300, 600, 2, 16), 2, 16))]


@pytest.mark.parametrize("name, data", SMALL + LARGE, ids=[n for n, _ in SMALL + LARGE])
def test_pngplan_every_variant_is_exact(name, data):
    ref = rgba16(data)
    exact = pngplan.optimise(data, 6)
    assert exact is not None
    assert np.array_equal(rgba16(exact), ref), name
    if ref[..., 3].min() == 0:  # oxipng's optimize_alpha: only the hidden colours may change
        assert same_visible(rgba16(pngplan.optimise(data, 6, optimize_alpha=True)), ref), name
    if name.startswith("ct2-16"):  # 16-bit samples really using 16 bits stay 16-bit
        assert exact[24] == 16


@pytest.mark.parametrize("name, data", [v for v in SMALL if v[0] in ("ct6-16", "P2-tRNS", "ct0-4-tRNS")],
                         ids=["ct6-16", "P2-tRNS", "ct0-4-tRNS"])
def test_pngplan_effort_9_is_exact(name, data):
    assert np.array_equal(rgba16(pngplan.optimise(data, 9)), rgba16(data))


def _photo(h: int, w: int, c: int) -> np.ndarray:
    """Photo-like 8-bit samples: smooth shading, soft edges and sensor-like noise."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    base = 120 + 60 * np.sin(x / 23.0) * np.cos(y / 31.0) + 40 * np.tanh((x - y) / 9.0)
    chans = [base + 25 * np.sin((x + 7 * k) / (11.0 + 4 * k)) + RNG.normal(0, 3, (h, w)) for k in range(c)]
    return np.clip(np.stack(chans, axis=-1), 0, 255).astype(np.uint8)


def _pillow_optimize(data: bytes) -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(data)).save(buf, "PNG", optimize=True)
    return buf.getvalue()


def _cases():
    """The kinds of PNG the plan must not lose on, each stored with zlib 9 by a plain writer."""
    rgba = np.dstack([_photo(150, 200, 3), np.full((150, 200), 255, np.uint8)])
    yield "opaque-RGBA", mpng.write_png(rgba, 6, 8)
    idx = (_photo(150, 200, 1)[..., 0] // 8).astype(np.uint8)  # 32 colours, smooth
    pal = np.stack([np.arange(32) * 8, 255 - np.arange(32) * 8, np.full(32, 90)], axis=1)
    yield "palette-tRNS", mpng.write_png(idx, 3, 8, palette=pal, trns=bytes(range(0, 256, 32)))
    gray = _photo(150, 200, 1)[..., 0].astype(np.uint16) * 257 + RNG.integers(0, 256, (150, 200))
    yield "gray-16", mpng.write_png(gray.astype(np.uint16), 0, 16)
    icc = icclib.profile("display-p3")
    yield "ICC-P3", mpng.write_png(_photo(150, 200, 3), 2, 8, before_plte=[iccp_chunk("Display P3", icc)])


CASES = list(_cases())


@pytest.mark.parametrize("name, data", CASES, ids=[n for n, _ in CASES])
def test_pngplan_default_beats_input_and_pillow_and_keeps_every_pixel(name, data):
    out, res = optimize_bytes(data)
    assert res.status == "optimized"
    pillow = _pillow_optimize(data)
    assert len(out) < len(data)
    assert len(out) <= len(pillow), (len(out), len(pillow))
    # Pillow's decode (16-bit gray as I;16) sees the same pixels
    a, b = Image.open(io.BytesIO(data)), Image.open(io.BytesIO(out))
    assert a.size == b.size
    if name == "gray-16":
        assert a.mode == b.mode == "I;16" and np.array_equal(np.asarray(a), np.asarray(b))
    else:
        assert np.array_equal(np.asarray(a.convert("RGBA")), np.asarray(b.convert("RGBA")))
    assert np.array_equal(rgba16(out), rgba16(data))  # and libvips' (16-bit kept as 16-bit)
    hdr = pngfile.png_header(out)
    if name == "opaque-RGBA":
        assert hdr.color_type == 2  # the opaque alpha channel is gone
    if name == "gray-16":
        assert (hdr.color_type, hdr.depth) == (0, 16)
    if name == "ICC-P3":
        assert pngfile.png_icc(out) == pngfile.png_icc(data) == icclib.profile("display-p3")


def _rgb_rows(h: int, w: int, along: str) -> np.ndarray:
    """RGB that one filter turns into repeats and the others into noise: each row
    (``along="x"``) is ``a + x * b`` with random ``a``, ``b`` per row and channel
    (Sub leaves ``b``, a constant), or each column ``a + y * b`` (Up leaves ``b``,
    the same residual row after row)."""
    n, m = (h, w) if along == "x" else (w, h)
    a, b = (RNG.integers(0, 256, (n, 1, 3)) for _ in range(2))
    lines = (a + np.arange(m)[None, :, None] * b) % 256  # lines[i, j]: line i, position j
    arr = lines if along == "x" else lines.transpose(1, 0, 2)
    return np.ascontiguousarray(arr.astype(np.uint8))


def _png(arr: np.ndarray, **params) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG", compress_level=0, **params)
    return buf.getvalue()


def test_pngplan_choose_filter_finds_the_filter_that_zeroes_the_rows():
    assert pngplan.choose_filter(_png(_rgb_rows(600, 640, "x"))) == "Sub"
    assert pngplan.choose_filter(_png(_rgb_rows(600, 640, "y"))) == "Up"


def test_pngplan_choose_filter_leaves_palette_sized_and_16_bit_images_to_oxipng():
    few = RNG.integers(0, 200, (300, 300), dtype=np.uint8)
    assert pngplan.choose_filter(_png(np.dstack([few, few, few // 2]))) is None  # <= 256 colours
    deep = _plain_png(_samples(300, 300, 2, 16), 2, 16)
    assert pngplan.choose_filter(deep) is None
    assert pngplan.choose_filter(b"not a png") is None


def test_pngplan_plan_by_size_and_effort():
    small = _png(_rgb_rows(64, 64, "x"))
    assert pngplan.plan(small, 6) == pngplan.Plan(pngplan._OXIPNG_SET, 12, True,
                                                  "oxipng's filter evaluation, libdeflate 12")
    assert pngplan.plan(small, 8).filters == pngplan.plan(small, 9).filters == pngplan._ALL
    mid = _png(_rgb_rows(300, 300, "x"))  # 270 kB of samples: past TINY_RAW
    assert (pngplan.plan(mid, 6).level, pngplan.plan(mid, 7).level) == (11, 12)
    big = _png(_rgb_rows(600, 640, "x"))  # 1.15 MB of samples: past SMALL_RAW
    assert len(big) > pngplan.SMALL_RAW
    p6, p7, p8, p9 = (pngplan.plan(big, e) for e in (6, 7, 8, 9))
    assert (p6.filters, p6.level, p6.fast) == (("Sub",), 10, False)
    assert (p7.level, p8.level) == (11, 12)
    assert p9.filters == pngplan._ALL and p9.level == 12
    gray = _png(RNG.integers(0, 256, (1100, 1000), dtype=np.uint8))  # <= 256 values: oxipng evaluates
    assert pngplan.plan(gray, 6).fast and pngplan.plan(gray, 6).level == 10
    assert pngplan.plan(big, 5).filters == ()  # efforts 1-5: the fixed presets


def test_pngplan_transparent_colour_kept_unless_asked():
    arr = np.zeros((96, 128, 4), np.uint8)
    arr[..., :3] = RNG.integers(0, 256, (96, 128, 3), dtype=np.uint8)  # noise under alpha 0
    arr[32:64, 32:96, 3] = 255
    arr[32:64, 32:96, :3] = 90
    data = _png(arr)
    for out in (optimize_bytes(data)[0], optimize_bytes(data, Settings(effort=9))[0]):
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(out)).convert("RGBA")), arr)
    hidden = pngplan.optimise(data, 6, optimize_alpha=True)
    got = np.asarray(Image.open(io.BytesIO(hidden)).convert("RGBA"))
    assert same_visible(got.astype(np.uint32), arr.astype(np.uint32))
    assert not np.array_equal(got, arr)  # the hidden noise went ...
    assert len(hidden) < 0.5 * len(pngplan.optimise(data, 6))  # ... and with it most of the bytes


def _smooth_rgb(h: int, w: int) -> bytes:
    """Diagonal ramps with a little noise: the exhaustive search's fast filter evaluation
    picks a worse filter for it than the lower efforts' plans (issue 15 review)."""
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * (k + 1) + y * (3 - k)) for k in range(3)], -1)
    return _png(((base + rng.integers(0, 6, (h, w, 3))) % 256).astype(np.uint8))


def test_pngplan_higher_effort_is_never_larger():
    """Effort is monotonic in bytes: 9 <= 8 <= 6 on a small image (exhaustive at 8 and 9)
    and 9 <= 8 on a large one (sampled filter at 8). The fast-evaluated exhaustive search
    alone lost 2.4 % to effort 6 on the small one and 3.5 % to effort 8 on the large one.
    Every result is exact. ~1.5 s."""
    small = _smooth_rgb(130, 120)
    size = {e: pngplan.optimise(small, e) for e in (6, 8, 9)}
    assert len(size[9]) <= len(size[8]) <= len(size[6])
    assert np.array_equal(rgba16(size[9]), rgba16(small))
    big = _smooth_rgb(600, 600)  # 1.08 MB of raw samples: the large-image plan
    e8, e9 = pngplan.optimise(big, 8), pngplan.optimise(big, 9)
    assert len(e9) <= len(e8)
    assert np.array_equal(rgba16(e9), rgba16(big))


def test_pngplan_16_bit_multiples_of_257_become_8_bit_exactly():
    """The README's PNG row: a 16-bit PNG whose every sample is a multiple of 257 is the
    only bit-depth change, written as 8-bit with the same values (v * 257 -> v); any
    other 16-bit PNG stays 16-bit. (IHDR read from the bytes; pixels decoded by libvips
    and compared at 16 bits. A few ms.)"""
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (20, 20, 3)).astype(np.uint16)
    x257 = _plain_png(arr * 257, 2, 16)
    out, r = optimize_bytes(x257, Settings())
    assert r.status == "optimized" and out[24] == 8  # IHDR bit depth
    assert np.array_equal(rgba16(out), rgba16(x257))
    other = _plain_png(arr * 257 + 1, 2, 16)
    out2, _ = optimize_bytes(other, Settings())
    assert out2[24] == 16 and np.array_equal(rgba16(out2), rgba16(other))
