"""Corpus-wide sweeps over ../shared/corpus (skipped with a reason when absent).

One run of ``pyimgopt optimize --json`` over the whole corpus, then checks on
what it wrote: every image optimised or skipped, outputs decode and are never
larger, bad files fail with the code their manifest implies, colours and
orientation are right, private metadata is gone.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps

from pyimgopt import Settings, optimize_file

from conftest import temp_files

pytestmark = pytest.mark.corpus

# What each kind of bad file must fail with, when its manifest says "error".
BAD_KIND_CODES = {
    "empty": {"decode_failed"},
    "truncated": {"decode_failed"},
    "corrupt": {"decode_failed"},
    "decompression_bomb": {"too_large"},
    "frame_bomb": {"too_large"},
    "not_an_image": {"unsupported_format"},
    "unsupported_format": {"unsupported_format"},
}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, request):
    corpus = request.getfixturevalue("corpus")
    out = tmp_path_factory.mktemp("corpus-out")
    proc = subprocess.run(
        [sys.executable, "-m", "pyimgopt", "optimize", str(corpus), "-o", str(out), "--json"],
        capture_output=True, text=True, timeout=900,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    results = {r["input"]: r for r in records if r["type"] == "result"}
    return corpus, out, results, records[-1], proc.returncode


@pytest.fixture(scope="module")
def manifests(request):
    corpus = request.getfixturevalue("corpus")
    good = json.loads((corpus / "MANIFEST.json").read_text())
    bad = json.loads((corpus / "bad" / "MANIFEST.json").read_text())
    return good, bad


def test_corpus_every_image_optimized_or_skipped_and_decodes(sweep, manifests):
    corpus, out, results, summary, _ = sweep
    good, _ = manifests
    for entry in good:
        r = results[str(corpus / entry["file"])]
        assert r["status"] in ("optimized", "skipped"), r
        data = (out / entry["file"]).read_bytes()
        assert len(data) == r["bytes_out"] <= r["bytes_in"] == entry["bytes"]
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    assert summary["bytes_out"] < summary["bytes_in"]
    assert not temp_files(out)


def test_corpus_bad_files_as_the_manifest_expects(sweep, manifests):
    corpus, out, results, summary, code = sweep
    _, bad = manifests
    for entry in bad:
        r = results[str(corpus / "bad" / entry["file"])]
        if entry["expected"] == "ok":
            assert r["status"] in ("optimized", "skipped"), (entry["file"], r)
            assert (out / "bad" / entry["file"]).is_file()
        elif entry["expected"] == "error":
            assert r["status"] == "failed", (entry["file"], r)
            assert r["error"]["code"] in BAD_KIND_CODES[entry["kind"]], (entry["file"], r)
            assert r["error"]["message"]
            assert not (out / "bad" / entry["file"]).exists()
        else:
            assert r["status"] in ("optimized", "skipped", "failed"), r
            if r["status"] == "failed":
                assert r["error"]["code"] == "decode_failed"
    assert code == 1  # some bad files fail, and the batch still finished


def test_corpus_unicode_name_kept(sweep):
    corpus, out, results, *_ = sweep
    assert (out / "bad" / "fötö 写真.jpg").is_file()
    assert (out / "bad" / "photo with spaces.png").is_file()


def test_corpus_exif_rotated_photo_comes_out_upright(sweep):
    corpus, out, *_ = sweep
    name = "photo_fallen_leaf_exif_orientation6.jpg"
    with Image.open(corpus / name) as src:
        ref = np.asarray(ImageOps.exif_transpose(src).convert("RGB"), np.int16)
    with Image.open(out / name) as im:
        got = np.asarray(im.convert("RGB"), np.int16)
        assert im.getexif().get(0x0112) in (None, 1)
    assert got.shape == ref.shape and ref.shape[1] > ref.shape[0]
    assert np.abs(got - ref).mean() < 4


@pytest.mark.parametrize("name", ["photo_ladybird_prophoto_icc.jpg", "photo_rocket_small_adobergb.jpg"])
def test_corpus_wide_gamut_colours_match_profile_rendering(sweep, name):
    corpus, out, *_ = sweep
    with Image.open(corpus / name) as src:
        prof = ImageCms.ImageCmsProfile(io.BytesIO(src.info["icc_profile"]))
        ref = ImageCms.profileToProfile(
            src.convert("RGB"), prof, ImageCms.createProfile("sRGB"),
            renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
        )
        naive = np.asarray(src.convert("RGB"), np.float64)
    ref = np.asarray(ref, np.float64)
    with Image.open(out / name) as im:
        got = np.asarray(im.convert("RGB"), np.float64)
    h, w = ref.shape[:2]
    for y, x in [(h // 4, w // 4), (h // 2, w // 2), (3 * h // 4, 3 * w // 4)]:
        sl = (slice(y - 16, y + 16), slice(x - 16, x + 16))
        assert np.abs(got[sl].mean((0, 1)) - ref[sl].mean((0, 1))).max() < 4
    assert np.abs(got - ref).mean() < np.abs(naive - ref).mean()


@pytest.mark.parametrize("name", ["photo_colorful_cups_exif_gps_icc.jpg", "photo_storm_medium_canon_exif.jpg"])
def test_corpus_gps_and_camera_exif_gone(sweep, name):
    corpus, out, *_ = sweep
    with Image.open(corpus / name) as src:
        assert src.getexif()
    with Image.open(out / name) as im:
        ex = im.getexif()
        assert not ex.get_ifd(0x8825) and 0x010F not in ex and 0x0110 not in ex
        assert "xmp" not in im.info and "comment" not in im.info


@pytest.mark.parametrize("fit", ["inside", "cover", "contain", "fill"])
def test_corpus_resize_dimensions_obey_fit(corpus, manifests, tmp_path, fit):
    good, _ = manifests
    s = Settings(max_width=320, max_height=240, fit=fit, format="webp")
    for entry in good[::3]:
        r = optimize_file(corpus / entry["file"], tmp_path / (entry["file"] + ".webp"), s)
        assert r.status != "failed", r
        w, h = r.width, r.height
        if fit == "inside":
            assert w <= 320 and h <= 240 and (w == 320 or h == 240 or (w, h) == (r.width_in, r.height_in))
        elif fit in ("cover", "contain", "fill"):
            if fit == "contain" or (entry["width"] >= 320 and entry["height"] >= 240):
                assert (w, h) == (320, 240), (entry["file"], w, h)
        with Image.open(tmp_path / (entry["file"] + ".webp")) as im:
            assert im.size == (w, h)


def test_corpus_interrupted_in_place_keeps_originals(corpus, tmp_path):
    import shutil
    import signal
    import time

    names = ["photo_storm_medium_canon_exif.jpg", "photo_astronaut_as_png.png", "photo_kite_16bit_rgb.png"]
    for n in names:
        shutil.copy(corpus / n, tmp_path / n)
    before = {n: (tmp_path / n).read_bytes() for n in names}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyimgopt", "optimize", "--in-place", "-j", "1", *[str(tmp_path / n) for n in names]],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    time.sleep(0.8)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    for n in names:
        data = (tmp_path / n).read_bytes()
        if data != before[n]:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
            assert len(data) < len(before[n])
