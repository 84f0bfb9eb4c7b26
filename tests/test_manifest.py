"""The optimisation manifest (issue 20): a re-run skips what is done (``unchanged``).

One real router with one real sidecar serves the module (``Client.local``);
every test works in its own folders. The oracle never asks the manifest:
it reads files, their bytes and ``stat`` mtimes, and decodes with Pillow.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
from PIL import Image

from conftest import decode, encode, jpeg, photo, temp_files
from pyimgopt import Settings
from pyimgopt.client import Client
from pyimgopt.manifest import MANIFEST_NAME, Manifest, content_hash, marker_key
from pyimgopt.pipeline import marker, optimize_bytes
from pyimgopt.router import RouterConfig

# manifest, router, journal and CLI machinery: the kernels play no part (conftest's pure pass)
pytestmark = pytest.mark.one_backend


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    return tmp_path_factory.mktemp("state")


@pytest.fixture(scope="module")
def client(state):
    c = Client.local(workers=1, config=RouterConfig(recover=False), state_dir=str(state))
    yield c
    c.close()


def make_folder(root, n=4):
    """``n`` small images of three formats (different pixels each) and a text file."""
    root.mkdir(parents=True)
    for i in range(n):
        arr = photo(96, 64, seed=i)
        if i % 3 == 0:
            (root / f"p{i}.jpg").write_bytes(jpeg(arr, quality=97))
        elif i % 3 == 1:
            (root / f"p{i}.png").write_bytes(encode(Image.fromarray(arr), "PNG", compress_level=0))
        else:
            (root / f"p{i}.webp").write_bytes(encode(Image.fromarray(arr), "WEBP", quality=100))
    (root / "notes.txt").write_text("not an image")


def snapshot(root):
    """path -> (sha256, mtime_ns, inode) of every file under ``root``."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            st = p.stat()
            out[str(p.relative_to(root))] = (hashlib.sha256(p.read_bytes()).hexdigest(), st.st_mtime_ns,
                                             st.st_ino)
    return out


def run(client, paths, settings, **kw):
    results = client.submit([str(p) for p in paths], settings, **kw).wait(60)
    return {os.path.basename(r.input): r for r in results}


def test_manifest_rerun_to_folder_is_unchanged_untouched_then_redoes_only_what_changed(tmp_path, client, state):
    src, out = tmp_path / "in", tmp_path / "out"
    make_folder(src)
    s = Settings(quality=80)
    first = run(client, [src], s, out_dir=str(out))
    assert {r.status for r in first.values()} <= {"optimized", "skipped"} and len(first) == 4
    before = snapshot(out)

    again = run(client, [src], s, out_dir=str(out))
    assert {r.status for r in again.values()} == {"unchanged"}
    assert snapshot(out) == before  # nothing rewritten: same bytes, mtimes and inodes
    for name, r in again.items():
        assert "decode" not in r.stages and r.input_hash == first[name].input_hash
        assert (r.bytes_out, r.format_out, r.width) == (first[name].bytes_out, first[name].format_out,
                                                         first[name].width)
        assert r.output == first[name].output

    # one input changed: only it is redone
    (src / "p1.png").write_bytes(encode(Image.fromarray(photo(96, 64, seed=99)), "PNG"))
    third = run(client, [src], s, out_dir=str(out))
    assert third["p1.png"].status in ("optimized", "skipped")
    assert {n for n, r in third.items() if r.status == "unchanged"} == set(first) - {"p1.png"}
    assert np.array_equal(np.asarray(decode((out / "p1.png").read_bytes()).convert("RGB")),
                          photo(96, 64, seed=99))

    # an output edited by hand is not "done" any more: redone
    (out / "p0.jpg").write_bytes(jpeg(photo(96, 64, seed=5), quality=50))
    assert run(client, [src], s, out_dir=str(out))["p0.jpg"].status == "optimized"

    # other settings: every file redone; --force: every file redone
    assert {r.status for r in run(client, [src], Settings(quality=70), out_dir=str(out)).values()} \
        <= {"optimized", "skipped"}
    assert {r.status for r in run(client, [src], s, out_dir=str(out), force=True).values()} \
        <= {"optimized", "skipped"}
    assert (state / MANIFEST_NAME).is_file() and not temp_files(tmp_path)


def test_manifest_in_place_rerun_is_unchanged_and_leaves_the_file_alone(tmp_path, client):
    src = tmp_path / "in"
    make_folder(src, 3)
    s = Settings()
    first = run(client, [src], s, in_place=True)
    assert first["p0.jpg"].status == "optimized"
    before = snapshot(src)
    again = run(client, [src], s, in_place=True)
    assert {r.status for r in again.values()} == {"unchanged"}
    assert snapshot(src) == before
    # the in-place output is the input: its hash is the recorded output hash
    for name, r in again.items():
        assert r.input_hash == content_hash((src / name).read_bytes()) == first[name].output_hash


def test_manifest_an_output_given_as_input_is_recognised_and_copied(tmp_path, client):
    src, out, out2 = tmp_path / "in", tmp_path / "out", tmp_path / "out2"
    make_folder(src, 3)
    s = Settings()
    run(client, [src], s, out_dir=str(out))
    again = run(client, [out], s, out_dir=str(out2))
    assert {r.status for r in again.values()} == {"unchanged"}
    for name, r in again.items():
        assert "decode" not in r.stages and r.bytes_in == r.bytes_out
        assert (out2 / name).read_bytes() == (out / name).read_bytes()  # copied, not re-encoded
    # another setting: the output is not "done" for it
    other = run(client, [out], Settings(quality=60), out_dir=str(tmp_path / "out3"))
    assert "unchanged" not in {r.status for r in other.values()}


def test_manifest_in_file_marker_survives_a_copy_without_the_manifest(tmp_path, client):
    src, out = tmp_path / "in", tmp_path / "out"
    make_folder(src, 3)  # jpg, png, webp
    s = Settings(mark=True)
    first = run(client, [src], s, out_dir=str(out))
    key = marker_key(s)
    for name in ("p0.jpg", "p1.png"):
        data = (out / name).read_bytes()
        assert first[name].status == "optimized" and marker.check(data, key), name
        start, end, _ = marker.find(data)
        bare = data[:start] + data[end:]
        assert end - start == {"p0.jpg": 48, "p1.png": 57}[name]  # the README's byte costs
        # a viewer sees the same image with or without the marker
        assert np.array_equal(np.asarray(decode(data)), np.asarray(decode(bare)))
    # copied to another machine: a fresh router, no manifest, an in-place run
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("p0.jpg", "p1.png"):
        (copy / name).write_bytes((out / name).read_bytes())
    before = snapshot(copy)
    with Client.local(workers=0, config=RouterConfig(recover=False, manifest=False)) as fresh:
        res = run(fresh, [copy], s, in_place=True)
        assert {r.status for r in res.values()} == {"unchanged"} and snapshot(copy) == before
        # one byte of the image edited: the marker no longer matches, the file runs
        data = bytearray((copy / "p1.png").read_bytes())
        Image.fromarray(photo(96, 64, seed=7)).save(copy / "p1.png", pnginfo=None)
        res = run(fresh, [copy], s, in_place=True)
        assert res["p1.png"].status == "optimized" and res["p0.jpg"].status == "unchanged"
        # other settings ignore the marker
        assert run(fresh, [copy], Settings(mark=True, quality=50), in_place=True)["p0.jpg"].status \
            != "unchanged"
    assert bytes(data) != (copy / "p1.png").read_bytes()


def test_manifest_dry_run_touches_nothing_and_reports_what_a_real_run_writes(tmp_path, client, state):
    src, out = tmp_path / "in", tmp_path / "out"
    make_folder(src, 4)
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    s = Settings(format="auto")
    tree = snapshot(tmp_path)
    rows = Manifest(state / MANIFEST_NAME, readonly=True)
    n_before = rows.count()
    dry = run(client, [src], s, out_dir=str(out), dry_run=True)
    dry_in_place = run(client, [src], s, in_place=True, dry_run=True)
    assert snapshot(tmp_path) == tree and not out.exists()  # byte-identical, nothing created
    assert all(r.dry_run for r in dry.values() if r.ok) and dry["broken.jpg"].error.code == "decode_failed"
    assert {r.status for r in dry_in_place.values()} <= {"optimized", "skipped", "failed"}
    real = run(client, [src], s, out_dir=str(out))
    assert rows.count() > n_before  # the real run recorded; the dry ones did not
    for name, r in real.items():
        d = dry[name]
        assert (d.status, d.bytes_out, d.format_out, d.output, d.output_hash) == \
            (r.status, r.bytes_out, r.format_out, r.output, r.output_hash), name
        if r.ok:
            assert os.path.getsize(r.output) == d.bytes_out
    # a dry run over done files reports them unchanged, as a real run would
    assert {r.status for n, r in run(client, [src], s, out_dir=str(out), dry_run=True).items()
            if n != "broken.jpg"} == {"unchanged"}
    rows.close()


def test_manifest_clear_forgets_and_an_unreadable_manifest_costs_a_rerun(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    make_folder(src, 2)
    path = tmp_path / "m.sqlite3"
    with Client.local(workers=0, config=RouterConfig(recover=False, manifest=str(path))) as c:
        run(c, [src], Settings(), out_dir=str(out))
        assert {r.status for r in run(c, [src], Settings(), out_dir=str(out)).values()} == {"unchanged"}
    m = Manifest(path)
    assert m.count() == 2 and m.clear(under=str(tmp_path / "elsewhere")) == 0
    (tmp_path / "link").symlink_to(src)  # the folder by another name: rows hold real paths
    assert m.clear(under=str(tmp_path / "link")) == 2 and m.count() == 0
    m.close()
    path.write_bytes(b"not a database" * 100)  # corrupted: every file simply runs again
    for suffix in ("-wal", "-shm"):
        if os.path.exists(str(path) + suffix):
            os.remove(str(path) + suffix)
    with Client.local(workers=0, config=RouterConfig(recover=False, manifest=str(path))) as c:
        res = run(c, [src], Settings(), out_dir=str(out))
    assert {r.status for r in res.values()} <= {"optimized", "skipped"} and len(res) == 2
    assert path.read_bytes() == b"not a database" * 100  # left for the user to look at


def test_manifest_cli_dry_run_json_summary_unchanged_and_manifest_command(tmp_path, capsys):
    import json

    from pyimgopt.cli import main

    src, out, st = tmp_path / "in", tmp_path / "out", tmp_path / "st"
    make_folder(src, 2)
    tree = snapshot(src)
    common = ["-o", str(out), "-j", "0", "--state-dir", str(st), "--no-progress"]
    assert main(["optimize", str(src), *common, "--dry-run", "--json"]) == 0
    recs = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    results = [r for r in recs if r["type"] == "result"]
    assert len(results) == 2 and all(r["dry_run"] for r in results)
    assert recs[-1]["dry_run"] is True and recs[-1]["bytes_out"] == sum(r["bytes_out"] for r in results)
    assert not out.exists() and snapshot(src) == tree
    assert main(["optimize", str(src), *common]) == 0
    capsys.readouterr()
    assert main(["optimize", str(src), *common]) == 0
    text = capsys.readouterr().out
    assert "2 unchanged" in text and "saved 0 B, 0.0%" in text  # a re-run that wrote nothing
    assert main(["manifest", "path", "--state-dir", str(st)]) == 0
    assert capsys.readouterr().out.strip() == str(st / MANIFEST_NAME)
    assert main(["manifest", "clear", "--state-dir", str(st)]) == 0
    assert "cleared 2" in capsys.readouterr().out
    assert main(["optimize", str(src), *common]) == 0
    assert "0 unchanged" in capsys.readouterr().out
    # in place, the same: nothing claimed for unchanged files
    flat = ["-j", "0", "--state-dir", str(st), "--no-progress", "--json"]
    for _ in range(2):
        assert main(["optimize", str(src), "--in-place", *flat]) == 0
        summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["unchanged"] == 2 and summary["bytes_in"] == summary["bytes_out"] == 0


def test_manifest_a_recovered_batch_keeps_its_options_dry_run_writes_nothing(tmp_path):
    """A batch journaled as a dry run (the router died before running it) is
    recovered at the next start as a dry run: still nothing written."""
    from pyimgopt import protocol
    from pyimgopt.journal import Journal

    src, out, state = tmp_path / "in", tmp_path / "out", tmp_path / "state"
    make_folder(src, 2)
    j = Journal(state)
    files = sorted(p for p in src.iterdir() if p.suffix != ".txt")
    rows = []
    for i, p in enumerate(files):
        st = p.stat()
        rows.append({"id": f"{'d' * 16}:{i + 1}", "seq": i, "input": str(p), "output": str(out / p.name),
                     "expect": {"dev": st.st_dev, "ino": st.st_ino}, "status": "queued"})
    j.add_batch("d" * 16, None, 0, protocol.pack_settings(Settings()), False, rows, {"dry_run": True})
    assert j.unfinished()[0]["options"] == {"dry_run": True}
    j.close()
    before = snapshot(src)
    with Client.local(workers=0, config=RouterConfig(recover=True), state_dir=str(state)) as c:
        results = c.attach("d" * 16).wait(60)
    assert len(results) == 2 and all(r.ok and r.dry_run for r in results)
    assert not out.exists() and snapshot(src) == before


def test_manifest_a_copied_output_folder_is_recognised_by_its_hash(tmp_path, client):
    """Review finding 2: outputs copied or moved elsewhere are found by content (output
    hash), not only by the path they were written to (no in-file marker here)."""
    import shutil

    src, out = tmp_path / "in", tmp_path / "out"
    make_folder(src, 3)
    s = Settings(mark=False)
    first = run(client, [src], s, out_dir=str(out))
    moved = tmp_path / "elsewhere" / "copy"
    shutil.copytree(out, moved)
    before = snapshot(moved)
    again = run(client, [moved], s, in_place=True)
    assert {r.status for r in again.values()} == {"unchanged"}
    assert snapshot(moved) == before  # nothing re-encoded or rewritten
    for name, r in again.items():
        assert r.input_hash == first[name].output_hash and "decode" not in r.stages
    # to a folder: copied byte for byte, not re-encoded
    to = run(client, [moved], s, out_dir=str(tmp_path / "out2"))
    assert {r.status for r in to.values()} == {"unchanged"}
    for name in to:
        assert (tmp_path / "out2" / name).read_bytes() == (moved / name).read_bytes()


def _marked_jpeg(seed: int) -> bytes:
    out, r = optimize_bytes(jpeg(photo(96, 64, seed=seed), quality=97), Settings(mark=True))
    assert r.status == "optimized" and marker.check(out, marker_key(Settings(mark=True)))
    return out


def test_manifest_a_copied_or_stale_marker_does_not_make_a_file_unchanged():
    """Review finding 6a: a marker pasted onto another image, or a file edited after it was
    marked (metadata only: still a valid image), is redone; the untouched file is not."""
    s = Settings(mark=True)
    a, b = _marked_jpeg(1), _marked_jpeg(2)
    assert optimize_bytes(a, s)[1].status == "unchanged"  # the control
    sa, ea, pa = marker.find(a)
    sb, eb, _ = marker.find(b)
    pasted = b[:sb] + a[sa:ea] + b[eb:]  # a's marker on b's image
    assert marker.find(pasted)[2] == pa
    assert optimize_bytes(pasted, s)[1].status != "unchanged"
    # edited after marking: a COM segment added after the marker (a viewer sees the same image)
    edited = a[:ea] + b"\xff\xfe\x00\x06edit" + a[ea:]
    assert decode(edited).size == (96, 64)
    assert optimize_bytes(edited, s)[1].status != "unchanged"


def test_manifest_the_version_is_part_of_the_settings_key(monkeypatch):
    """Review finding 6b: a file marked by another pyimgopt version is redone."""
    import pyimgopt.manifest as manifest_mod

    s = Settings(mark=True)
    a = _marked_jpeg(3)
    key = manifest_mod.settings_key(s)
    monkeypatch.setattr(manifest_mod, "__version__", "999.0.0")
    manifest_mod._key.cache_clear()
    try:
        assert manifest_mod.settings_key(s) != key
        assert optimize_bytes(a, s)[1].status != "unchanged"
    finally:
        monkeypatch.undo()
        manifest_mod._key.cache_clear()
    assert optimize_bytes(a, s)[1].status == "unchanged"


def test_manifest_the_marker_never_pushes_an_output_over_target_size():
    """Review finding 6c: an output that fits only without the marker is left unmarked."""
    src = jpeg(photo(96, 64, seed=4), quality=97)
    plain, _ = optimize_bytes(src, Settings(quality=80))
    out, r = optimize_bytes(src, Settings(quality=80, mark=True, target_size=len(plain) + 10))
    assert r.status == "optimized" and len(out) <= len(plain) + 10 and marker.find(out) is None
    roomy, _ = optimize_bytes(src, Settings(quality=80, mark=True, target_size=len(plain) + 100))
    assert marker.find(roomy) is not None and len(roomy) <= len(plain) + 100  # not vacuous


def test_manifest_close_closes_the_connection_its_constructor_opened(tmp_path):
    """``close()`` leaves no connection open — also the one ``__init__`` opened (it was not
    tracked: left to the garbage collector, its WAL checkpoint could rewrite a file the
    user had replaced meanwhile)."""
    path = tmp_path / "m.sqlite3"
    m = Manifest(path)
    assert m.count() == 0  # the constructing thread's connection, used again

    def open_fds():
        out = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            if target.startswith(str(path)):
                out.append(target)
        return out

    assert open_fds()
    m.close()
    assert open_fds() == []
