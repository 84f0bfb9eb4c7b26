"""The command line, run as a real process: outputs, JSON lines, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import decode, encode, jpeg, photo, temp_files


def run(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "pyimgopt", *map(str, args)],
        capture_output=True, text=True, timeout=300, cwd=cwd,
    )


def make_tree(root):
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "x.jpg").write_bytes(jpeg(photo(300, 200), quality=97))
    (root / "a" / "b" / "y y.png").write_bytes(encode(Image.fromarray(photo(120, 90)), "PNG", compress_level=0))
    (root / "a" / "b" / "写真.webp").write_bytes(encode(Image.fromarray(photo(120, 90)), "WEBP", quality=100))
    (root / "a" / "notes.txt").write_text("not an image")
    (root / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")


def lines(stdout, with_batch=False):
    """The --json records; the leading {"type": "batch"} line only when asked."""
    recs = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    return recs if with_batch else [r for r in recs if r["type"] != "batch"]


def test_cli_json_mirrors_tree_and_reports_every_file(tmp_path):
    make_tree(tmp_path)
    out = tmp_path / "out"
    p = run("optimize", tmp_path / "a", "-o", out, "--json")
    assert p.returncode == 1, p.stderr  # broken.jpg failed
    records = lines(p.stdout)
    results = [r for r in records if r["type"] == "result"]
    summary = records[-1]
    assert summary["type"] == "summary" and summary["files"] == 4 == len(results)
    assert summary["failed"] == 1 and summary["optimized"] + summary["skipped"] == 3
    by_name = {os.path.basename(r["input"]): r for r in results}
    assert set(by_name) == {"x.jpg", "y y.png", "写真.webp", "broken.jpg"}
    assert by_name["broken.jpg"]["error"]["code"] == "decode_failed"
    for key in ("input", "output", "status", "bytes_in", "bytes_out", "format_in", "format_out", "width", "height", "error"):
        assert key in by_name["x.jpg"]
    assert (out / "x.jpg").is_file() and (out / "b" / "y y.png").is_file() and (out / "b" / "写真.webp").is_file()
    assert not (out / "notes.txt").exists() and not (out / "broken.jpg").exists()
    decode((out / "b" / "写真.webp").read_bytes())
    assert summary["bytes_out"] < summary["bytes_in"]
    assert not temp_files(tmp_path)


def test_cli_exit_zero_and_human_summary(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "p.jpg").write_bytes(jpeg(quality=97))
    p = run("optimize", tmp_path / "in", "-o", tmp_path / "out", "--no-progress")
    assert p.returncode == 0, p.stderr
    assert "1 optimized" in p.stdout and "saved" in p.stdout
    assert "Traceback" not in p.stderr


def test_cli_in_place_and_format_conversion(tmp_path):
    src = tmp_path / "p.png"
    src.write_bytes(encode(Image.fromarray(photo(120, 90)), "PNG", compress_level=0))
    size = src.stat().st_size
    p = run("optimize", "--in-place", src, "--json")
    assert p.returncode == 0 and src.stat().st_size < size
    p = run("optimize", src, "-o", tmp_path / "o", "--format", "webp", "--max-width", "60", "--json")
    rec = lines(p.stdout)[0]
    assert rec["format_out"] == "webp" and rec["width"] == 60 and rec["output"].endswith("p.webp")
    with Image.open(tmp_path / "o" / "p.webp") as im:
        assert im.format == "WEBP"


def test_cli_usage_errors_exit_2(tmp_path):
    img = tmp_path / "a.jpg"
    img.write_bytes(jpeg())
    assert run("optimize", img).returncode == 2  # neither --out nor --in-place
    assert run("optimize", img, "--in-place", "-o", tmp_path).returncode == 2
    assert run("optimize", img, "--in-place", "--format", "webp").returncode == 2
    p = run("optimize", img, "-o", tmp_path / "o", "-q", "0")
    assert p.returncode == 2 and "quality" in p.stderr and "Traceback" not in p.stderr
    assert run("frobnicate").returncode == 2


def test_cli_missing_path_is_a_failed_result(tmp_path):
    p = run("optimize", tmp_path / "nope.jpg", "-o", tmp_path / "o", "--json")
    assert p.returncode == 1
    assert lines(p.stdout)[0]["error"]["code"] == "io_error"


def test_cli_explicit_file_with_any_name_is_processed(tmp_path):
    weird = tmp_path / "image.data"
    weird.write_bytes(jpeg(quality=97))
    p = run("optimize", weird, "-o", tmp_path / "o", "--json")
    assert p.returncode == 0 and lines(p.stdout)[0]["format_in"] == "jpeg"


def test_cli_output_collision_gets_a_distinct_name_not_overwritten(tmp_path):
    """a.jpg and a.png both map to a.webp: the later (a.png, in sorted order) writes
    a.png.webp (issue 17; it used to fail with "would overwrite")."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(encode(Image.fromarray(photo(50, 40)), "PNG"))
    (tmp_path / "in" / "a.jpg").write_bytes(jpeg(photo(50, 40)))
    p = run("optimize", tmp_path / "in", "-o", tmp_path / "o", "--format", "webp", "--json", "-j", "1")
    recs = {os.path.basename(r["input"]): r for r in lines(p.stdout) if r["type"] == "result"}
    assert p.returncode == 0, p.stdout
    assert [r["status"] for r in recs.values()] == ["optimized", "optimized"]
    assert os.path.basename(recs["a.jpg"]["output"]) == "a.webp"
    assert os.path.basename(recs["a.png"]["output"]) == "a.png.webp"
    assert sorted(os.listdir(tmp_path / "o")) == ["a.png.webp", "a.webp"]


def test_cli_router_process_serves_optimize_connect(tmp_path):
    """`pyimgopt router --bind` as its own process; `optimize --connect` uses it; SIGTERM ends it."""
    import signal
    import time

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "p.jpg").write_bytes(jpeg(quality=97))
    sock = tmp_path / "r"
    sock.mkdir(mode=0o700)
    endpoint = f"ipc://{sock}/clients"
    router = subprocess.Popen(
        [sys.executable, "-m", "pyimgopt", "router", "--bind", endpoint, "-j", "1"],
        stderr=subprocess.PIPE, text=True,
    )
    try:
        line = router.stderr.readline()
        assert "pyimgopt router" in line, line
        p = run("optimize", tmp_path / "in", "-o", tmp_path / "out", "--connect", endpoint, "--json")
        assert p.returncode == 0, p.stderr
        assert lines(p.stdout)[0]["status"] == "optimized"
        assert (tmp_path / "out" / "p.jpg").is_file()
    finally:
        router.send_signal(signal.SIGTERM)
        try:
            router.wait(30)
        finally:
            if router.poll() is None:
                router.kill()
                router.wait(10)
            router.stderr.close()
    assert router.returncode == 0
    time.sleep(0.2)


@pytest.mark.one_backend
def test_cli_two_runs_at_once_on_the_default_state_folder_keep_to_themselves(tmp_path):
    """Run A (slow files) and, while it runs, run B (four icons) on the same
    default state folder: B finishes with exactly its files while A is still
    at work (B neither recovered nor ran A's batch), A's batch cannot be
    resumed by a third process while A owns it, each batch lives in its own
    journal, and A finishes all of its files."""
    import signal

    env = {**os.environ, "PYIMGOPT_STATE_DIR": str(tmp_path / "state")}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for i in range(8):
        (tmp_path / "a" / f"a{i:02d}.jpg").write_bytes(jpeg(photo(320, 240, seed=i), quality=95))
    for i in range(4):
        (tmp_path / "b" / f"b{i}.png").write_bytes(encode(Image.fromarray(photo(32, 32, seed=i)), "PNG"))
    a = subprocess.Popen([sys.executable, "-m", "pyimgopt", "optimize", str(tmp_path / "a"), "-o",
                          str(tmp_path / "oa"), "--format", "avif", "--effort", "9", "--json", "-j", "1"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        a_batch = json.loads(a.stdout.readline())["id"]
        assert json.loads(a.stdout.readline())["type"] == "result"  # A's router runs its batch
        b = subprocess.run([sys.executable, "-m", "pyimgopt", "optimize", str(tmp_path / "b"), "-o",
                            str(tmp_path / "ob"), "--json", "-j", "1"],
                           capture_output=True, text=True, timeout=300, env=env)
        assert a.poll() is None, "A ended before B: the test proves nothing"
        assert b.returncode == 0, b.stderr
        b_results = [r for r in lines(b.stdout) if r["type"] == "result"]
        assert sorted(os.path.basename(r["input"]) for r in b_results) == [f"b{i}.png" for i in range(4)]
        again = subprocess.run([sys.executable, "-m", "pyimgopt", "resume", a_batch, "--json", "-j", "1"],
                               capture_output=True, text=True, timeout=120, env=env)
        assert again.returncode == 1 and "still running" in again.stderr, again.stderr
        assert a.poll() is None
        rest, err = a.communicate(timeout=600)
    finally:
        if a.poll() is None:
            a.send_signal(signal.SIGKILL)
            a.communicate(timeout=30)
    assert a.returncode == 0, err
    a_results = [json.loads(x) for x in rest.splitlines() if x.strip()]
    a_results = [r for r in a_results if r["type"] == "result"]
    assert len(a_results) == 7 and all(r["status"] == "optimized" for r in a_results)
    assert sorted(p.name for p in (tmp_path / "oa").iterdir()) == [f"a{i:02d}.avif" for i in range(8)]
    assert sorted(p.name for p in (tmp_path / "ob").iterdir()) == [f"b{i}.png" for i in range(4)]
    st = run("status", "--json", "--state-dir", tmp_path / "state")
    rows = lines(st.stdout, with_batch=True)
    assert len(rows) == 2 and {r["state"] for r in rows} == {"done"}
    assert len({r["journal"] for r in rows}) == 2  # one journal, one owner: B kept its own
    assert not temp_files(tmp_path)


def test_cli_router_exits_nonzero_when_its_router_dies(tmp_path, monkeypatch, capsys):
    """An unexpected exception inside a handler is contained (see test_pool),
    but should the loop itself ever die, ``pyimgopt router`` says so and exits 1
    instead of lingering or exiting 0. The loop is made to die by a fault
    injected into one step of it."""
    import signal

    from pyimgopt import cli
    from pyimgopt.router import broker

    def die(self, now):
        raise SystemExit("injected: the loop dies")  # not an Exception: _safely lets it through

    monkeypatch.setattr(broker.Router, "_ping_clients", die)
    sock = tmp_path / "r"
    sock.mkdir(mode=0o700)
    before = signal.getsignal(signal.SIGTERM)  # the command installs its own handler
    try:
        code = cli.main(["router", "--bind", f"ipc://{sock}/c", "-j", "0",
                         "--state-dir", str(tmp_path / "state")])
    finally:
        signal.signal(signal.SIGTERM, before)
    assert code == 1
    assert "the router stopped" in capsys.readouterr().err
def test_cli_same_stem_names_are_predictable_when_the_first_form_is_taken(tmp_path):
    """The README's naming rule, past its first form: three inputs called x.png (from three
    folders, given one by one) into one output folder write x.png, x.png.png and then
    x.png-2.png; under auto three x.gif claim the stems x, x.gif and x.gif-2. (Planning
    only: no process, a few ms.)"""
    from pyimgopt import Settings
    from pyimgopt.client import plan_jobs

    for name, fmt, want in (("x.png", "keep", ["x.png", "x.png.png", "x.png-2.png"]),
                            ("x.gif", "auto", ["x.gif", "x.gif.gif", "x.gif-2.gif"])):
        paths = []
        for d in "abc":
            (tmp_path / fmt / d).mkdir(parents=True)
            paths.append(tmp_path / fmt / d / name)
            paths[-1].write_bytes(b"not decoded here")
        jobs, refused = plan_jobs(paths, Settings(format=fmt), str(tmp_path / f"out-{fmt}"), False)
        assert not refused
        assert [os.path.basename(j["output"]) for j in jobs] == want
        assert [os.path.dirname(j["input"]) for j in jobs] == [str(tmp_path / fmt / d) for d in "abc"]


def test_cli_same_stem_inputs_both_written_never_overwritten(tmp_path):
    """Issue 17: x.gif and x.webp under auto both map to x.webp; the later one (in sorted
    order) writes x.webp.<ext> instead of failing, and neither output replaces the other.
    (An explicit format, a.jpg and a.png under --format webp, is the collision test above;
    one CLI run here, ~2.5 s.)"""
    src = tmp_path / "in"
    src.mkdir()
    red = np.zeros((48, 64, 3), np.uint8)
    red[..., 0] = 220
    blue = np.zeros((48, 64, 3), np.uint8)
    blue[..., 2] = 220
    (src / "x.gif").write_bytes(encode(Image.fromarray(red), "GIF"))
    (src / "x.webp").write_bytes(encode(Image.fromarray(blue), "WEBP", lossless=True))
    (src / "x.png").write_bytes(encode(Image.fromarray(blue[:, ::-1] // 2), "PNG"))
    for fmt, names in (("auto", ("x.gif", "x.png", "x.webp")),):
        out = tmp_path / f"out-{fmt}"
        args = ["optimize", *[src / n for n in names], "-o", out, "--json", "--format", fmt]
        p = run(*args)
        assert p.returncode == 0, p.stderr
        results = {os.path.basename(r["input"]): r for r in lines(p.stdout) if r["type"] == "result"}
        assert set(results) == set(names) and all(r["status"] != "failed" for r in results.values())
        outputs = [r["output"] for r in results.values()]
        assert len(set(outputs)) == len(names)  # distinct names
        first = results["x.gif"]["output"]
        assert os.path.basename(os.path.splitext(first)[0]) == "x"  # the first keeps the plain name
        for name in names[1:]:  # the later ones: their whole input name before the extension
            assert os.path.basename(os.path.splitext(results[name]["output"])[0]) == name
        for name, r in results.items():  # each output shows its own input (nothing overwritten)
            want = np.asarray(decode((src / name).read_bytes()).convert("RGB"), dtype=np.int16)
            with open(r["output"], "rb") as fh:
                got = np.asarray(decode(fh.read()).convert("RGB"), dtype=np.int16)
            assert got.shape == want.shape and np.abs(got - want).mean() < 8, name
        assert sorted(os.listdir(out)) == sorted(os.path.basename(o) for o in outputs)


@pytest.mark.one_backend
def test_cli_json_reader_that_goes_away_ends_quietly(tmp_path):
    """`pyimgopt optimize --json | head -1`: no traceback, exit 141, nothing half-written."""
    src = tmp_path / "in"
    src.mkdir()
    for i in range(12):
        (src / f"p{i:02d}.jpg").write_bytes(jpeg(photo(320, 240, seed=i), quality=95))
    proc = subprocess.Popen([sys.executable, "-m", "pyimgopt", "optimize", str(src), "-o", str(tmp_path / "out"),
                             "--json", "-j", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first = proc.stdout.readline()
        proc.stdout.close()  # the reader goes away after one line, as `head -1` does
        err = proc.stderr.read().decode()
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stderr.close()
    assert json.loads(first)["type"] == "batch"
    assert "Traceback" not in err and "output closed" in err, err
    assert code == 141
    assert not temp_files(tmp_path)


def test_same_stem_name_depends_on_the_folder_not_the_batch(tmp_path):
    """A watcher submits a changed file alone: in/x.webp must get the same output name
    alone as next to in/x.gif, never the plain x.<ext> the gif's output has (which it
    would overwrite). Siblings that are not images (notes.txt-like) or sort after do not
    count. (Planning only: no process, a few ms.)"""
    from pyimgopt import Settings
    from pyimgopt.client import plan_jobs

    src = tmp_path / "in"
    src.mkdir()
    for name in ("x.gif", "x.webp", "x.txt", "y.png"):
        (src / name).write_bytes(b"GIF89a" if name == "x.gif" else b"not an image")
    for fmt in ("auto", "webp"):
        out = str(tmp_path / f"out-{fmt}")
        both, refused = plan_jobs([src / "x.gif", src / "x.webp"], Settings(format=fmt), out, False)
        assert not refused
        names = {os.path.basename(j["input"]): os.path.basename(j["output"]) for j in both}
        for alone in ([src / "x.webp"], [src / "x.webp", src / "y.png"], [src / "x.webp", src / "x.gif"]):
            jobs, _ = plan_jobs(alone, Settings(format=fmt), out, False)
            got = {os.path.basename(j["input"]): os.path.basename(j["output"]) for j in jobs}
            assert got["x.webp"] == names["x.webp"] != names["x.gif"], (fmt, alone, got, names)
            if "x.gif" in got:
                assert got["x.gif"] == names["x.gif"]
        assert names["x.gif"] == ("x.gif" if fmt == "auto" else "x.webp")  # the first keeps the plain name
        assert names["x.webp"] == ("x.webp.webp" if fmt == "auto" else "x.webp.webp")


def test_distinct_names_chain_the_same_in_any_batch(tmp_path):
    """The review's folder: x.gif, x.jpg, x.png, x.png.jpg, x.webp, x.webp.png under auto.
    x.png's distinct name (x.png.<ext>) is x.png.jpg's plain one, so a file's name hangs
    on every earlier image of its folder, not only on same-stem ones: each file planned
    alone gets the name it gets with the whole folder, and the six names are distinct.
    (Planning only, a few ms.)"""
    from pyimgopt import Settings
    from pyimgopt.client import plan_jobs

    src = tmp_path / "in"
    src.mkdir()
    names = ["x.gif", "x.jpg", "x.png", "x.png.jpg", "x.webp", "x.webp.png"]
    for n in names:
        (src / n).write_bytes(b"not decoded here")
    out = str(tmp_path / "out")
    whole, refused = plan_jobs([src], Settings(format="auto"), out, False)
    assert not refused
    want = {os.path.basename(j["input"]): j["output"] for j in whole}
    assert len(set(want.values())) == len(names)
    for n in names:
        jobs, _ = plan_jobs([src / n], Settings(format="auto"), out, False)
        assert jobs[0]["output"] == want[n], n
    jobs, _ = plan_jobs([src / n for n in reversed(names)], Settings(format="auto"), out, False)
    assert {os.path.basename(j["input"]): j["output"] for j in jobs} == want
