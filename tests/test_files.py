"""optimize_file: atomic writes, in-place safety, never larger, and interruption."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from PIL import Image

from pyimgopt import Settings, optimize_file

from conftest import decode, encode, jpeg, photo, temp_files


def test_files_out_path_written_and_original_untouched(tmp_path):
    src = tmp_path / "in.jpg"
    src.write_bytes(jpeg(photo(400, 300), quality=97))
    before = src.read_bytes()
    r = optimize_file(src, tmp_path / "sub" / "dir" / "out.jpg")
    assert r.status == "optimized" and r.output.endswith("out.jpg")
    assert src.read_bytes() == before
    out = (tmp_path / "sub" / "dir" / "out.jpg").read_bytes()
    assert len(out) == r.bytes_out < len(before)
    decode(out)
    assert not temp_files(tmp_path)


def test_files_in_place_replaces_with_smaller_and_keeps_mode(tmp_path):
    src = tmp_path / "a.png"
    src.write_bytes(encode(Image.fromarray(photo(200, 100)), "PNG", compress_level=0))
    os.chmod(src, 0o640)
    size = src.stat().st_size
    r = optimize_file(src)
    assert r.status == "optimized" and src.stat().st_size < size
    assert (src.stat().st_mode & 0o777) == 0o640
    assert np.array_equal(np.asarray(decode(src.read_bytes()).convert("RGB")), photo(200, 100))


def test_files_skipped_in_place_leaves_file_untouched(tmp_path):
    src = tmp_path / "tiny.png"
    src.write_bytes(encode(Image.new("RGB", (1, 1)), "PNG", optimize=True))
    st = src.stat()
    time.sleep(0.01)
    r = optimize_file(src)
    assert r.status == "skipped"
    assert src.stat().st_mtime_ns == st.st_mtime_ns and src.stat().st_ino == st.st_ino


def test_files_skipped_copied_to_out_dir(tmp_path):
    src = tmp_path / "tiny.png"
    src.write_bytes(encode(Image.new("RGB", (1, 1)), "PNG", optimize=True))
    r = optimize_file(src, tmp_path / "out" / "tiny.png")
    assert r.status == "skipped" and (tmp_path / "out" / "tiny.png").read_bytes() == src.read_bytes()


def test_files_in_place_format_change_refused(tmp_path):
    src = tmp_path / "a.png"
    src.write_bytes(encode(Image.fromarray(photo(64, 64)), "PNG"))
    before = src.read_bytes()
    r = optimize_file(src, None, Settings(format="webp"))
    assert r.status == "failed" and r.error.code == "invalid_settings"
    assert src.read_bytes() == before


def test_files_unwritable_destination_is_io_error_without_temp(tmp_path):
    src = tmp_path / "a.jpg"
    src.write_bytes(jpeg())
    blocker = tmp_path / "file"
    blocker.write_bytes(b"x")
    r = optimize_file(src, blocker / "out.jpg")
    assert r.status == "failed" and r.error.code == "io_error" and r.error.stage == "write"
    assert not temp_files(tmp_path)


def test_files_missing_input_and_directory_are_io_errors(tmp_path):
    r = optimize_file(tmp_path / "nope.jpg", tmp_path / "o.jpg")
    assert r.status == "failed" and r.error.code == "io_error"
    r = optimize_file(tmp_path, tmp_path / "o.jpg")
    assert r.status == "failed" and r.error.code == "io_error"


def test_files_bad_input_fails_per_file_with_path(tmp_path):
    src = tmp_path / "broken.jpg"
    src.write_bytes(jpeg()[:300])
    r = optimize_file(src, tmp_path / "o.jpg")
    assert r.status == "failed" and r.error.code == "decode_failed" and r.error.path == str(src)
    assert not (tmp_path / "o.jpg").exists() and not temp_files(tmp_path)


def test_files_unicode_and_spaces_in_names(tmp_path):
    src = tmp_path / "fötö 写真 with space.jpg"
    src.write_bytes(jpeg(quality=97))
    dst = tmp_path / "out" / "fötö 写真 with space.jpg"
    assert optimize_file(src, dst).status == "optimized" and dst.exists()


_WRITER = textwrap.dedent(
    """
    import resource, signal, sys
    from pyimgopt import optimize_file
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), int(sys.argv[2])))
    r = optimize_file(sys.argv[1])
    print(r.status, r.error.code if r.error else "-", r.error.stage if r.error else "-")
    """
)


def test_files_in_place_write_cut_short_leaves_original_intact(tmp_path):
    """A write that fails half-way (file-size limit hit) never touches the original."""
    src = tmp_path / "big.png"
    src.write_bytes(encode(Image.fromarray(photo(600, 400)), "PNG", compress_level=0))
    before = src.read_bytes()
    limit = len(before) // 10  # the new file cannot be written in full
    proc = subprocess.run(
        [sys.executable, "-c", _WRITER, str(src), str(limit)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["failed", "io_error", "write"]
    assert src.read_bytes() == before
    assert not temp_files(tmp_path)


_LOOP = textwrap.dedent(
    """
    import sys
    from pyimgopt import optimize_file
    print("ready", flush=True)
    for p in sys.argv[1:]:
        optimize_file(p)
    """
)


@pytest.mark.parametrize("delay", [0.05, 0.2, 0.5])
def test_files_in_place_sigkill_never_loses_or_truncates(tmp_path, delay):
    """SIGKILL at a random point of an in-place batch: each file is its original or a valid image."""
    originals = {}
    for i in range(12):
        p = tmp_path / f"img{i}.png"
        p.write_bytes(encode(Image.fromarray(photo(300, 200, seed=i)), "PNG", compress_level=0))
        originals[p] = p.read_bytes()
    proc = subprocess.Popen(
        [sys.executable, "-c", _LOOP, *map(str, originals)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
    for p, before in originals.items():
        now = p.read_bytes()
        if now != before:
            im = decode(now)
            assert np.array_equal(np.asarray(im.convert("RGB")), np.asarray(decode(before).convert("RGB")))
            assert len(now) < len(before)


def test_files_sweeping_one_target_spares_its_neighbours_temps(tmp_path):
    """``remove_stale_temps("a.png")`` removes only ``a.png``'s temporary files: not those of
    ``a.png.png``/``a.png.webp`` beside it, nor of another long name sharing its first 100
    characters. The names are the ones :func:`atomic_write` really makes (a write cut short
    by a failing fsync leaves none, so each temp is planted by name from a real write's)."""
    import re

    from pyimgopt import files

    long_a, long_b = "x" * 120 + "a.png", "x" * 120 + "b.png"
    seen: dict[str, str] = {}
    real_replace = os.replace

    def grab(src, dst, **kw):  # record the temp name atomic_write chose
        seen[dst] = src
        return real_replace(src, dst, **kw)

    names = ["a.png", "a.png.png", "a.png.webp", long_a, long_b]
    orig = files.os.replace
    files.os.replace = grab
    try:
        for n in names:
            files.atomic_write(str(tmp_path / n), b"data")
    finally:
        files.os.replace = orig
    assert set(seen) == set(names)
    assert all(re.fullmatch(r"\..+\.[0-9a-f]{8}\.pyimgopt-tmp", t) for t in seen.values())
    assert seen[long_a] != seen[long_b] and len(seen[long_a]) < 200
    for t in seen.values():  # plant each as a dead writer's leftover
        (tmp_path / t).write_bytes(b"half")
    assert files.remove_stale_temps(str(tmp_path / "a.png")) == 1
    assert not (tmp_path / seen["a.png"]).exists()
    assert all((tmp_path / seen[n]).exists() for n in names[1:])
    assert files.remove_stale_temps(str(tmp_path / long_a)) == 1
    assert (tmp_path / seen[long_b]).exists() and not (tmp_path / seen[long_a]).exists()
    # auto: a.jpg/a.webp/... temps would go; a.png.png's and a.png.webp's are not theirs
    assert files.clean_after_lost_writer(str(tmp_path / "a.png"), auto=True) == 0
    assert (tmp_path / seen["a.png.png"]).exists() and (tmp_path / seen["a.png.webp"]).exists()
