"""Animations keep their frames and their timing (issue 13, items 6 and 7).

GIFs are built byte by byte here (local palettes, offsets, disposal methods,
transparent indices, delays, with or without a NETSCAPE block), APNG and WebP
with Pillow. The oracle reads timing back with its own small parsers of the
output containers and compares the frames libvips composites (libnsgif,
libwebp; APNG through Pillow, the only APNG reader here) from input and
output. Cost: about 2 s per backend.
"""

from __future__ import annotations

import struct
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

from pyimgopt import Settings, optimize_bytes, optimize_file

from conftest import encode
from matrix import oracle
from matrix.gifwriter import gif  # noqa: F401 (also imported from here by older scripts)

def _gif_frames_composited(data: bytes) -> list[np.ndarray]:
    """The frames as displayed, by libvips (libnsgif): never Pillow, which composites GIF
    disposal 2 with a transparent index wrong (and wrote such frames into outputs)."""
    return oracle.frames(data)


def _gif_timing(data: bytes) -> tuple[list[int], int | None]:
    """(delays in 1/100 s per image, NETSCAPE value or None), by the test's own walk."""
    pos = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    delays, loop, delay = [], None, 0
    while data[pos] != 0x3B:
        if data[pos] == 0x21:
            label = data[pos + 1]
            if label == 0xF9:
                delay = struct.unpack("<H", data[pos + 4 : pos + 6])[0]
            if label == 0xFF and data[pos + 3 : pos + 14] == b"NETSCAPE2.0":
                loop = struct.unpack("<H", data[pos + 16 : pos + 18])[0]
            pos += 2
        else:
            delays.append(delay)
            delay = 0
            lct = data[pos + 9]
            pos += 10 + (3 << ((lct & 7) + 1) if lct & 0x80 else 0) + 1
        while data[pos]:
            pos += 1 + data[pos]
        pos += 1
    return delays, loop


def _webp_timing(data: bytes) -> tuple[list[int], int]:
    pos, durations, loop = 12, [], None
    while pos + 8 <= len(data):
        fourcc, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        body = data[pos + 8 : pos + 8 + size]
        if fourcc == b"ANIM":
            loop = struct.unpack("<H", body[4:6])[0]
        elif fourcc == b"ANMF":
            durations.append(int.from_bytes(body[12:15], "little"))
        pos += 8 + size + (size & 1)
    return durations, loop


def _apng_timing(data: bytes) -> tuple[list[Fraction], int]:
    pos, delays, plays = 8, [], None
    while pos < len(data):
        length = struct.unpack(">I", data[pos : pos + 4])[0]
        ctype, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if ctype == b"acTL":
            plays = struct.unpack(">I", body[4:8])[0]
        elif ctype == b"fcTL":
            num, den = struct.unpack(">HH", body[20:24])
            delays.append(Fraction(num, den or 100))
        pos += 12 + length
    return delays, plays


# -- item 6: GIF -> GIF keeps every frame, palette, disposal and delta ----------------


def _rich_gif(loop=0) -> bytes:
    rng = np.random.default_rng(5)
    pal_a = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (9, 9, 9)]
    pal_b = [(200, 100, 50), (50, 100, 200), (10, 250, 10), (250, 10, 250)]
    pal_c = [(i * 16, 255 - i * 16, (i * 40) % 256) for i in range(16)]  # a third, local palette
    frames = [
        {"pixels": rng.integers(0, 5, (40, 48)), "palette": pal_a, "delay": 10, "disposal": 1},
        {"pixels": rng.integers(0, 4, (12, 16)), "palette": pal_b, "x": 5, "y": 7, "delay": 0,
         "disposal": 2, "transparent": 3},
        {"pixels": rng.integers(0, 16, (20, 10)), "palette": pal_c, "x": 30, "y": 10, "delay": 7,
         "disposal": 3},
        {"pixels": rng.integers(0, 4, (8, 8)), "palette": pal_b, "x": 1, "y": 1, "delay": 25,
         "disposal": 1, "transparent": 0},
    ]
    return gif(48, 40, frames, loop=loop, comment=b"made by a test")


def _many_colour_gif() -> bytes:
    """Two 256-colour local palettes: the second frame shown holds 400+ colours, which a
    re-quantisation to one palette per frame cannot keep."""
    rng = np.random.default_rng(9)
    pal_a = [tuple(int(v) for v in c) for c in rng.integers(0, 256, (256, 3))]
    pal_b = [tuple(int(v) for v in c) for c in rng.integers(0, 256, (256, 3))]
    yy, xx = np.mgrid[0:64, 0:96]
    frames = [
        {"pixels": (xx + 96 * (yy // 2)) % 256, "palette": pal_a, "delay": 10, "disposal": 1},
        {"pixels": (xx[:32, :48] * 5 + yy[:32, :48]) % 256, "palette": pal_b, "x": 40, "y": 20,
         "delay": 20, "disposal": 1},
    ]
    return gif(96, 64, frames, loop=0)


@pytest.mark.parametrize("build", [_rich_gif, _many_colour_gif])
def test_animation_gif_to_gif_keeps_every_frame_exactly(build):
    data = build()
    out, r = optimize_bytes(data)
    src, got = _gif_frames_composited(data), _gif_frames_composited(out)
    assert len(got) == len(src) >= 2
    for a, b in zip(src, got):
        assert np.array_equal(a, b)
    assert len(out) <= len(data) and b"made by a test" not in out
    assert r.ssim in (None, 1.0)
    assert _gif_timing(out) == _gif_timing(data)


def test_animation_bloated_gif_is_reencoded_only_when_exact():
    """A GIF stored with needless LZW clear codes: an exact re-encode is much smaller."""
    rng = np.random.default_rng(2)
    pal = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (9, 9, 9)]

    def blocks(h, w, n, b):
        return np.kron(rng.integers(0, n, (h // b + 1, w // b + 1)), np.ones((b, b), int))[:h, :w]

    frames = [{"pixels": blocks(120, 160, 5, 8), "palette": pal, "delay": 10, "disposal": 1},
              {"pixels": blocks(40, 60, 4, 4), "palette": pal[:4], "x": 5, "y": 7, "delay": 0,
               "disposal": 2, "transparent": 3}]
    data = gif(160, 120, frames, loop=0)
    out, r = optimize_bytes(data)
    assert len(out) < 0.8 * len(data) and r.ssim == 1.0
    for a, b in zip(_gif_frames_composited(data), _gif_frames_composited(out), strict=True):
        assert np.array_equal(a, b)
    assert _gif_timing(out) == _gif_timing(data)


def test_animation_gif_timing_of_the_rich_gif():
    assert _gif_timing(_rich_gif()) == ([10, 0, 7, 25], 0)


def test_animation_resized_gif_reports_no_unmeasured_ssim():
    data = _rich_gif()
    out, r = optimize_bytes(data, Settings(max_width=24))
    assert r.width == 24 and r.frames == 4
    assert r.ssim is None  # quantised frames: not claimed as 1.0 without a measurement
    out, r = optimize_bytes(data, Settings(max_width=24, target_ssim=0.5))
    assert r.ssim is not None and r.ssim < 1.0


# -- item 7: loop counts, 0 ms frames and fractional delays ---------------------------


def _two_frame_gif(loop, delays=(0, 50)) -> bytes:
    pal = [(255, 0, 0), (0, 0, 255)]
    frames = [{"pixels": np.full((16, 16), i % 2), "palette": pal, "delay": d // 10} for i, d in enumerate(delays)]
    return gif(16, 16, frames, loop=loop)


@pytest.mark.parametrize("loop, plays", [(None, 1), (0, 0), (2, 3)])
def test_animation_gif_loop_count_becomes_webp_plays(loop, plays):
    out, r = optimize_bytes(_two_frame_gif(loop, (0, 50, 30)), Settings(format="webp"))
    durations, got = _webp_timing(out)
    assert got == plays
    assert durations == [0, 50, 30]  # a 0 ms frame stays 0 ms


@pytest.mark.parametrize("loop", [None, 0, 3])
def test_animation_reencoded_gif_keeps_loop_block_and_zero_delays(loop):
    data = _two_frame_gif(loop, (0, 50, 0, 120))
    out, r = optimize_bytes(data, Settings(max_width=8))  # resized: a real re-encode
    assert r.width == 8
    delays, got = _gif_timing(out)
    assert got == loop  # no NETSCAPE block in, none out: it plays once
    assert delays == [0, 5, 0, 12]


def _apng(delays_ms, plays=0) -> bytes:
    frames = [Image.new("RGB", (16, 16), (i * 60, 255 - i * 60, 0)) for i in range(len(delays_ms))]
    return encode(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=list(delays_ms), loop=plays)


def test_animation_apng_fractional_delays_are_kept_exactly():
    data = _apng([1000 / 30, 1000 / 30, 40], plays=2)
    assert _apng_timing(data) == ([Fraction(1, 30), Fraction(1, 30), Fraction(1, 25)], 2)
    out, r = optimize_bytes(data, Settings(max_width=8))
    assert r.frames == 3
    assert _apng_timing(out) == ([Fraction(1, 30), Fraction(1, 30), Fraction(1, 25)], 2)


def test_animation_apng_to_webp_rounds_running_time_and_says_so():
    data = _apng([1000 / 30] * 3 + [0], plays=1)
    out, r = optimize_bytes(data, Settings(format="webp"))
    durations, plays = _webp_timing(out)
    assert plays == 1 and durations == [33, 34, 33, 0]  # running time 33, 67, 100 ms
    assert any("whole milliseconds" in n for n in r.notes)


def test_animation_webp_to_gif_is_not_possible_but_webp_plays_survive():
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 255, 0))]
    data = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=[0, 70], loop=4,
                  lossless=True)
    out, r = optimize_bytes(data, Settings(max_width=8))
    assert _webp_timing(out) == ([0, 70], 4)


def test_animation_avif_says_it_loops_forever():
    from pyimgopt.pipeline.encode import has_avif

    if not has_avif():
        pytest.skip("this Pillow cannot write AVIF")
    out, r = optimize_bytes(_two_frame_gif(None, (40, 50)), Settings(format="avif"))
    assert r.frames == 2
    assert any("loop forever" in n for n in r.notes)


# -- GIF disposal 2 with a transparent index, as browsers (and libnsgif) show it ------


def _disposal_2_gif() -> bytes:
    """Frame 1 is cleared after it is shown (disposal 2) and has a transparent index; frame 2
    has holes (its own transparent index) through which the cleared area must show
    *transparent*. Pillow composites it with frame 1's colour instead."""
    w, h = 160, 120
    y, x = np.mgrid[0:h, 0:w]
    f0 = ((x // 8 + y // 8) % 4).astype(np.uint8)
    p1 = np.full((60, 80), 1, np.uint8)
    p1[20:40, 20:60] = 3
    p2 = ((np.mgrid[0:50, 0:70][1] // 5) % 3 + 1).astype(np.uint8)
    p2[:10] = 0
    return gif(w, h, [
        {"pixels": f0, "palette": [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)],
         "delay": 10, "disposal": 1},
        {"pixels": p1, "palette": [(0, 0, 0), (10, 200, 30), (1, 1, 1), (200, 0, 200)], "x": 20,
         "y": 15, "delay": 10, "disposal": 2, "transparent": 3},
        {"pixels": p2, "palette": [(9, 9, 9), (50, 60, 70), (250, 240, 230), (128, 0, 255)],
         "x": 60, "y": 40, "delay": 10, "disposal": 1, "transparent": 0},
    ], loop=0)


@pytest.mark.parametrize("build", [_disposal_2_gif, _rich_gif])
@pytest.mark.parametrize("settings", [
    Settings(), Settings(effort=9), Settings(format="webp", lossless=True), Settings(format="png"),
    Settings(format="auto"), Settings(keep_metadata=True)],
    ids=["keep", "effort9", "webp-lossless", "apng", "auto", "keep-metadata"])
def test_animation_disposal_2_frames_are_what_a_browser_shows(build, settings):
    """Every frame of every exact output equals libvips' (libnsgif's) frames of the source."""
    data = build()
    want = oracle.frames(data)
    assert any((f[..., 3] == 0).any() for f in want[1:])  # the source has transparent holes
    out, r = optimize_bytes(data, settings)
    got = oracle.frames(out)
    assert len(got) == len(want)
    assert oracle.same_frames(got, want) == [0] * len(want), (r.format_out, r.notes)
    assert r.ssim in (None, 1.0)


def test_animation_resized_disposal_2_gif_keeps_its_holes():
    """Resized (a real re-encode): the area disposal 2 cleared stays transparent."""
    data = _disposal_2_gif()
    src = oracle.frames(data)
    out, r = optimize_bytes(data, Settings(max_width=80))
    got = oracle.frames(out)
    assert len(got) == 3 and got[0].shape[:2] == (60, 80)
    for a, b in zip(src, got):
        want = oracle.resize_ref(a.astype(float), (80, 60))[..., 3] >= 128
        assert ((b[..., 3] > 0) != want).mean() < 0.02  # at most the edge pixels differ


# -- issue: keep_metadata re-quantised GIFs; the frame sample missed the last frame ---


@pytest.mark.parametrize("where", ["bytes", "in_place_auto", "in_place"])
def test_animation_keep_metadata_gif_keeps_every_frame(tmp_path, where):
    """With keep_metadata the frame-for-frame GIF is still the GIF candidate: the frames of a
    GIF with 256 colours per frame (over 256 shown) are never re-quantised."""
    data = _many_colour_gif()
    if where == "bytes":
        out, r = optimize_bytes(data, Settings(keep_metadata=True))
    else:
        src = tmp_path / "a.gif"
        src.write_bytes(data)
        fmt = "auto" if where == "in_place_auto" else "keep"
        r = optimize_file(src, None, Settings(format=fmt, keep_metadata=True))
        out = src.read_bytes()
    assert r.status in ("optimized", "skipped"), r
    assert oracle.same_frames(oracle.frames(out), oracle.frames(data)) == [0, 0]


@pytest.mark.parametrize("n", [2, 3, 4, 5, 9])
def test_animation_measure_frames_judges_the_last_frame(n):
    """A lossy animation is scored on sampled frames, the last one always among them."""
    from pyimgopt.pipeline import quality
    from pyimgopt.pipeline.decode import Decoded

    rng = np.random.default_rng(n)
    frames = [Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)) for _ in range(n)]
    good = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    broken = frames[:-1] + [Image.fromarray(255 - np.asarray(frames[-1]))]
    bad = encode(broken[0], "WEBP", save_all=True, append_images=broken[1:], lossless=True)
    dec = Decoded(frames=frames)
    assert quality.measure_frames(good, dec, (255, 255, 255)) == pytest.approx(1.0)
    assert quality.measure_frames(bad, dec, (255, 255, 255)) < 0.5
    assert n - 1 in quality.sample_frames(n) and 0 in quality.sample_frames(n)


def test_animation_decoder_durations_are_taken_as_they_are():
    """What the decoder says is only the fallback of the container's own timing, and it is
    taken as it is: a 0 ms frame is not made 100 ms, nor a fraction truncated."""
    from pyimgopt.pipeline.decode import decode
    from pyimgopt.pipeline.probe import probe

    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 255, 0))]
    data = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=[0, 70],
                  lossless=True)
    dec = decode(probe(data, Settings()), all_frames=True, draft_size=None, keep_palette=False,
                 keep_exif=False)
    assert dec.durations == [0, 70]


def _apng_over() -> bytes:
    """Semi-transparent frames blended OVER the canvas (with every dispose op): where Pillow
    blends the alpha channel like a colour, an opaque pixel under a half-transparent one
    came out half transparent."""
    rng = np.random.default_rng(1)
    frames = []
    for i in range(4):
        a = rng.integers(0, 256, (12, 16, 4)).astype(np.uint8)
        a[..., 3] = np.where(rng.random((12, 16)) < 0.3, 0, rng.integers(60, 256, (12, 16)))
        if i == 0:
            a[..., 3] = 255
        frames.append(Image.fromarray(a, "RGBA"))
    return encode(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=40,
                  disposal=[0, 2, 1, 0], blend=[0, 1, 1, 1], default_image=False)


@pytest.mark.parametrize("settings", [Settings(), Settings(format="webp", lossless=True),
                                      Settings(format="auto")], ids=["keep", "webp-lossless", "auto"])
def test_animation_apng_blend_over_is_composited_as_the_specification_says(settings):
    data = _apng_over()
    want = oracle.frames(data)  # libvips decodes each region; blended per the APNG spec
    out, r = optimize_bytes(data, settings)
    got = oracle.frames(out)
    assert len(got) == len(want) == 4
    assert oracle.same_frames(got, want) == [0] * 4, (r.format_out, r.notes)
