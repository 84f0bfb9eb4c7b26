"""No input can end the process: native codecs on hostile bytes, each case in a child.

A corrupt JPEG that Pillow decodes made mozjpeg's lossless pass call libjpeg's
``error_exit``, which calls ``exit()``: the sidecar (or any program embedding
pyimgopt) died, and through the CLI the file ended as ``worker_lost`` after
killing three sidecars. An ``except`` cannot catch that, so these tests run
each case in a forked child (of a fresh interpreter, ``tests/fork_cases.py``)
and require it to *exit normally* with a typed result: ``optimize_bytes``
returned, or raised a :class:`PyimgoptError` other than ``internal``.

- the JPEG that triggers it is built here byte by byte (a baseline 8x8 gray
  JPEG whose DC difference has Huffman category 12: libjpeg-turbo's decoder
  accepts it, an encoder may not write it, so mozjpeg's re-encode of the
  coefficients stops with "DCT coefficient out of range"), and the test first
  checks that it really ends a process calling mozjpeg directly;
- a bounded mutation fuzz over small JPEG (baseline, progressive, restart
  markers), PNG, GIF, WebP, TIFF, AVIF, JPEG XL and HEIC files, every case in
  its own child process under rotating settings;
- the CLI with one real sidecar: the file gets a result, the sidecar lives.

Cost (measured on the shared 2-core machine, load ~6): the fuzz runs 238 cases
(14 seed files x 17 mutations), about 12 s of CPU per backend (21-25 s wall
under that load; marked ``slow``); the other tests about 4 s together (the
CLI one starts a sidecar).
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import pickle
import random
import struct
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from pyimgopt import Settings
from pyimgopt.pipeline import boost, heif, jxl
from pyimgopt.pipeline.encode import has_avif

from conftest import encode

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload


def dc_category_jpeg(category: int = 12) -> bytes:
    """A 138-byte baseline gray JPEG (one 8x8 block) whose DC difference uses ``category`` bits.

    One DC Huffman code (``0``) for symbol ``category``, one AC code (``0``)
    for EOB, all quantisers 1. Category 12 (a DC of 2048) is past what an
    8-bit encoder may write (11 bits): decoders accept it, mozjpeg's lossless
    pass cannot re-encode it.
    """
    one_code = bytes([1] + [0] * 15)
    dht = _segment(0xC4, b"\x00" + one_code + bytes([category]) + b"\x10" + one_code + b"\x00")
    bits = "0" + "1" + "0" * (category - 1) + "0"  # DC code, the value 2^(c-1), AC EOB
    bits += "1" * (-len(bits) % 8)
    scan = bytes(int(bits[i:i + 8], 2) for i in range(0, len(bits), 8))
    return (b"\xff\xd8" + _segment(0xDB, b"\x00" + bytes([1] * 64))
            + _segment(0xC0, struct.pack(">BHHB", 8, 8, 8, 1) + b"\x01\x11\x00")
            + dht + _segment(0xDA, b"\x01\x01\x00\x00\x3f\x00") + scan + b"\xff\xd9")


def _in_children(cases: list[tuple]) -> list[dict]:
    """Each case in its own forked child of a fresh interpreter (``tests/fork_cases.py``):
    ``{"ok", "how", "said"}`` per case."""
    run = subprocess.run([sys.executable, str(pathlib.Path(__file__).with_name("fork_cases.py"))],
                         input=pickle.dumps(cases), capture_output=True, timeout=600)
    assert run.returncode == 0, run.stderr.decode(errors="replace")[-2000:]
    rows = [json.loads(line) for line in run.stdout.splitlines() if line.strip()]
    assert len(rows) == len(cases), run.stderr.decode(errors="replace")[-2000:]
    return rows


def test_native_isolation_crafted_jpeg_really_ends_a_process_calling_mozjpeg():
    """The recipe is live: Pillow decodes the JPEG, mozjpeg called directly ends its process."""
    if not boost.available("mozjpeg"):
        pytest.skip("mozjpeg-lossless-optimization not installed: nothing to isolate")
    data = dc_category_jpeg()
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        assert im.size == (8, 8)
    (row,) = _in_children([("mozjpeg", data)])
    assert not row["ok"] and row["how"] == "exit status 1", row


_ROUTES = {"default": Settings(), "lossless": Settings(lossless=True),
           "effort9": Settings(effort=9), "auto": Settings(format="auto")}


def test_native_isolation_corrupt_jpeg_is_a_typed_result_not_an_exit():
    """Every route that reaches mozjpeg's lossless pass survives it: a result, and a note
    when the pass was needed and refused."""
    data = dc_category_jpeg()
    rows = _in_children([("optimize", data, s) for s in _ROUTES.values()])
    for name, row in zip(_ROUTES, rows):
        assert row["ok"], (name, row)
        status, *notes = row["said"].split("|")
        assert status in ("optimized", "skipped"), (name, row)
        if name == "lossless" and boost.available("mozjpeg"):
            assert any("mozjpeg's lossless pass refused" in n and "out of range" in n
                       for n in notes), notes


# -- the fuzz ------------------------------------------------------------------------


def _seeds() -> dict[str, bytes]:
    rng = np.random.default_rng(5)
    a = np.dstack([np.add.outer(np.arange(40), np.arange(56)) % 256, rng.integers(0, 256, (40, 56)),
                   np.full((40, 56), 90)]).astype(np.uint8)
    rgba = np.dstack([a, (np.arange(56)[None, :] * 4 + np.zeros((40, 1))).astype(np.uint8)])
    im, ima = Image.fromarray(a), Image.fromarray(rgba)
    frames = [Image.fromarray(np.roll(a, 9 * i, axis=1)).quantize(16) for i in range(3)]
    anim = io.BytesIO()
    frames[0].save(anim, "GIF", save_all=True, append_images=frames[1:], duration=[40, 60, 80],
                   disposal=[1, 2, 3], transparency=0, loop=0)
    seeds = {
        "jpeg": encode(im, "JPEG", quality=90),
        "jpeg-prog": encode(im, "JPEG", quality=80, progressive=True),
        "jpeg-rst": encode(im, "JPEG", quality=80, restart_marker_blocks=2),
        "png": encode(ima, "PNG"),
        "png-palette": encode(frames[0], "PNG", transparency=0),
        "gif": anim.getvalue(),
        "webp": encode(ima, "WEBP", quality=80),
        "webp-lossless": encode(ima, "WEBP", lossless=True),
        "tiff": encode(im, "TIFF", compression="tiff_deflate"),
        "tiff-raw": encode(ima, "TIFF"),
    }
    if has_avif():
        seeds["avif"] = encode(ima, "AVIF", quality=70)
    if jxl.available():
        from heif_jxl import jxl_pixels

        seeds["jxl"] = jxl_pixels(im, lossless=True)
        seeds["jxl-lossy"] = jxl_pixels(im, quality=80)
    if heif.available():
        from heif_jxl import heic

        seeds["heic"] = heic(im)
    return seeds


#: Mutated cases per seed file.
PER_SEED = 17
_SETTINGS = [Settings(), Settings(lossless=True), Settings(format="png"), Settings(format="auto"),
             Settings(format="webp", max_width=20)]


def _mutate(seed: bytes, rnd: random.Random) -> bytes:
    d = bytearray(seed)
    for _ in range(rnd.choice([1, 2, 4, 8])):
        # mostly the headers and the first coded data, where parsers decide things
        p = rnd.randrange(min(len(d), 2000)) if rnd.random() < 0.6 else rnd.randrange(len(d))
        d[p] = rnd.randrange(256)
    if rnd.random() < 0.2:
        d = d[: rnd.randrange(10, len(d))]
    return bytes(d)


@pytest.mark.slow
def test_native_isolation_mutation_fuzz_never_ends_the_process():
    """Each mutated file runs in its own child, which must end normally with a typed result."""
    rnd = random.Random(20240538)  # on main this stream hit the mozjpeg exit (jpeg-prog #16)
    cases, names = [], []
    for name, seed in _seeds().items():
        for i in range(PER_SEED):
            settings = _SETTINGS[i % len(_SETTINGS)]
            cases.append(("optimize", _mutate(seed, rnd), settings))
            names.append(f"{name}#{i} ({settings.format}, lossless={settings.lossless})")
    rows = _in_children(cases)
    bad = [f"{n}: {r['how']} {r['said'][:200]}" for n, r in zip(names, rows) if not r["ok"]]
    assert not bad, bad
    outcomes: dict[str, int] = {}
    for r in rows:
        key = r["said"].split("|")[0]
        outcomes[key] = outcomes.get(key, 0) + 1
    # the fuzz reached the codecs: some files still optimise, some fail typed
    assert outcomes.get("optimized", 0) and outcomes.get("decode_failed", 0), outcomes


def test_native_isolation_cli_sidecar_survives_the_corrupt_jpeg(tmp_path):
    """Through the CLI and a real sidecar: a result for the file, not ``worker_lost`` (poison)."""
    src = tmp_path / "in" / "corrupt.jpg"
    src.parent.mkdir()
    src.write_bytes(dc_category_jpeg())
    run = subprocess.run([sys.executable, "-m", "pyimgopt", "optimize", str(src), "-o",
                          str(tmp_path / "out"), "--lossless", "-j", "1", "--json",
                          "--no-progress", "--state-dir", str(tmp_path / "state")],
                         capture_output=True, text=True, timeout=120)
    rows = [json.loads(x) for x in run.stdout.splitlines() if x.startswith("{")]
    result = next(r for r in rows if r.get("type") == "result")
    assert run.returncode == 0 and result["status"] in ("optimized", "skipped"), (result, run.stderr)
    assert (tmp_path / "out" / "corrupt.jpg").read_bytes()[:2] == b"\xff\xd8"
