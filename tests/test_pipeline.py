"""Pipeline behaviour on images the tests build themselves (Pillow, byte surgery)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageCms

import pyimgopt
from pyimgopt import Settings, optimize_bytes
from pyimgopt.errors import DecodeError, TooLargeError, UnsupportedFormatError
from pyimgopt.pipeline.encode import has_avif

from conftest import decode, encode, exif_bytes, jpeg, photo, png_header_only


def fmt_of(data: bytes) -> str:
    return Image.open(io.BytesIO(data)).format


# -- formats ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fmt, params",
    [
        ("JPEG", {"quality": 98}),
        ("PNG", {"compress_level": 0}),
        ("WEBP", {"quality": 100}),
        ("TIFF", {}),
        ("BMP", {}),
        ("GIF", {}),
        pytest.param("AVIF", {"quality": 100}, marks=pytest.mark.skipif(not has_avif(), reason="no AVIF in this Pillow")),
    ],
)
def test_pipeline_each_input_format_gets_smaller_and_keeps_its_format(fmt, params):
    src = Image.fromarray(photo(256, 192))
    if fmt == "GIF":
        src = src.quantize(64)
    data = encode(src, fmt, **params)
    out, r = optimize_bytes(data)
    if fmt in ("BMP", "GIF"):  # 24-bit BMP / Pillow's own GIF cannot shrink: kept as is
        assert r.status == "skipped" and out == data
    else:
        assert r.status == "optimized", r
        assert len(out) < len(data)
    assert r.format_in == fmt.lower() and fmt_of(out) == fmt
    assert decode(out).size == (256, 192)


@pytest.mark.parametrize("target", ["jpeg", "png", "webp", pytest.param("avif", marks=pytest.mark.skipif(not has_avif(), reason="no AVIF"))])
def test_pipeline_named_format_converts(target):
    data = encode(Image.fromarray(photo(200, 150)), "PNG")
    out, r = optimize_bytes(data, Settings(format=target))
    assert r.format_out == target
    assert fmt_of(out) == target.upper()
    assert decode(out).size == (200, 150)


def test_pipeline_format_detected_from_content_not_name(tmp_path):
    src = tmp_path / "really_a_png.jpg"
    src.write_bytes(encode(Image.fromarray(photo(64, 48)), "PNG", compress_level=0))
    r = pyimgopt.optimize_file(src, tmp_path / "out.jpg")
    assert r.format_in == "png" and r.format_out == "png"
    assert fmt_of((tmp_path / "out.jpg").read_bytes()) == "PNG"


def test_pipeline_jpeg_output_is_progressive_when_large():
    out, _ = optimize_bytes(jpeg(photo(800, 600), quality=95))
    assert decode(out).info.get("progressive") or decode(out).info.get("progression")


def test_pipeline_jpeg_never_reencoded_above_source_quality():
    data = jpeg(photo(400, 300), quality=40)
    out, r = optimize_bytes(data, Settings(quality=90))
    assert r.quality is not None and r.quality <= 42


# -- resize ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings, size, expected",
    [
        (dict(max_width=100), (400, 300), (100, 75)),
        (dict(max_height=100), (400, 300), (133, 100)),
        (dict(max_width=100, max_height=100), (400, 300), (100, 75)),
        (dict(max_width=1000), (400, 300), (400, 300)),  # never enlarge
        (dict(max_width=800, enlarge=True), (400, 300), (800, 600)),
        (dict(max_width=100, max_height=100, fit="cover"), (400, 300), (100, 100)),
        (dict(max_width=100, max_height=100, fit="contain"), (400, 300), (100, 100)),
        (dict(max_width=100, max_height=50, fit="fill"), (400, 300), (100, 50)),
        (dict(max_width=10), (1, 1000), (1, 1000)),
        (dict(max_height=100), (1, 10000), (1, 100)),  # never below one pixel
        (dict(max_width=100), (10000, 1), (100, 1)),
    ],
)
def test_pipeline_resize_obeys_fit_rules(settings, size, expected):
    data = encode(Image.fromarray(photo(*size)), "PNG")
    out, r = optimize_bytes(data, Settings(**settings))
    assert decode(out).size == expected
    assert (r.width, r.height) == expected


def test_pipeline_contain_pads_transparent_for_png_and_background_for_jpeg():
    data = encode(Image.fromarray(photo(400, 200)), "PNG")
    out, _ = optimize_bytes(data, Settings(max_width=100, max_height=100, fit="contain"))
    im = decode(out).convert("RGBA")
    assert im.getpixel((50, 2))[3] == 0 and im.getpixel((50, 50))[3] == 255
    out, _ = optimize_bytes(
        data, Settings(format="jpeg", max_width=100, max_height=100, fit="contain", background="#ff0000")
    )
    r, g, b = decode(out).convert("RGB").getpixel((50, 2))
    assert r > 200 and g < 60 and b < 60


def test_pipeline_jpeg_shrink_on_load_gives_exact_size():
    data = jpeg(photo(2000, 1500), quality=90)
    out, r = optimize_bytes(data, Settings(max_width=300))
    assert decode(out).size == (300, 225)


def test_pipeline_resize_keeps_content():
    arr = photo(400, 300)
    out, _ = optimize_bytes(encode(Image.fromarray(arr), "PNG"), Settings(max_width=200))
    ref = np.asarray(Image.fromarray(arr).resize((200, 150), Image.Resampling.LANCZOS), dtype=np.int16)
    got = np.asarray(decode(out).convert("RGB"), dtype=np.int16)
    assert np.abs(got - ref).mean() < 2.0


# -- orientation ----------------------------------------------------------------------


def _marked(width=300, height=200):
    arr = np.full((height, width, 3), 128, np.uint8)
    arr[:40, :60] = (255, 0, 0)  # red block at the stored top-left
    return arr


@pytest.mark.parametrize("orientation, corner", [(1, (0, 0)), (3, (1, 1)), (6, (1, 0)), (8, (0, 1)), (9, (0, 0)), (0, (0, 0))])
def test_pipeline_exif_orientation_makes_upright(orientation, corner):
    data = jpeg(_marked(), quality=95, exif=exif_bytes(orientation))
    out, _ = optimize_bytes(data, Settings(allow_larger=True))
    im = decode(out).convert("RGB")
    swapped = orientation in (5, 6, 7, 8)
    assert im.size == ((200, 300) if swapped else (300, 200))
    x = 5 if corner[0] == 0 else im.width - 6
    y = 5 if corner[1] == 0 else im.height - 6
    r, g, b = im.getpixel((x, y))
    assert r > 200 and g < 60, (orientation, im.getpixel((x, y)))
    assert im.getexif().get(0x0112) in (None, 1)


def test_pipeline_orientation_applies_before_resize_box():
    data = jpeg(_marked(400, 200), quality=95, exif=exif_bytes(6))
    out, _ = optimize_bytes(data, Settings(max_width=100))
    assert decode(out).size == (100, 200)


# -- colour ----------------------------------------------------------------------------


def test_pipeline_icc_profile_converted_to_srgb(prophoto_icc):
    patches = np.zeros((64, 256, 3), np.uint8)
    for i, colour in enumerate([(200, 30, 30), (30, 160, 40), (40, 60, 190), (230, 200, 60)]):
        patches[:, i * 64 : (i + 1) * 64] = colour
    srgb = Image.fromarray(patches)
    pro = ImageCms.ImageCmsProfile(io.BytesIO(prophoto_icc))
    as_pro = ImageCms.profileToProfile(
        srgb, ImageCms.createProfile("sRGB"), pro, renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC
    )
    data = encode(as_pro, "JPEG", quality=98, subsampling=0, icc_profile=prophoto_icc)
    out, r = optimize_bytes(data, Settings(allow_larger=True))
    got = np.asarray(decode(out).convert("RGB"), dtype=np.int16)
    stored = np.asarray(as_pro, dtype=np.int16)
    for i in range(4):
        patch = got[16:48, i * 64 + 16 : i * 64 + 48].reshape(-1, 3).mean(axis=0)
        want = patches[0, i * 64].astype(np.float64)
        naive = stored[16:48, i * 64 + 16 : i * 64 + 48].reshape(-1, 3).mean(axis=0)
        assert np.abs(patch - want).max() < 8, (i, patch, want)
        assert np.abs(naive - want).max() > 15  # dropping the profile would be visibly wrong
    assert "icc_profile" not in decode(out).info


def test_pipeline_keep_metadata_embeds_srgb_profile(prophoto_icc):
    data = encode(Image.fromarray(photo(64, 64)), "JPEG", quality=98, icc_profile=prophoto_icc)
    out, _ = optimize_bytes(data, Settings(keep_metadata=True, allow_larger=True))
    icc = decode(out).info.get("icc_profile")
    assert icc and "sRGB" in ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc)))


def test_pipeline_cmyk_becomes_rgb_with_same_colours():
    arr = photo(128, 96)
    data = encode(Image.fromarray(arr).convert("CMYK"), "JPEG", quality=98)
    out, r = optimize_bytes(data)
    im = decode(out)
    assert im.mode == "RGB"
    assert np.abs(np.asarray(im, np.int16) - arr.astype(np.int16)).mean() < 8


def test_pipeline_16bit_gray_scaled_not_clipped():
    ramp = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (32, 1))
    data = encode(Image.fromarray(ramp), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    out, r = optimize_bytes(data)
    got = np.asarray(decode(out).convert("L"), np.int16)[0]
    expected = np.round(ramp[0] / 257.0)
    assert np.abs(got - expected).max() <= 1
    assert got[128] not in (0, 255)


# -- alpha ------------------------------------------------------------------------------


def _rgba(width=128, height=96):
    arr = np.dstack([photo(width, height), np.tile(np.linspace(0, 255, width).astype(np.uint8), (height, 1))])
    return arr


def test_pipeline_png_alpha_kept_exactly():
    arr = _rgba()
    out, r = optimize_bytes(encode(Image.fromarray(arr), "PNG", compress_level=0))
    got = np.asarray(decode(out).convert("RGBA"))
    assert np.array_equal(got, arr)


def test_pipeline_opaque_alpha_dropped_losslessly():
    arr = _rgba()
    arr[..., 3] = 255
    out, r = optimize_bytes(encode(Image.fromarray(arr), "PNG", compress_level=0))
    im = decode(out)
    assert im.mode in ("RGB", "P", "L")
    assert np.array_equal(np.asarray(im.convert("RGB")), arr[..., :3])


def test_pipeline_alpha_to_webp_kept_and_to_jpeg_flattened():
    data = encode(Image.fromarray(_rgba()), "PNG")
    out, _ = optimize_bytes(data, Settings(format="webp"))
    assert decode(out).mode == "RGBA"
    out, _ = optimize_bytes(data, Settings(format="jpeg"))
    im = decode(out)
    assert im.mode == "RGB"
    assert min(im.getpixel((0, 50))) > 230  # fully transparent column became the white background


def test_pipeline_palette_png_stays_lossless():
    src = Image.fromarray(photo(128, 128)).quantize(32)
    out, r = optimize_bytes(encode(src, "PNG", compress_level=1))
    assert np.array_equal(np.asarray(decode(out).convert("RGB")), np.asarray(src.convert("RGB")))


# -- animation --------------------------------------------------------------------------


def _gif(frames=5, size=(64, 48)):
    ims = [Image.fromarray(photo(*size, seed=i)).quantize(32) for i in range(frames)]
    return encode(ims[0], "GIF", save_all=True, append_images=ims[1:], duration=[70, 80, 90, 100, 110][:frames], loop=0)


@pytest.mark.parametrize("target, fmt", [("keep", "GIF"), ("webp", "WEBP"), ("png", "PNG")])
def test_pipeline_animation_kept_where_format_can_hold_it(target, fmt):
    out, r = optimize_bytes(_gif(), Settings(format=target, allow_larger=True))
    im = Image.open(io.BytesIO(out))
    assert im.format == fmt and getattr(im, "n_frames", 1) == 5 and r.frames == 5
    im.seek(2)
    im.load()
    assert abs(im.info.get("duration", 0) - 90) <= 10


def test_pipeline_animation_to_jpeg_is_unsupported_unless_first_frame():
    with pytest.raises(UnsupportedFormatError) as err:
        optimize_bytes(_gif(), Settings(format="jpeg"))
    assert "first_frame" in err.value.message
    out, r = optimize_bytes(_gif(), Settings(format="jpeg", first_frame=True))
    assert fmt_of(out) == "JPEG" and r.frames == 1


def test_pipeline_animation_resized_frame_by_frame():
    out, r = optimize_bytes(_gif(size=(200, 100)), Settings(max_width=50, format="webp"))
    im = Image.open(io.BytesIO(out))
    assert im.size == (50, 25) and im.n_frames == 5


# -- limits and bad input ---------------------------------------------------------------


def test_pipeline_header_bomb_refused_at_probe():
    with pytest.raises(TooLargeError) as err:
        optimize_bytes(png_header_only(60000, 60000))
    assert err.value.stage == "probe" and err.value.code == "too_large"


def test_pipeline_max_pixels_is_configurable():
    data = encode(Image.fromarray(photo(100, 100)), "PNG")
    with pytest.raises(TooLargeError) as err:
        optimize_bytes(data, Settings(max_pixels=5000))
    assert "max_pixels" in err.value.message


def test_pipeline_frame_limit_and_frame_bomb():
    with pytest.raises(TooLargeError):
        optimize_bytes(_gif(), Settings(max_frames=3))
    # A GIF whose 3000 tiny frames would be cheap to store but many to decode.
    one = Image.new("L", (8, 8))
    frames = [Image.new("L", (8, 8), 1 + i % 200) for i in range(3000)]
    bomb = encode(one, "GIF", save_all=True, append_images=frames, duration=10)
    with pytest.raises(TooLargeError) as err:
        optimize_bytes(bomb)
    assert "frames" in err.value.message


def test_pipeline_max_input_bytes():
    with pytest.raises(TooLargeError) as err:
        optimize_bytes(jpeg(), Settings(max_input_bytes=1000))
    assert err.value.stage == "read"


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    "name, make, error",
    [
        ("empty", lambda: b"", DecodeError),
        ("truncated jpeg", lambda: _truncated(jpeg(photo(300, 200))), DecodeError),
        ("truncated progressive jpeg", lambda: _truncated(jpeg(photo(300, 200), progressive=True)), DecodeError),
        ("truncated png", lambda: _truncated(encode(Image.fromarray(photo(300, 200)), "PNG")), DecodeError),
        ("bad IHDR crc", lambda: (lambda d: d[:29] + bytes([d[29] ^ 0xFF]) + d[30:])(encode(Image.fromarray(photo(30, 20)), "PNG")), DecodeError),
        ("text file", lambda: b"this is not an image, just some text\n" * 3, UnsupportedFormatError),
        ("svg", lambda: b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', UnsupportedFormatError),
        # HEIC is read since issue 19: an ftyp with no meta box is a corrupt HEIF
        ("heic-like", lambda: b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 40, DecodeError),
        ("bmff-unknown", lambda: b"\x00\x00\x00\x18ftypqt  \x00\x00\x00\x00qt  isom" + b"\x00" * 40, UnsupportedFormatError),
        ("jpeg sof bomb", lambda: _sof_bomb(), TooLargeError),
    ],
)
def test_pipeline_bad_input_is_a_typed_error(name, make, error):
    with pytest.raises(error) as err:
        optimize_bytes(make())
    assert err.value.message and err.value.stage


def _sof_bomb() -> bytes:
    data = bytearray(jpeg(photo(64, 64)))
    i = data.find(b"\xff\xc0")
    data[i + 5 : i + 9] = (65000).to_bytes(2, "big") * 2
    return bytes(data)


@pytest.mark.parametrize(
    "make",
    [
        lambda: encode(Image.new("RGB", (1, 1), (10, 20, 30)), "PNG"),
        lambda: encode(Image.new("RGB", (1, 1), (10, 20, 30)), "JPEG"),
        lambda: encode(Image.new("P", (64, 64), 0), "PNG"),
        lambda: encode(Image.fromarray(photo(64, 64)), "PNG") + b"trailing garbage" * 100,
        lambda: jpeg(photo(64, 64), exif=exif_bytes(9)),
    ],
    ids=["1x1 png", "1x1 jpeg", "one-colour palette", "data after IEND", "orientation 9"],
)
def test_pipeline_edge_inputs_succeed(make):
    out, r = optimize_bytes(make())
    assert r.status in ("optimized", "skipped")
    decode(out)


def test_pipeline_trailing_data_dropped():
    data = encode(Image.fromarray(photo(64, 64)), "PNG") + b"\x00garbage" * 500
    out, r = optimize_bytes(data)
    assert r.status == "optimized" and not out.endswith(b"garbage")


def test_pipeline_bloated_app_segment_stripped():
    base = jpeg(photo(300, 200), quality=80)
    seg = b"\xff\xe9" + (60002).to_bytes(2, "big") + bytes(range(256)) * 234 + bytes(60000 - 256 * 234)
    data = base[:2] + seg + base[2:]
    out, r = optimize_bytes(data)
    assert len(out) < len(base) * 1.05 and len(out) < len(data) / 2
    assert np.abs(np.asarray(decode(out), np.int16) - np.asarray(decode(base), np.int16)).mean() < 3


# -- metadata ---------------------------------------------------------------------------


def test_pipeline_strips_gps_and_camera_exif_by_default():
    data = jpeg(photo(400, 300), quality=95, exif=exif_bytes(1, gps=True, make="Canon"))
    out, _ = optimize_bytes(data)
    assert b"Canon" not in out and not decode(out).getexif()


def test_pipeline_keep_metadata_keeps_exif_without_orientation():
    data = jpeg(_marked(), quality=95, exif=exif_bytes(6, gps=True, make="Canon"))
    out, _ = optimize_bytes(data, Settings(keep_metadata=True))
    ex = decode(out).getexif()
    assert ex.get(0x010F) == "Canon" and 0x0112 not in ex
    assert decode(out).size == (200, 300)


# -- never larger ---------------------------------------------------------------------


def test_pipeline_never_larger_returns_input_bytes():
    data = encode(Image.new("RGB", (1, 1)), "PNG", optimize=True)
    out, r = optimize_bytes(data)
    assert r.status == "skipped" and out == data and r.bytes_out == len(data)


def test_pipeline_result_reports_stages_and_sizes():
    data = jpeg(photo(300, 200), quality=95)
    out, r = optimize_bytes(data, Settings(max_width=100))
    assert r.bytes_in == len(data) and r.bytes_out == len(out)
    assert {"probe", "decode", "resize", "encode"} <= set(r.stages)
    assert (r.width_in, r.height_in, r.width, r.height) == (300, 200, 100, 67)


@pytest.mark.parametrize("fmt", ["WEBP", "PNG"])
def test_pipeline_animated_webp_and_apng_inputs_keep_animation(fmt):
    ims = [Image.fromarray(photo(80, 60, seed=i)) for i in range(4)]
    params = {"lossless": True} if fmt == "WEBP" else {}
    data = encode(ims[0], fmt, save_all=True, append_images=ims[1:], duration=100, loop=0, **params)
    out, r = optimize_bytes(data, Settings(allow_larger=True))
    im = Image.open(io.BytesIO(out))
    assert im.format == fmt and im.n_frames == 4 and r.frames == 4


def test_pipeline_large_downscale_with_box_preshrink_stays_accurate():
    arr = photo(2400, 1600)
    out, _ = optimize_bytes(encode(Image.fromarray(arr), "PNG", compress_level=1), Settings(max_width=200))
    ref = np.asarray(Image.fromarray(arr).resize((200, 133), Image.Resampling.LANCZOS), dtype=np.int16)
    got = np.asarray(decode(out).convert("RGB"), dtype=np.int16)
    assert got.shape == ref.shape and np.abs(got - ref).mean() < 2.0
