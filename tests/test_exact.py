"""What is kept when nothing may change: deep, wide-gamut and exotic samples under keep,
in place and ``lossless=True`` (the pixel review's findings 4-7).

Inputs are built here (pyvips, Pillow, byte surgery, Debian's cjxl for JPEG
XL); outputs are read back by libvips or djxl through ``tests/matrix/oracle``,
never by pyimgopt. The rules tested:

- a TIFF pyimgopt cannot write back exactly (float, 32-bit, signed, CMYK) is
  left as it is under ``keep``/in place (its metadata blanked), refused
  resized as TIFF or with ``lossless=True``, and converted sensibly (with a
  note) into other formats, never reported as SSIM 1;
- ``format="auto"`` in place keeps what ``keep`` keeps: 16 bits, a non-sRGB
  profile with the original values;
- a 16-bit PNG or TIFF with an orientation stays 16-bit, turned upright;
- a lossless JPEG XL with 16-bit samples or a wide-gamut profile is kept as
  it is.

Cost: about 3 s per backend.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

import numpy as np
import pytest
import pyvips
from PIL import Image

from pyimgopt import Settings, optimize_bytes, optimize_file
from pyimgopt.errors import UnsupportedFormatError
from pyimgopt.pipeline.colour import icc_info

from matrix import icc as icclib
from matrix import oracle
from matrix.png import iccp_chunk, write_png

_Y, _X = np.mgrid[0:40, 0:50]


def _tiff(arr: np.ndarray, fmt: str, interp: str | None = None, **kw) -> bytes:
    im = pyvips.Image.new_from_array(arr).cast(fmt)
    if interp:
        im = im.copy(interpretation=interp)
    return im.tiffsave_buffer(**kw)


def _exotic() -> dict[str, bytes]:
    buf = io.BytesIO()
    cmyk = np.dstack([_X * 5, _Y * 6, (_X + _Y) * 2, np.full_like(_X, 40)]).astype(np.uint8)
    Image.fromarray(cmyk, "CMYK").save(buf, "TIFF")
    return {
        "float": _tiff((_X / 50.0 * 0.9 + _Y / 400.0).astype(np.float32), "float"),
        "float-hdr": _tiff((_X / 6.0).astype(np.float32), "float"),
        "uint32": _tiff((_X * 80_000_000 + _Y).astype(np.uint32), "uint"),
        "int16": _tiff((_X * 1000 - 25_000).astype(np.int16), "short"),
        "cmyk": buf.getvalue(),
    }


@pytest.mark.parametrize("kind", sorted(_exotic()))
def test_exact_exotic_tiff_is_left_as_it_is_under_keep(tmp_path, kind):
    data = _exotic()[kind]
    out, r = optimize_bytes(data)
    assert r.status == "skipped" and out == data and r.ssim is None, r
    assert any("is not re-encoded" in n for n in r.notes), r.notes
    assert not any("pyvips unavailable" in n for n in r.notes)
    src = tmp_path / "a.tif"
    src.write_bytes(data)
    for fmt in ("keep", "auto"):
        r = optimize_file(src, None, Settings(format=fmt))
        assert r.status == "skipped" and src.read_bytes() == data, (fmt, r)
    with pytest.raises(UnsupportedFormatError, match="cannot be written as TIFF"):
        optimize_bytes(data, Settings(max_width=20))
    with pytest.raises(UnsupportedFormatError, match="lossless=True"):
        optimize_bytes(data, Settings(format="png", lossless=True))


def test_exact_exotic_tiff_metadata_is_blanked_not_reencoded():
    """A float TIFF with GPS: the same samples, the metadata blanked at the same size."""
    buf = io.BytesIO()
    Image.fromarray((_X / 50.0).astype(np.float32), "F").save(
        buf, "TIFF", tiffinfo={271: "PYIO-MAKE", 305: "PYIO-SOFTWARE"})
    data = buf.getvalue()
    assert b"PYIO-MAKE" in data
    out, r = optimize_bytes(data)
    assert r.status == "optimized" and len(out) == len(data) and b"PYIO-MAKE" not in out
    back = pyvips.Image.new_from_buffer(out, "")
    assert back.format == "float" and np.array_equal(back.numpy(), (_X / 50.0).astype(np.float32))


def test_exact_exotic_tiff_converts_sensibly_and_says_how():
    cases = _exotic()
    out, r = optimize_bytes(cases["float"], Settings(format="png"))
    want = np.round((_X / 50.0 * 0.9 + _Y / 400.0).astype(np.float32) * 255.0)
    got = oracle.view(out).rgba[..., 0]
    assert np.abs(got - want).max() <= 1 and r.ssim is None
    assert any("[0, 1]" in n for n in r.notes) and not any("clipped" in n for n in r.notes)
    out, r = optimize_bytes(cases["float-hdr"], Settings(format="png"))
    assert any("above 1.0 (HDR)" in n and "clipped" in n for n in r.notes), r.notes
    assert oracle.view(out).rgba[0, 12, 0] == 255 and oracle.view(out).rgba[0, 3, 0] == 128
    out, r = optimize_bytes(cases["uint32"], Settings(format="png"))
    got = oracle.view(out).rgba[..., 0]
    full = (_X * 80_000_000 + _Y).astype(np.float64) * 255 / (2**32 - 1)
    assert np.abs(got - np.round(full)).max() <= 1 and got.max() > 200  # scaled, not clipped
    assert any("32-bit" in n for n in r.notes)
    out, r = optimize_bytes(cases["int16"], Settings(format="png"))
    got = oracle.view(out).rgba[..., 0]
    want = np.round(((_X * 1000 - 25_000) + 32768) * 255 / 65535)
    assert np.abs(got - want).max() <= 1 and any("signed" in n for n in r.notes)
    out, r = optimize_bytes(cases["cmyk"], Settings(format="png"))
    assert r.ssim is None and r.status == "optimized"  # a colour-space change is not lossless


# -- auto in place keeps what keep keeps --------------------------------------------


def _png16() -> bytes:
    rng = np.random.default_rng(0)
    rgb16 = (np.dstack([_X * 1300, _Y * 1600, (_X + _Y) * 700]) + rng.integers(0, 200, (40, 50, 3)))
    return write_png(rgb16.astype(np.uint16), 2, 16)


def _p3_png() -> bytes:
    pu8 = np.zeros((48, 64, 3), np.uint8)
    pu8[:, :32] = (0, 250, 0)
    pu8[:, 32:] = (250, 40, 30)
    pu8 += np.random.default_rng(1).integers(0, 3, pu8.shape).astype(np.uint8)
    return write_png(pu8, 2, 8, before_plte=[iccp_chunk("P3", icclib.profile("display-p3"))])


def _p3_webp() -> bytes:
    pu8 = np.round(np.dstack([_X * 5, _Y * 6, np.full_like(_X, 200)])).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pu8).save(buf, "WEBP", lossless=True, icc_profile=icclib.profile("display-p3"))
    return buf.getvalue() + b""


def _tiff16() -> bytes:
    u16 = (np.dstack([_X * 1300, _Y * 1600, (_X + _Y) * 700]) + 7).astype(np.uint16)
    return _tiff(u16, "ushort", "rgb16", compression="none")


@pytest.mark.parametrize("make,ext", [(_png16, "png"), (_p3_png, "png"), (_p3_webp, "webp"),
                                      (_tiff16, "tif")], ids=["png16", "png-p3", "webp-p3", "tiff16"])
def test_exact_auto_in_place_keeps_depth_and_profile(tmp_path, make, ext):
    data = make()
    ref = oracle.view(data)
    src = tmp_path / f"a.{ext}"
    src.write_bytes(data)
    r = optimize_file(src, None, Settings(format="auto"))
    assert r.status in ("optimized", "skipped"), r
    got = oracle.view(src.read_bytes())
    assert got.bits == ref.bits and np.array_equal(got.raw, ref.raw), r.notes
    if ref.icc is not None and not icc_info(ref.icc)[1]:
        assert got.icc is not None and not icc_info(got.icc)[1], "the P3 profile must stay"
    if r.ssim is not None and r.ssim == 1.0:
        assert np.array_equal(got.rgba, ref.rgba)


# -- 16 bits with an orientation ------------------------------------------------------


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png16_oriented(orientation: int) -> tuple[bytes, np.ndarray]:
    h, w = 20, 30
    y, x = np.mgrid[0:h, 0:w]
    noise = np.random.default_rng(1).integers(0, 64, (h, w, 3))
    arr = (np.dstack([x * 2000, y * 3000, (x + y) * 1200]) + noise).astype(np.uint16)
    raw = b"".join(b"\0" + arr[y].astype(">u2").tobytes() for y in range(h))
    ex = Image.Exif()
    ex[0x0112] = orientation
    exif = ex.tobytes()
    exif = exif[6:] if exif.startswith(b"Exif") else exif
    png = (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
           + _chunk(b"eXIf", exif) + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b""))
    return png, arr


@pytest.mark.parametrize("settings", [Settings(lossless=True), Settings(format="png", lossless=True),
                                      Settings()], ids=["keep-lossless", "png-lossless", "keep"])
def test_exact_16bit_png_with_orientation_stays_16bit_upright(settings):
    data, stored = _png16_oriented(6)
    out, r = optimize_bytes(data, settings)
    v = pyvips.Image.new_from_buffer(out, "")
    assert v.format == "ushort", (r.notes, v.format)
    assert np.array_equal(v.autorot().numpy(), np.rot90(stored, -1))  # 6: turned 90 clockwise
    assert r.ssim == 1.0 and (r.width, r.height) == (20, 30)


def test_exact_16bit_tiff_kept_with_orientation_stays_16bit():
    y, x = np.mgrid[0:24, 0:36]
    noise = np.random.default_rng(2).integers(0, 64, (24, 36, 3))
    u16 = (np.dstack([x * 1800, y * 2600, (x + y) * 1100]) + noise).astype(np.uint16)
    im = pyvips.Image.new_from_array(u16).cast("ushort").copy(interpretation="rgb16")
    im.set_type(pyvips.GValue.gint_type, "orientation", 6)
    data = im.tiffsave_buffer(compression="none")
    ref = oracle.view(data)  # libvips turns it upright
    for settings in (Settings(), Settings(lossless=True)):
        out, r = optimize_bytes(data, settings)
        got = oracle.view(out)
        assert got.bits == 16 and got.orientation in (1, None), r.notes
        assert np.array_equal(got.raw, ref.raw) and r.ssim == 1.0


def test_exact_without_libvips_16bit_is_kept_never_downgraded(tmp_path):
    """No pyvips: a 16-bit TIFF kept as TIFF stays the original; a 16-bit PNG with an
    orientation keeps its samples and a minimal orientation EXIF (a viewer turns it)."""
    tiff = _tiff16()
    png, stored = _png16_oriented(6)
    (tmp_path / "a.tif").write_bytes(tiff)
    (tmp_path / "b.png").write_bytes(png)
    code = ("import sys\nfrom pyimgopt import optimize_file, Settings\n"
            "for p in sys.argv[1:]:\n"
            "    r = optimize_file(p, p + '.out', Settings())\n"
            "    print(r.status, r.ssim, r.error)\n")
    env = dict(os.environ, PYIMGOPT_DISABLE="vips")
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path / "a.tif"), str(tmp_path / "b.png")],
                         env=env, capture_output=True, text=True, timeout=120, check=True)
    lines = run.stdout.splitlines()
    assert lines[0].startswith("skipped") and (tmp_path / "a.tif.out").read_bytes() == tiff, lines
    assert lines[1].startswith(("optimized 1.0", "skipped None")), lines
    back = oracle.view((tmp_path / "b.png.out").read_bytes())  # libvips applies the eXIf
    assert back.bits == 16 and np.array_equal(back.raw, np.rot90(stored, -1))


# -- JPEG XL kept as JPEG XL ------------------------------------------------------------

CJXL = shutil.which("cjxl")


def _cjxl(png: bytes) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        with open(f"{tmp}/in.png", "wb") as f:
            f.write(png)
        subprocess.run([CJXL, "-d", "0", "-e", "3", f"{tmp}/in.png", f"{tmp}/in.jxl"], check=True,
                       capture_output=True, timeout=60)
        with open(f"{tmp}/in.jxl", "rb") as f:
            return f.read()


@pytest.mark.parametrize("make", [_png16, _p3_png], ids=["16bit", "p3"])
def test_exact_lossless_jxl_deep_or_wide_is_kept(tmp_path, make):
    from pyimgopt.pipeline import jxl

    if CJXL is None or oracle.DJXL is None or not jxl.available():
        pytest.skip("needs cjxl/djxl (libjxl-tools) and pillow-jxl-plugin")
    data = _cjxl(make())
    ref = oracle.view(data)
    for settings in (Settings(), Settings(format="jxl", lossless=True)):
        out, r = optimize_bytes(data, settings)
        got = oracle.view(out)
        assert got.bits == ref.bits and np.array_equal(got.raw, ref.raw), r.notes
        assert r.ssim is None or np.array_equal(got.rgba, ref.rgba)
    src = tmp_path / "a.jxl"
    src.write_bytes(data)
    r = optimize_file(src)
    assert src.read_bytes() == data and r.status == "skipped", r
