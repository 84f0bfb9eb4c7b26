"""Regression tests for the pixel bugs the matrix found (issues 12 and 13), one per bug.

Each builds its input here and judges the output with the libvips oracle of
``tests/matrix`` (never with pyimgopt's own decoder).
"""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image

from pyimgopt import Settings, optimize_bytes
from pyimgopt.errors import UnsupportedFormatError
from pyimgopt.pipeline.colour import icc_info
from pyimgopt.pipeline.encode import has_avif
from pyimgopt.pipeline.probe import webp_is_lossless

from matrix import icc as icclib
from matrix import oracle
from matrix.png import iccp_chunk, write_png


def _palette_trns_png() -> tuple[bytes, np.ndarray]:
    idx = np.zeros((16, 24), np.uint8)
    idx[:, 8:] = 1
    idx[4:12, 10:20] = 2
    pal = np.array([[250, 250, 250], [20, 90, 200], [200, 30, 30]], np.uint8)
    return write_png(idx, 3, 8, palette=pal, trns=b"\x00\x80"), idx


@pytest.mark.parametrize("settings", [Settings(), Settings(format="png"), Settings(effort=9)])
def test_pixels_palette_trns_survives_png(settings):
    data, idx = _palette_trns_png()
    out, _ = optimize_bytes(data, settings)
    alpha = oracle.view(out).rgba[..., 3]
    assert np.array_equal(alpha, np.array([0, 128, 255])[idx])


@pytest.mark.parametrize("fmt", ["keep", "png"])
def test_pixels_gif_transparency_kept(fmt):
    idx = np.full((12, 20), 3, np.uint8)
    idx[:, :10] = 7
    im = Image.fromarray(idx, "P")
    im.putpalette(bytes(range(48)) * 16)
    buf = io.BytesIO()
    im.save(buf, "GIF", transparency=7)
    out, _ = optimize_bytes(buf.getvalue(), Settings(format=fmt))
    alpha = oracle.view(out).rgba[..., 3]
    assert (alpha[:, :10] == 0).all() and (alpha[:, 10:] == 255).all()


def test_pixels_low_bit_gray_key_becomes_alpha():
    g = np.tile(np.arange(4, dtype=np.uint8), (6, 3))  # 2-bit gray, key 3 = white
    data = write_png(g, 0, 2, trns=struct.pack(">H", 3))
    out, _ = optimize_bytes(data, Settings(format="webp", lossless=True))
    alpha = oracle.view(out).rgba[..., 3]
    assert np.array_equal(alpha, np.where(g == 3, 0, 255))


def test_pixels_16bit_rgb_colour_key_kept():
    rgb = np.zeros((8, 8, 3), np.uint16)
    rgb[..., 0] = 0x1234
    rgb[:4] = (0x8001, 0x0002, 0xFFFF)
    data = write_png(rgb, 2, 16, trns=struct.pack(">3H", 0x8001, 0x0002, 0xFFFF))
    for s in (Settings(), Settings(format="webp")):
        out, _ = optimize_bytes(data, s)
        alpha = oracle.view(out).rgba[..., 3]
        assert (alpha[:4] < 10).all() and (alpha[4:] == 255).all(), s


def test_pixels_nonsrgb_iccp_kept_with_original_values_on_png():
    rgb = np.zeros((24, 32, 3), np.uint8)
    rgb[:, :16] = (200, 50, 30)
    rgb[:, 16:] = (30, 180, 90)
    icc = icclib.profile("display-p3")
    data = write_png(rgb, 2, 8, before_plte=[iccp_chunk("P3", icc)],
                     after_plte=[(b"tEXt", b"Comment\0x" * 200)])
    out, res = optimize_bytes(data, Settings())
    v = oracle.view(out)
    assert v.icc is not None and not icc_info(v.icc)[1]
    assert np.array_equal(v.raw[..., :3], rgb)
    assert b"tEXt" not in out


def test_pixels_palette_with_prophoto_profile_is_colour_managed():
    idx = np.zeros((16, 16), np.uint8)
    pal = np.array([[240, 220, 100]], np.uint8)
    data = write_png(idx, 3, 8, palette=pal, before_plte=[iccp_chunk("pp", icclib.profile("prophoto"))])
    want = oracle.view(data).rgba[0, 0, :3]
    for fmt in ("jpeg", "webp"):
        out, _ = optimize_bytes(data, Settings(format=fmt, quality=95))
        got = oracle.view(out).rgba[..., :3].reshape(-1, 3).mean(axis=0)
        assert np.abs(got - want).max() <= 3, (fmt, got, want)


def test_pixels_gray_profile_is_colour_managed():
    g = np.full((16, 16), 60, np.uint8)
    buf = io.BytesIO()
    Image.fromarray(g).save(buf, "JPEG", quality=98, icc_profile=icclib.profile("gray-g18"))
    want = oracle.view(buf.getvalue()).rgba[0, 0, :3]
    out, _ = optimize_bytes(buf.getvalue(), Settings(format="webp", lossless=True))
    got = oracle.view(out).rgba[..., :3].reshape(-1, 3).mean(axis=0)
    assert np.abs(got - want).max() <= 3, (got, want)


@pytest.mark.parametrize("key,srgb", [("linear-srgb", False), ("elle-g10", False),
                                      ("display-p3", False), ("srgb-unnamed", True),
                                      ("srgb-lcms", True), ("gray-g18", False), ("gray-srgb", True)])
def test_pixels_srgb_decided_by_profile_contents(key, srgb):
    assert icc_info(icclib.profile(key))[1] is srgb


def test_pixels_linear_srgb_profile_converted():
    rgb = np.full((16, 16, 3), 64, np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=98, icc_profile=icclib.profile("linear-srgb"))
    want = oracle.view(buf.getvalue()).rgba[0, 0, :3]  # ~137: linear 64 is a mid-tone
    out, _ = optimize_bytes(buf.getvalue(), Settings(format="webp", quality=95))
    got = oracle.view(out).rgba[..., :3].reshape(-1, 3).mean(axis=0)
    assert np.abs(got - want).max() <= 3, (got, want)


def test_pixels_16bit_png_keeps_16_bits_and_lossless_webp_refuses():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 65536, (9, 11, 3)).astype(np.uint16)
    data = write_png(rgb, 2, 16)
    for s in (Settings(), Settings(format="png", lossless=True)):
        out, _ = optimize_bytes(data, s)
        v = oracle.view(out)
        assert v.bits == 16 and np.array_equal(v.raw, rgb)
    with pytest.raises(UnsupportedFormatError, match="16-bit"):
        optimize_bytes(data, Settings(format="webp", lossless=True))


def test_pixels_16bit_to_8bit_rounds():
    import pyvips
    rgb = np.full((4, 4, 3), 0x12FF, np.uint16)  # 18.92 on the 8-bit scale: 19, not 18
    data = pyvips.Image.new_from_array(rgb).cast("ushort").copy(interpretation="rgb16") \
        .tiffsave_buffer(compression="deflate")
    out, _ = optimize_bytes(data, Settings(format="png"))
    assert (oracle.view(out).rgba[..., :3] == 19).all()


def test_pixels_lossless_webp_detected_behind_a_big_icc_chunk():
    rgb = np.random.default_rng(1).integers(0, 256, (20, 20, 3)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "WEBP", lossless=True, icc_profile=icclib.profile("srgb-big"))
    data = buf.getvalue()
    assert data.find(b"VP8L") > 4096 and webp_is_lossless(data)
    out, _ = optimize_bytes(data, Settings(allow_larger=True))
    assert np.array_equal(oracle.view(out).rgba[..., :3], rgb)


def test_pixels_bmp_alpha_kept():
    """A BMP with alpha kept as BMP (a 32-bit BITMAPV4HEADER whose alpha mask counts), read
    back by a decoder that is not pyimgopt's writer."""
    from matrix.inputs import bmp_cases

    case = next(c for c in bmp_cases() if c.id == "bmp-32-alpha")
    out, r = optimize_bytes(case.data, Settings(allow_larger=True))
    assert r.format_out == "bmp" and out[:2] == b"BM"
    got = oracle.view(out)  # Pillow's BMP reader: this libvips has no BMP loader
    assert np.array_equal(got.rgba, case.truth)
    assert (case.truth[..., 3] < 255).any() and (case.truth[..., 3] > 0).any()


def test_pixels_resized_gif_transparency_is_thresholded_at_half():
    """GIF holds 1-bit transparency: a resized edge pixel is opaque only from alpha 128 (not
    from alpha 1, which dilated the shape by a pixel all round)."""
    w, h = 120, 80
    yy, xx = np.mgrid[0:h, 0:w]
    idx = np.full((h, w), 1, np.uint8)  # 1 = transparent
    idx[(xx - 60) ** 2 + (yy - 40) ** 2 < 30 ** 2] = 2
    idx[(xx - 60) ** 2 + (yy - 40) ** 2 < 12 ** 2] = 3
    im = Image.fromarray(idx, "P")
    im.putpalette([0, 0, 0, 0, 255, 0, 220, 20, 20, 20, 20, 220] + [0] * 744)
    buf = io.BytesIO()
    im.save(buf, "GIF", transparency=1)
    ref = oracle.view(buf.getvalue()).rgba
    for width in (40, 30):
        out, r = optimize_bytes(buf.getvalue(), Settings(max_width=width))
        got = oracle.view(out).rgba
        want = oracle.resize_ref(ref, (got.shape[1], got.shape[0]))[..., 3] >= 128
        assert ((got[..., 3] > 0) != want).mean() <= 0.01, (width, int((got[..., 3] > 0).sum()),
                                                           int(want.sum()))


def test_pixels_malformed_palette_png_is_refused_on_every_route():
    """Indices past the end of PLTE: an error in the PNG specification, shown differently by
    different decoders (black, another entry); no output could be exact, so it is refused."""
    from pyimgopt.errors import DecodeError

    idx = np.zeros((8, 16), np.uint8)
    idx[:, 8:] = 5
    data = write_png(idx, 3, 8, palette=np.array([[200, 0, 0], [0, 200, 0]], np.uint8))
    for settings in (Settings(), Settings(format="png", effort=0), Settings(format="webp"),
                     Settings(max_width=8), Settings(format="auto")):
        with pytest.raises(DecodeError, match="PLTE"):
            optimize_bytes(data, settings)


@pytest.mark.parametrize("fmt", ["webp", "png"])
def test_pixels_unreadable_profile_survives_the_metadata_strip(fmt):
    """A profile LittleCMS cannot read is kept by the strip (its colours are unknown, so
    dropping it could change them), while the GPS beside it goes."""
    from conftest import exif_bytes

    noise = np.random.default_rng(3).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    junk = b"\x00\x00\x02\x00not-a-real-profile" + bytes(300)
    buf = io.BytesIO()
    params = {"quality": 5} if fmt == "webp" else {}  # a q80 re-encode is larger: the strip wins
    Image.fromarray(noise).save(buf, fmt.upper(), icc_profile=junk, exif=exif_bytes(1, gps=True),
                                **params)
    out, r = optimize_bytes(buf.getvalue())
    assert r.status == "optimized", r
    with Image.open(io.BytesIO(out)) as im:
        assert im.info.get("icc_profile") == junk, r.notes
        assert not im.getexif().get_ifd(0x8825)


def test_pixels_skipped_result_claims_no_strip():
    """A file left as it is carries no note about a strip that was not written."""
    im = Image.fromarray(np.random.default_rng(4).integers(0, 4, (6, 6), dtype=np.uint8) * 60)
    buf = io.BytesIO()
    im.convert("P").save(buf, "GIF")
    out, r = optimize_bytes(buf.getvalue())
    assert r.status == "skipped" and out == buf.getvalue()
    assert "lossless metadata strip (no re-encode)" not in r.notes, r.notes


def test_pixels_oracle_floors_catch_gross_errors():
    """A lost alpha, a mirror or a 180 rotation scores far under the matrix's floors."""
    from test_matrix import ALPHA_FLOOR, SSIM_FLOOR

    from matrix.inputs import alpha_pattern, content, to_rgba
    ref = to_rgba(content(48, 40), alpha_pattern(48, 40, "partial"))
    opaque = ref.copy()
    opaque[..., 3] = 255
    black = (0, 0, 0)
    assert oracle.ssim(oracle.composite(opaque, black), oracle.composite(ref, black)) < SSIM_FLOOR
    assert oracle.ssim(opaque[..., 3], ref[..., 3]) < ALPHA_FLOOR
    white = (255, 255, 255)
    for bad in (ref[:, ::-1], ref[::-1, ::-1]):
        assert oracle.ssim(oracle.composite(bad, white), oracle.composite(ref, white)) < SSIM_FLOOR


def test_pixels_avif_with_nclx_display_p3_is_colour_managed():
    """An AVIF whose colour is Display P3 by nclx code points, with no ICC profile (as phones
    write them): converted to sRGB as a colour-managed browser shows it. (libvips ignores
    nclx, so the expectation is the P3 values converted by LittleCMS through the test's own
    hand-built Display P3 profile.)"""
    from PIL import ImageCms

    from matrix.inputs import patches

    pu8 = np.round(patches(96, 72) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pu8).save(buf, "AVIF", quality=95, subsampling="4:4:4")
    data = bytearray(buf.getvalue())
    at = data.find(b"colrnclx")
    assert at > 0 and data[at + 8:at + 10] == b"\x00\x01"  # BT.709 as written
    data[at + 8:at + 10] = b"\x00\x0c"  # colour primaries 12: Display P3 (SMPTE EG 432-1)
    data = bytes(data)
    with Image.open(io.BytesIO(data)) as im:
        stored = im.convert("RGB")
    p3 = ImageCms.ImageCmsProfile(io.BytesIO(icclib.profile("display-p3")))
    want = np.asarray(ImageCms.profileToProfile(stored, p3, ImageCms.createProfile("sRGB"),
                                                outputMode="RGB"), float)
    for fmt in ("png", "webp", "jpeg"):
        out, r = optimize_bytes(data, Settings(format=fmt, quality=95))
        got = oracle.view(out).rgba[..., :3]
        err = np.abs(oracle.patch_means(got) - oracle.patch_means(want)).mean(axis=1)
        assert err.max() <= 3.0, (fmt, err.round(1).tolist(), r.notes)


def _boxes(d: bytes, start: int, end: int):
    pos = start
    while pos + 8 <= end:
        size = struct.unpack(">I", d[pos:pos + 4])[0]
        yield bytes(d[pos + 4:pos + 8]), pos, pos + size
        pos += size


def _with_prem_reference(avif: bytes) -> bytes:
    """Byte surgery: an ``iref`` ``prem`` box (colour item 1 -> alpha item 2) says the colour
    is premultiplied by the alpha; ``meta`` grows by 14 bytes, so ``iloc`` offsets move."""
    d = bytearray(avif)
    top = {t: (s, e) for t, s, e in _boxes(d, 0, len(d))}
    ms, me = top[b"meta"]
    inner = {t: (s, e) for t, s, e in _boxes(d, ms + 12, me)}
    p = inner[b"iloc"][0] + 8
    version = d[p]
    off_size, len_size, base_size, idx_size = d[p + 4] >> 4, d[p + 4] & 15, d[p + 5] >> 4, d[p + 5] & 15
    count, p = struct.unpack(">H", d[p + 6:p + 8])[0], p + 8
    for _ in range(count):
        p += 4 + (2 if version in (1, 2) else 0)
        base = int.from_bytes(d[p:p + base_size], "big")
        if base:
            d[p:p + base_size] = (base + 14).to_bytes(base_size, "big")
        extents, p = struct.unpack(">H", d[p + base_size:p + base_size + 2])[0], p + base_size + 2
        for _ in range(extents):
            p += idx_size if version in (1, 2) else 0
            if not base:
                d[p:p + off_size] = (int.from_bytes(d[p:p + off_size], "big") + 14).to_bytes(off_size, "big")
            p += off_size + len_size
    irs, ire = inner[b"iref"]
    d[ire:ire] = struct.pack(">I4sHHH", 14, b"prem", 1, 1, 2)
    d[irs:irs + 4] = (ire - irs + 14).to_bytes(4, "big")
    d[ms:ms + 4] = (me - ms + 14).to_bytes(4, "big")
    return bytes(d)


def test_pixels_avif_premultiplied_alpha_is_shown_straight():
    """An AVIF whose colour is premultiplied (a ``prem`` reference): libavif un-premultiplies
    it, and every output shows the straight colours. (libvips 8.18's libheif does not, so
    the expectation is the colour before premultiplying, not the oracle's view.)"""
    if not has_avif():
        pytest.skip("this Pillow cannot read AVIF")
    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[:, :24] = (200, 60, 40)
    rgb[:, 24:] = (40, 200, 90)
    alpha = np.tile(np.linspace(60, 255, 48).astype(np.uint8), (32, 1))
    pre = np.round(rgb * (alpha[..., None] / 255.0)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(np.dstack([pre, alpha])).save(buf, "AVIF", quality=100, subsampling="4:4:4")
    data = _with_prem_reference(buf.getvalue())
    for fmt in ("png", "webp"):
        out, r = optimize_bytes(data, Settings(format=fmt, lossless=True))
        got = oracle.view(out).rgba
        assert np.abs(got[..., :3] - rgb).max() <= 12, (fmt, got[0, [0, 30]].tolist())
        assert np.abs(got[..., 3] - alpha).max() <= 2
