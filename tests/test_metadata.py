"""Metadata as a privacy auditor and a viewer see it (issue 13, items 10-12).

Inputs are built here (Pillow, byte surgery) with GPS and camera EXIF, XMP,
comments and private chunks that carry this file's own marker strings. The
oracle scans every output's bytes for those markers and reads the GPS IFD
back with Pillow, on every input format, skipped and in-place outputs
included; pixels are compared after an independent decode. Cost: about 3 s
per backend.
"""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image, ImageOps, TiffImagePlugin

from pyimgopt import Settings, optimize_bytes, optimize_file
from pyimgopt.pipeline.strip import strip_jpeg, strip_png

from conftest import encode, photo, png_chunk

MARK = b"PYIO-SECRET"
XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/'
       b'22-rdf-syntax-ns#"><rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/" '
       b'dc:creator="' + MARK + b'-XMP"/></rdf:RDF></x:xmpmeta>')


def _exif(orientation: int | None = None) -> Image.Exif:
    ex = Image.Exif()
    ex[0x010F] = MARK.decode() + "-MAKE"
    ex[0x0110] = MARK.decode() + "-MODEL"
    if orientation is not None:
        ex[0x0112] = orientation
    ex.get_ifd(0x8825).update({1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0),
                               0x12: MARK.decode() + "-GPS"})
    return ex


def _noise(w: int = 48, h: int = 40, seed: int = 1) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _exif_of(data: bytes) -> Image.Exif:
    """The EXIF a reader finds: Pillow's, or pillow-heif's for HEIF (no opener registered)."""
    if data[4:12] in (b"ftypheic", b"ftypmif1", b"ftypheix"):
        import pillow_heif

        ex = Image.Exif()
        raw = pillow_heif.open_heif(io.BytesIO(data)).info.get("exif")
        if raw:
            ex.load(raw)
        return ex
    with Image.open(io.BytesIO(data)) as im:
        return im.getexif()


def _clean(data: bytes, what: str) -> None:
    """No marker string in the bytes, and no GPS IFD a reader can find."""
    assert MARK not in data, f"{what}: a marker string survived"
    assert not _exif_of(data).get_ifd(0x8825), f"{what}: a GPS IFD survived"


def _pixels(data: bytes) -> np.ndarray:
    if data[4:12] in (b"ftypheic", b"ftypmif1", b"ftypheix"):
        import pillow_heif

        return np.asarray(pillow_heif.open_heif(io.BytesIO(data)).to_pillow().convert("RGBA"))
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGBA"))


# -- inputs ---------------------------------------------------------------------------


def _jpeg_input(orientation: int | None = None) -> bytes:
    return encode(Image.fromarray(photo(64, 48)), "JPEG", quality=90, exif=_exif(orientation),
                  xmp=XMP, comment=MARK + b"-COM")


def _png_input() -> bytes:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Comment", MARK.decode() + "-TEXT")
    info.add_itxt("XML:com.adobe.xmp", XMP.decode())
    data = encode(_noise(), "PNG", pnginfo=info, exif=_exif())
    private = png_chunk(b"prVt", MARK + b"-PRIVATE")
    return data[:-12] + private + data[-12:]


def _webp_input(orientation: int | None = None) -> bytes:
    # quality 5: a re-encode at q80 is larger, so the not-smaller rule decides
    return encode(_noise(), "WEBP", quality=5, exif=_exif(orientation), xmp=XMP)


def _avif_input() -> bytes:
    return encode(_noise(96, 80), "AVIF", quality=30, exif=_exif(), xmp=XMP)


def _gif_input() -> bytes:
    frames = [_noise(32, 24, seed=i).quantize(64) for i in range(3)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=[50, 60, 70],
                  loop=0, comment=MARK + b"-COMMENT")
    xmp_ext = b"!\xff\x0bXMP DataXMP" + bytes((len(XMP) % 255,)) + XMP[: len(XMP) % 255] + b"\x00"
    return data[:-1] + xmp_ext + data[-1:]  # before the trailer


def _tiff_with_gps(tiff: bytes) -> bytes:
    """Byte surgery: a GPS IFD with a marker, linked from a rewritten IFD0 at the end."""
    e = "<" if tiff[:2] == b"II" else ">"
    ifd0 = struct.unpack(e + "I", tiff[4:8])[0]
    n = struct.unpack(e + "H", tiff[ifd0 : ifd0 + 2])[0]
    entries = [tiff[ifd0 + 2 + 12 * i : ifd0 + 14 + 12 * i] for i in range(n)]
    nxt = tiff[ifd0 + 2 + 12 * n : ifd0 + 6 + 12 * n]
    out = bytearray(tiff + b"\x00" * (len(tiff) & 1))
    text = MARK + b"-GPS\x00"
    gps_at = len(out)
    out += struct.pack(e + "H", 1) + struct.pack(e + "HHII", 0x12, 2, len(text), gps_at + 18)
    out += b"\x00\x00\x00\x00" + text + b"\x00" * (len(text) & 1)
    entries.append(struct.pack(e + "HHII", 34853, 4, 1, gps_at))
    entries.sort(key=lambda raw: struct.unpack(e + "H", raw[:2])[0])
    new_ifd0 = len(out)
    out += struct.pack(e + "H", len(entries)) + b"".join(entries) + nxt
    out[4:8] = struct.pack(e + "I", new_ifd0)
    return bytes(out)


def _tiff_input() -> bytes:
    info = TiffImagePlugin.ImageFileDirectory_v2()
    info[271] = MARK.decode() + "-MAKE"
    info[305] = MARK.decode() + "-SOFTWARE"
    # JPEG-compressed at a low quality: the lossless deflate re-encode is larger
    return _tiff_with_gps(encode(_noise(), "TIFF", compression="jpeg", quality=20, tiffinfo=info))


def _heif_input() -> bytes:
    pytest.importorskip("pillow_heif", reason="pillow-heif is not installed")
    from heif_jxl import heic

    return heic(_noise(64, 48), quality=60, exif=_exif().tobytes())


INPUTS = {
    "jpeg": _jpeg_input,
    "png": _png_input,
    "webp": _webp_input,
    "avif": _avif_input,
    "gif": _gif_input,
    "tiff": _tiff_input,
    "heif": _heif_input,
}


@pytest.mark.parametrize("fmt", sorted(INPUTS))
def test_metadata_inputs_carry_the_markers(fmt):
    data = INPUTS[fmt]()
    assert data.count(MARK) >= 1  # the oracle's own premise
    if fmt not in ("gif", "png"):
        assert _exif_of(data).get_ifd(0x8825)


# -- item 10: no output is ever published with GPS, skipped ones included -------------


@pytest.mark.parametrize("fmt", sorted(INPUTS))
@pytest.mark.parametrize("where", ["out", "in_place"])
def test_metadata_stripped_in_every_output_of_every_format(tmp_path, fmt, where):
    data = INPUTS[fmt]()
    src = tmp_path / f"in.{fmt}"
    src.write_bytes(data)
    if where == "out":
        r = optimize_file(src, tmp_path / "out" / src.name)
        written = (tmp_path / "out" / src.name).read_bytes()
        assert src.read_bytes() == data
    else:
        r = optimize_file(src)
        written = src.read_bytes()
    assert r.status == "optimized", (r.status, r.notes)
    _clean(written, f"{fmt} {where}")
    assert r.bytes_out == len(written) <= len(data)


@pytest.mark.parametrize("fmt", ["webp", "avif", "tiff", "heif"])
def test_metadata_not_smaller_file_is_stripped_losslessly(tmp_path, fmt):
    """The re-encode is larger: the output is the input's own pixels without the metadata."""
    data = INPUTS[fmt]()
    out, r = optimize_bytes(data, Settings(quality=95))
    assert r.status == "optimized" and "lossless metadata strip (no re-encode)" in r.notes
    assert len(out) == len(data) if fmt in ("tiff", "avif", "heif") else len(out) < len(data)  # blanked
    _clean(out, fmt)
    assert np.array_equal(_pixels(out), _pixels(data))


def test_metadata_strip_keeps_orientation_as_a_minimal_exif():
    data = _webp_input(orientation=6)
    out, r = optimize_bytes(data)
    assert "lossless metadata strip (no re-encode)" in r.notes
    _clean(out, "webp orientation 6")
    with Image.open(io.BytesIO(out)) as im:
        assert dict(im.getexif()) == {0x0112: 6}
        shown = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    with Image.open(io.BytesIO(data)) as im:
        assert np.array_equal(shown, np.asarray(ImageOps.exif_transpose(im).convert("RGB")))


def test_metadata_jpeg_lossless_orientation_keeps_only_the_orientation_tag():
    data = _jpeg_input(orientation=6)
    out, r = optimize_bytes(data, Settings(lossless=True))
    assert r.status == "optimized"
    _clean(out, "jpeg lossless orientation 6")
    with Image.open(io.BytesIO(out)) as im:
        assert dict(im.getexif()) == {0x0112: 6}
        assert np.array_equal(np.asarray(im), np.asarray(Image.open(io.BytesIO(data))))
    assert (r.width, r.height) == (48, 64)  # as shown


def test_metadata_jpeg_to_jxl_recompression_keeps_only_the_orientation():
    pytest.importorskip("pillow_jxl", reason="pillow-jxl-plugin is not installed")
    data = _jpeg_input(orientation=6)
    out, r = optimize_bytes(data, Settings(format="jxl", lossless=True))
    assert r.status == "optimized" and r.format_out == "jxl"
    _clean(out, "jpeg -> jxl recompression")
    with Image.open(io.BytesIO(out)) as im:
        assert dict(im.getexif()) == {0x0112: 6}


def _raw_tiff_with_everything(mode: str) -> bytes:
    """An uncompressed TIFF (so the deflate re-encode is smaller and wins) carrying XMP,
    IPTC, a Photoshop block, camera, software, artist and copyright tags, and a GPS IFD."""
    info = TiffImagePlugin.ImageFileDirectory_v2()
    for tag in (271, 272, 305, 315, 33432):  # Make, Model, Software, Artist, Copyright
        info[tag] = f"{MARK.decode()}-{tag}"
    info[700] = XMP
    info.tagtype[700] = 1
    info[33723] = b"\x1c\x02\x50\x00\x10" + MARK + b"-IPTC"
    info.tagtype[33723] = 7
    info[34377] = b"8BIM\x04\x04\x00\x00\x00\x00\x00\x10" + MARK + b"-PSHP"
    info.tagtype[34377] = 1
    y, x = np.mgrid[0:40, 0:48]
    rgb = np.dstack([x * 5, y * 6, (x + y) * 3]).astype(np.uint8)
    im = Image.fromarray(rgb)
    if mode == "L":
        im = im.convert("L")
    elif mode == "P":
        im = im.quantize(16)
    elif mode == "RGBA":
        im = Image.fromarray(np.dstack([rgb, (x * 5).astype(np.uint8)]))
    return _tiff_with_gps(encode(im, "TIFF", tiffinfo=info))


@pytest.mark.parametrize("mode", ["L", "RGB", "P", "RGBA"])
def test_metadata_tiff_reencode_carries_no_tags(tmp_path, mode):
    """The re-encode path (not the blanking): XMP, IPTC, Photoshop, camera, artist,
    copyright and the GPS pointer are gone in place, to an output and resized."""
    data = _raw_tiff_with_everything(mode)
    assert data.count(MARK) >= 8
    src = tmp_path / "in.tiff"
    for name, settings, in_place in (("keep", Settings(), False), ("in place", Settings(), True),
                                     ("lossless", Settings(lossless=True), False),
                                     ("resized", Settings(max_width=30), False),
                                     ("auto in place", Settings(format="auto"), True)):
        src.write_bytes(data)
        dst = src if in_place else tmp_path / "out" / "in.tiff"
        r = optimize_file(src, None if in_place else dst, settings)
        written = dst.read_bytes()
        assert r.status == "optimized" and r.format_out == "tiff", (name, r)
        assert len(written) < len(data) and privacy_strip_note_absent(r), (name, r.notes)
        _clean(written, f"tiff {mode} {name}")
        with Image.open(io.BytesIO(written)) as im:
            left = {700, 33723, 34377, 271, 272, 305, 315, 33432, 34853} & set(im.tag_v2)
            assert not left, (name, left)
            if name != "resized":
                assert np.array_equal(np.asarray(im.convert("RGBA")), _pixels(data)), name


def privacy_strip_note_absent(r) -> bool:
    """The re-encode won (the case this test is about), not the same-size blanking."""
    return "lossless metadata strip (no re-encode)" not in r.notes


def _unparseable_webp() -> bytes:
    """A lossy WebP libwebp decodes, with a marker chunk and a chunk whose size runs past the end."""
    d = encode(_noise(), "WEBP", quality=5)
    body = d[12:] + b"EXIF" + struct.pack("<I", 12) + MARK + b"!" + b"JUNK" + struct.pack("<I", 999) + b"xx"
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


def test_metadata_unstrippable_file_is_reencoded_never_copied(tmp_path):
    data = _unparseable_webp()
    src = tmp_path / "odd.webp"
    src.write_bytes(data)
    r = optimize_file(src, tmp_path / "out" / "odd.webp")
    written = (tmp_path / "out" / "odd.webp").read_bytes()
    assert r.status == "optimized" and MARK not in written
    assert len(written) > len(data) and any("written although it is larger" in n for n in r.notes)
    r = optimize_file(src)  # in place: never larger, so the original stays, and says why
    assert r.status == "skipped" and src.read_bytes() == data
    assert any("left unchanged" in n for n in r.notes)


def test_metadata_keep_metadata_copies_a_skipped_file_as_is():
    data = _webp_input()
    out, r = optimize_bytes(data, Settings(keep_metadata=True))
    assert r.status == "skipped" and out == data


def test_metadata_skipped_means_byte_identical_and_nothing_to_strip():
    clean = encode(_noise(), "WEBP", quality=5)
    out, r = optimize_bytes(clean)
    assert r.status == "skipped" and out == clean


# -- item 11: the primary image ends at its own EOI ----------------------------------



def _app1(payload: bytes) -> bytes:
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


@pytest.mark.parametrize("kind", ["baseline", "progressive", "restart"])
@pytest.mark.parametrize("container", ["appended", "mpo"])
def test_metadata_strip_jpeg_drops_an_appended_image_and_its_gps(kind, container):
    params = {"baseline": {}, "progressive": {"progressive": True},
              "restart": {"progressive": True, "restart_marker_blocks": 3}}[kind]
    first = Image.fromarray(photo(80, 56))
    primary = encode(first, "JPEG", quality=85, **params)
    second = Image.fromarray(photo(16, 16, seed=3))
    if container == "appended":  # a picture glued after EOI, with its own EXIF
        data = primary + encode(second, "JPEG", quality=50, exif=_exif())
    else:  # a camera's multi-picture file: MPF index, the second picture after the first
        data = encode(first, "MPO", quality=85, save_all=True, append_images=[second], exif=_exif(),
                      **params)
        assert b"MPF\x00" in data
    assert data.count(MARK) >= 1
    out = strip_jpeg(data, keep_icc=False)
    assert out is not None
    assert MARK not in out and b"MPF\x00" not in out
    assert out.endswith(b"\xff\xd9") and out.count(b"\xff\xd8") == 1
    assert np.array_equal(_pixels(out), _pixels(primary))
    out, r = optimize_bytes(data, Settings(lossless=True))
    _clean(out, f"{container} {kind}")
    assert np.array_equal(_pixels(out), _pixels(primary))


def _markers(data: bytes, code: int) -> list[int]:
    return [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == code]


def test_metadata_strip_jpeg_walks_fill_bytes_and_keeps_every_scan():
    primary = encode(Image.fromarray(photo(64, 40)), "JPEG", quality=80, progressive=True,
                     restart_marker_blocks=2)
    assert len(_markers(primary, 0xDA)) > 3 and _markers(primary, 0xD0)  # scans, restarts
    assert b"\xff\x00" in primary  # stuffed bytes in the entropy-coded data
    # fill bytes (0xFF runs) before every scan header after the first, then an APP1 between scans
    data = bytearray(primary)
    for at in reversed(_markers(primary, 0xDA)[1:]):
        data[at:at] = b"\xff\xff\xff"
    at = _markers(bytes(data), 0xDA)[2] - 3
    data[at:at] = _app1(b"Exif\x00\x00" + MARK)
    data = bytes(data)
    assert np.array_equal(_pixels(data), _pixels(primary))  # still a valid JPEG
    out = strip_jpeg(data, keep_icc=False)
    assert out is not None and MARK not in out
    assert np.array_equal(_pixels(out), _pixels(primary))


def test_metadata_strip_jpeg_refuses_a_truncated_file():
    primary = encode(Image.fromarray(photo(64, 40)), "JPEG", quality=80)
    assert strip_jpeg(primary[:-2], keep_icc=False) is None
    assert strip_jpeg(primary[: len(primary) // 2], keep_icc=False) is None


def test_metadata_strip_jpeg_drops_the_jfif_thumbnail_keeps_its_density():
    data = encode(Image.fromarray(photo(40, 32)), "JPEG", quality=90, dpi=(200, 100))
    assert data[2:4] == b"\xff\xe0" and data[6:11] == b"JFIF\x00"
    end = 4 + struct.unpack(">H", data[4:6])[0]
    # the same JFIF fields, now with a 4 x 2 RGB thumbnail (24 bytes) holding the marker
    payload = data[6:18] + bytes((4, 2)) + MARK.ljust(24, b"\x00")
    app0 = b"\xff\xe0" + struct.pack(">H", len(payload) + 2) + payload
    data = data[:2] + app0 + data[end:]
    out = strip_jpeg(data, keep_icc=False)
    assert MARK not in out
    with Image.open(io.BytesIO(out)) as im:
        assert im.info.get("dpi") == (200, 100)
        assert np.array_equal(np.asarray(im), np.asarray(Image.open(io.BytesIO(data))))


def test_metadata_strip_jpeg_keeps_display_segments(prophoto_icc):
    im = Image.fromarray(photo(40, 32))
    data = encode(im, "JPEG", quality=90, icc_profile=prophoto_icc, dpi=(300, 150), exif=_exif(),
                  xmp=XMP, comment=MARK)
    photoshop = b"\xff\xed" + struct.pack(">H", 2 + len(b"Photoshop 3.0\x00" + MARK)) + b"Photoshop 3.0\x00" + MARK
    data = data[:2] + photoshop + data[2:]
    out = strip_jpeg(data, keep_icc=True)
    assert out is not None and MARK not in out
    with Image.open(io.BytesIO(out)) as got:
        assert got.info.get("icc_profile") == prophoto_icc
        assert got.info.get("dpi") == (300, 150)
        assert not got.getexif()
    cmyk = encode(Image.fromarray(photo(40, 32)).convert("CMYK"), "JPEG", quality=90)
    assert b"Adobe" in strip_jpeg(cmyk, keep_icc=False)  # the colour transform flag stays


# -- item 12: what is shown is kept, the rest goes --------------------------------------


def _chunk_types(data: bytes) -> list[bytes]:
    pos, out = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        out.append(data[pos + 4 : pos + 8])
        pos += 12 + length
    return out


def _chunk(data: bytes, ctype: bytes) -> bytes | None:
    pos = 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        if data[pos + 4 : pos + 8] == ctype:
            return data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    return None


_DISPLAY = {
    b"gAMA": struct.pack(">I", 100000),
    b"cHRM": struct.pack(">8I", 31270, 32900, 70800, 29200, 17000, 79700, 13100, 4600),
    b"cICP": bytes((9, 16, 0, 1)),
    b"mDCV": bytes(24),
    b"cLLI": struct.pack(">II", 10000000, 4000000),
    b"pHYs": struct.pack(">IIB", 11811, 11811, 1),
    b"sBIT": bytes((8, 8, 8)),
}
_DROPPED = {b"tEXt", b"zTXt", b"iTXt", b"tIME", b"eXIf", b"prVt", b"bKGD"}


def _png_with_everything(im: Image.Image) -> bytes:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Comment", MARK.decode())
    info.add_text("Big", MARK.decode() * 20, zip=True)
    info.add_itxt("XML:com.adobe.xmp", XMP.decode())
    base = encode(im, "PNG", pnginfo=info, exif=_exif())
    head, rest = base[:33], base[33:]  # signature + IHDR
    extra = b"".join(png_chunk(t, p) for t, p in _DISPLAY.items())
    extra += png_chunk(b"tIME", bytes(7)) + png_chunk(b"bKGD", bytes(6)) + png_chunk(b"prVt", MARK)
    return head + extra + rest


def test_metadata_strip_png_keeps_display_chunks_and_drops_the_rest():
    data = _png_with_everything(_noise())
    out = strip_png(data, keep_icc=False)
    kinds = set(_chunk_types(out))
    assert set(_DISPLAY) <= kinds and not (_DROPPED & kinds)
    assert MARK not in out
    assert np.array_equal(_pixels(out), _pixels(data))


def test_metadata_png_reencode_keeps_colour_chunks_and_density():
    data = _png_with_everything(Image.fromarray(photo(120, 90)))
    out, r = optimize_bytes(data, Settings(max_width=60))  # a resize: a real re-encode
    assert r.status == "optimized" and r.width == 60
    for ctype in (b"gAMA", b"cHRM", b"cICP", b"mDCV", b"cLLI", b"pHYs"):
        assert _chunk(out, ctype) == _DISPLAY[ctype], ctype
    assert not (_DROPPED & set(_chunk_types(out))) and MARK not in out


def test_metadata_density_crosses_formats():
    data = encode(Image.fromarray(photo(80, 60)), "JPEG", quality=95, dpi=(300, 300))
    out, _ = optimize_bytes(data, Settings(max_width=40))
    with Image.open(io.BytesIO(out)) as im:
        assert im.info.get("dpi") == (300, 300)
    out, _ = optimize_bytes(data, Settings(format="png", max_width=40))
    with Image.open(io.BytesIO(out)) as im:
        assert tuple(round(v) for v in im.info["dpi"]) == (300, 300)
    png = encode(Image.fromarray(photo(80, 60)), "PNG", dpi=(72, 72))
    out, _ = optimize_bytes(png, Settings(format="jpeg"))
    with Image.open(io.BytesIO(out)) as im:
        assert im.info.get("dpi") == (72, 72)
