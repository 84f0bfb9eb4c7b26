"""The router is the authority: raw frames, keys, remote sidecars, hostile images.

Every test here runs real processes and real sockets; what was refused is
checked on the file system afterwards, not only in the replies.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import zmq
from PIL import Image

from pyimgopt import Settings, optimize_file, protocol
from pyimgopt.auth import generate_keypair, key_id, load_public
from pyimgopt.client import Client
from pyimgopt.errors import IOFailureError, JobTimeoutError
from pyimgopt.router import RouterConfig
from pyimgopt.security import Capabilities, Policy, Scope

from conftest import decode, encode, jpeg, photo, temp_files

FAST = dict(liveness=3.0, heartbeat=0.2)


def tree(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "secret").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "in" / "a.jpg").write_bytes(jpeg(photo(120, 90), quality=97))
    (tmp_path / "secret" / "s.jpg").write_bytes(jpeg(photo(120, 90, seed=7), quality=97))
    return tmp_path


def narrow_policy(root, **caps):
    base = dict(read=True, write_new=True, formats=frozenset({"keep"}), max_pixels=10**8,
                max_file_bytes=2**30, max_batch_bytes=2**32, max_batch_files=1000, max_priority=0)
    base.update(caps)
    return Policy(Capabilities(**base), Scope(allow=(f"{root}/in/**",)), Scope(allow=(f"{root}/out/**",)))


class Raw:
    """A client that skips every check of the client library: bare frames."""

    def __init__(self, endpoint):
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVTIMEO, 10000)
        self.sock.connect(endpoint)

    def submit(self, jobs, settings=None, in_place=False, priority=0, batch="raw"):
        self.sock.send_multipart(protocol.encode(
            "submit", req="r1", batch=batch, priority=priority,
            settings=(settings or Settings()).to_dict(), jobs=jobs, in_place=in_place))
        first = protocol.decode(self.sock.recv_multipart())
        if first.type != "accepted":
            return first, []
        events = []
        while True:
            msg = protocol.decode(self.sock.recv_multipart())
            for ev in as_events(msg):
                events.append(ev)
                if ev["kind"] == "batch_done":
                    return first, events

    def close(self):
        self.sock.close(0)


def as_events(msg):
    """The events a message carries, each as a dict (one ``event``, or several in ``events``)."""
    if msg.type == "event":
        return [{"kind": msg["kind"], "job": msg["job"], "data": msg["data"]}]
    if msg.type == "events":
        return [{"kind": k, "job": j, "data": d} for _, k, j, d in msg["events"]]
    return []


def failures(events):
    return [e["data"]["error"]["code"] for e in events if e["kind"] == "failed"]


def snapshot(root):
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_security_raw_frames_cannot_exceed_the_connection_policy(tmp_path):
    root = tree(tmp_path)
    (root / "out" / "exists.jpg").write_bytes(b"keep me")
    before = snapshot(root)
    cfg = RouterConfig(workers=1, local_policy=narrow_policy(root), **FAST)
    with Client.local(config=cfg) as c:
        raw = Raw(c.endpoint)
        try:
            # settings the policy does not grant: the whole submit is refused
            for bad in (Settings(keep_metadata=True), Settings(format="webp"), Settings(max_width=10)):
                reply, _ = raw.submit([{"id": "", "input": str(root / "in/a.jpg"),
                                        "output": str(root / "out/a.jpg")}], bad)
                assert reply.type == "error" and reply["error"]["code"] == "capability_denied"
            reply, _ = raw.submit([{"id": "", "input": str(root / "in/a.jpg"), "output": None}],
                                  in_place=True)
            assert reply.type == "error" and reply["error"]["code"] == "capability_denied"
            reply, _ = raw.submit([{"id": "", "input": str(root / "in/a.jpg"),
                                    "output": str(root / "out/a.jpg")}], priority=9)
            assert reply.type == "error" and reply["error"]["code"] == "capability_denied"
            # paths: each refused job fails alone; the batch is answered
            jobs = [
                {"id": "", "input": str(root / "secret/s.jpg"), "output": str(root / "out/s.jpg")},
                {"id": "", "input": str(root / "in/../secret/s.jpg"), "output": str(root / "out/t.jpg")},
                {"id": "", "input": str(root / "in/a.jpg"), "output": str(root / "elsewhere/a.jpg")},
                {"id": "", "input": str(root / "in/a.jpg"), "output": str(root / "out/../elsewhere/b.jpg")},
                {"id": "", "input": str(root / "in/a.jpg"), "output": str(root / "out/exists.jpg")},
                {"id": "", "input": str(root / "in/a.jpg"), "output": None},
                {"id": "", "input": str(root / "in/a\x00.jpg"), "output": str(root / "out/n.jpg")},
                {"id": "", "input": str(root / "in/a.jpg"), "output": str(root / "in/a.jpg")},
            ]
            reply, events = raw.submit(jobs, batch="paths")
            assert reply.type == "accepted"
            codes = failures(events)
            assert len(codes) == len(jobs), codes
            assert set(codes) <= {"scope_denied", "capability_denied"}
            for e in events:
                if e["kind"] == "failed":
                    assert "secret" not in e["data"]["error"]["message"]
        finally:
            raw.close()
    after = snapshot(root)
    assert after == before  # nothing read into an output, nothing written anywhere
    assert not temp_files(root)


def test_security_client_library_refuses_early_with_per_file_results(tmp_path):
    root = tree(tmp_path)
    os.symlink(root / "secret" / "s.jpg", root / "in" / "link.jpg")
    pol = narrow_policy(root)
    with Client.local(workers=1, config=RouterConfig(**FAST), policy=pol) as c:
        results = c.submit([root / "in"], Settings(), out_dir=root / "out").wait(60)
        with pytest.raises(Exception) as err:
            c.submit([root / "in"], Settings(format="webp"), out_dir=root / "out")
        assert getattr(err.value, "code", None) == "capability_denied"
    by_name = {os.path.basename(r.input): r for r in results}
    assert by_name["a.jpg"].status == "optimized"
    assert by_name["link.jpg"].error.code == "scope_denied"
    assert "secret" not in by_name["link.jpg"].error.message
    assert sorted(p.name for p in (root / "out").iterdir()) == ["a.jpg"]


def test_security_hard_linked_input_allowed_only_with_whole_fs_scope(tmp_path):
    root = tree(tmp_path)
    os.link(root / "in" / "a.jpg", root / "in" / "hard.jpg")
    with Client.local(workers=0) as c:  # trusted local policy: the whole file system
        results = c.submit([root / "in" / "hard.jpg"], Settings(), out_dir=root / "o1").wait(60)
    assert results[0].status == "optimized"
    with Client.local(workers=0, config=RouterConfig(local_policy=narrow_policy(root))) as c:
        raw = Raw(c.endpoint)
        try:
            _, events = raw.submit([{"id": "", "input": str(root / "in/hard.jpg"),
                                     "output": str(root / "out/hard.jpg")}])
        finally:
            raw.close()
    assert failures(events) == ["scope_denied"]


@pytest.fixture
def keys(tmp_path):
    k = tmp_path / "keys"
    for folder in ("server", "clients", "sidecars", "strangers"):
        (k / folder).mkdir(parents=True)
    generate_keypair(k / "server", "router")
    generate_keypair(k / "clients", "alice")
    generate_keypair(k / "sidecars", "worker")
    generate_keypair(k / "strangers", "mallory")
    pub = {}
    for folder in ("clients", "sidecars"):  # authorised folders hold public keys only
        auth_dir = k / f"auth-{folder}"
        auth_dir.mkdir()
        for f in (k / folder).glob("*.key"):
            shutil.copy(f, auth_dir / f.name)
            pub[f.stem] = key_id(load_public(f))
    return k, pub


def curve_router(tmp_path, keys, **extra):
    k, pub = keys
    root = tmp_path
    cfg = RouterConfig(
        curve_secret=str(k / "server" / "router.key_secret"),
        authorized_clients=[str(k / "auth-clients")],
        authorized_sidecars=[str(k / "auth-sidecars")],
        key_policies={pub["alice"]: narrow_policy(root)},
        **FAST, **extra,
    )
    return cfg


def test_security_curve_only_authorised_keys_get_work_done(tmp_path, keys):
    from pyimgopt.router import Router

    k, pub = keys
    root = tree(tmp_path)
    private = tmp_path / "ipc"
    private.mkdir(mode=0o700)
    ctx = zmq.Context()
    router = Router("tcp://127.0.0.1:0", f"ipc://{private}/sidecars",
                    curve_router(root, keys, workers=1), context=ctx)
    router.start()
    try:
        server_pub = str(k / "server" / "router.key")
        with Client.connect(router.client_endpoint, secret_key=str(k / "strangers/mallory.key_secret"),
                            server_key=server_pub, timeout=3) as c:
            with pytest.raises(JobTimeoutError):
                c.submit([root / "in"], Settings(), out_dir=root / "out")
        with Client.connect(router.client_endpoint, timeout=3) as c:  # no Curve at all
            with pytest.raises(JobTimeoutError):
                c.submit([root / "in"], Settings(), out_dir=root / "out")
        # a sidecar's key is not a client's key
        with Client.connect(router.client_endpoint, secret_key=str(k / "sidecars/worker.key_secret"),
                            server_key=server_pub, timeout=10, policy=narrow_policy(root)) as c:
            with pytest.raises(Exception) as err:
                c.submit([root / "in"], Settings(), out_dir=root / "out")
            assert getattr(err.value, "code", None) == "capability_denied"
        assert not list((root / "out").iterdir())
        with Client.connect(router.client_endpoint, secret_key=str(k / "clients/alice.key_secret"),
                            server_key=server_pub, timeout=10, policy=narrow_policy(root)) as c:
            alices = c.submit([root / "in"], Settings(), out_dir=root / "out")
            results = alices.wait(60)
            assert [r.status for r in results] == ["optimized"]
            # alice's status shows only alice's batches, and nothing global
            st = c.status()
            assert len(st["batches"]) == 2 - 1 and set(st) == {"batches", "features"}
            assert [j["input"] for j in c.jobs(alices.id)["jobs"]] == [os.path.realpath(root / "in" / "a.jpg")]
        # another key lists none of alice's jobs: her batch is unknown to it, as for attach
        with Client.connect(router.client_endpoint, secret_key=str(k / "sidecars/worker.key_secret"),
                            server_key=server_pub, timeout=10) as c:
            with pytest.raises(IOFailureError, match="unknown batch"):
                c.jobs(alices.id)
            with pytest.raises(IOFailureError, match="unknown batch"):
                c.attach(alices.id)
    finally:
        router.stop()
        ctx.term()
    assert (root / "out" / "a.jpg").is_file()


def _hide(path):
    """argv prefix that runs a command with ``path`` hidden under an empty tmpfs."""
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            f'mount -t tmpfs none "{path}" && exec "$@"', "hide"]


def _can_hide(tmp_path):
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "x").write_text("x")
    try:
        out = subprocess.run([*_hide(probe), "ls", str(probe)], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and out.stdout.strip() == ""


def test_security_remote_sidecar_over_tcp_curve_without_our_files(tmp_path, keys):
    """A sidecar in another mount namespace, where the batch's folders do not
    exist, with another working directory, serves a batch over loopback TCP
    with Curve keys: the bytes travel inline; outputs equal local ones."""
    from pyimgopt.router import Router

    k, pub = keys
    data = tmp_path / "data"
    data.mkdir()
    root = tree(data)
    for i in range(3):
        (root / "in" / f"p{i}.png").write_bytes(encode(Image.fromarray(photo(150, 100, seed=i)), "PNG"))
    hidden = _can_hide(tmp_path)
    private = tmp_path / "ipc"
    private.mkdir(mode=0o700)
    ctx = zmq.Context()
    cfg = curve_router(data, keys, pool=False)
    cfg.local_policy = None
    router = Router(f"ipc://{private}/clients", "tcp://127.0.0.1:0", cfg, context=ctx)
    router.start()
    cmd = [sys.executable, "-m", "pyimgopt_sidecar", "--connect", router.sidecar_endpoint,
           "--curve-secret", str(k / "sidecars/worker.key_secret"),
           "--server-key", str(k / "server/router.key")]
    if hidden:
        cmd = [*_hide(data), *cmd]
    side = subprocess.Popen(cmd, cwd="/")
    try:
        with Client.connect(router.client_endpoint, timeout=10) as c:
            results = c.submit([root / "in"], Settings(), out_dir=root / "out").wait(120)
        assert len(results) == 4 and all(r.status in ("optimized", "skipped") for r in results)
        for r in results:
            local = tmp_path / "local" / os.path.basename(r.input)
            optimize_file(r.input, local)
            assert pathlib.Path(r.output).read_bytes() == local.read_bytes()
    finally:
        side.terminate()
        side.wait(30)
        router.stop()
        ctx.term()
    if not hidden:
        pytest.skip("batch passed over TCP+Curve inline, but this machine cannot hide the folder "
                    "(unshare --mount not permitted), so 'no access' was not proven")


@pytest.mark.skipif(not __import__("pyimgopt.pipeline.encode", fromlist=["has_avif"]).has_avif(),
                    reason="needs AVIF (the slowest encoder) for the CPU-limit case")
def test_security_hostile_images_hit_sidecar_limits_and_fail_alone(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    # within max_pixels (90 MP) but far larger than the sidecar may map
    Image.new("RGB", (9500, 9500)).save(folder / "huge.png", optimize=False, compress_level=1)
    # small, but slow: incompressible noise through the slowest encoder setting
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (2500, 2500, 3), dtype=np.uint8)).save(folder / "noise.png",
                                                                               compress_level=0)
    (folder / "ok.jpg").write_bytes(jpeg(quality=97))
    # the CPU limit leaves huge.png's decode (~1 s of CPU, more on a loaded machine)
    # room to reach the address-space limit first; noise.png needs far more than 3 s
    cfg = RouterConfig(workers=1, sidecar_address_space=700 * 1024 * 1024, cpu_per_job=3.0,
                       poison_kills=3, **FAST)
    with Client.local(config=cfg) as c:
        results = c.submit([folder], Settings(format="avif", effort=9),
                           out_dir=tmp_path / "out").wait(300)
    by = {os.path.basename(r.input): r for r in results}
    assert by["ok.jpg"].status == "optimized"
    assert by["huge.png"].status == "failed" and by["huge.png"].error.code in ("too_large", "worker_lost")
    assert by["noise.png"].status == "failed" and by["noise.png"].error.code in ("timeout", "worker_lost")
    decode((tmp_path / "out" / "ok.avif").read_bytes())
    assert not temp_files(tmp_path)


def test_security_open_time_recheck_defeats_swapped_symlinks(tmp_path):
    """Check, then a thread keeps swapping the checked name for a symlink to a
    secret (and back) while the sidecar-side pipeline opens it: every run
    either refuses or optimises the checked file, never the secret."""
    import threading
    import time

    (tmp_path / "in").mkdir()
    (tmp_path / "secret").mkdir()
    good = tmp_path / "in" / "x.png"
    good_bytes = encode(Image.new("RGB", (64, 64), (0, 200, 0)), "PNG", compress_level=0)
    good.write_bytes(good_bytes)
    (tmp_path / "secret" / "s.png").write_bytes(encode(Image.new("RGB", (64, 64), (200, 0, 0)), "PNG"))
    st = os.stat(good)
    expect = {"dev": st.st_dev, "ino": st.st_ino}
    keep = tmp_path / "in" / ".x.keep"
    os.link(good, keep)  # the checked inode, to swap back in
    evil = tmp_path / "in" / ".evil"
    stop = threading.Event()
    flips = [0]

    def flip():
        while not stop.is_set():
            try:
                os.symlink(tmp_path / "secret" / "s.png", evil)
            except FileExistsError:
                pass
            os.replace(evil, good)
            os.link(keep, tmp_path / "in" / ".back")
            os.replace(tmp_path / "in" / ".back", good)
            flips[0] += 1

    t = threading.Thread(target=flip, daemon=True)
    t.start()
    outcomes = {"optimized": 0, "scope_denied": 0, "other": 0}
    try:
        deadline = time.monotonic() + 2.0
        i = 0
        while time.monotonic() < deadline or flips[0] < 200:
            dst = tmp_path / "out" / f"{i}.png"
            r = optimize_file(good, dst, Settings(), expect=expect)
            i += 1
            if r.status in ("optimized", "skipped"):
                px = decode(dst.read_bytes()).convert("RGB").getpixel((5, 5))
                assert px == (0, 200, 0), px  # never the secret's red
                outcomes["optimized"] += 1
            elif r.error.code == "scope_denied":
                outcomes["scope_denied"] += 1
            else:
                outcomes["other"] += 1
            if time.monotonic() > deadline + 10:
                break
    finally:
        stop.set()
        t.join(5)
    assert outcomes["optimized"] and outcomes["scope_denied"], (outcomes, flips[0])
    assert not temp_files(tmp_path)


def test_security_missing_output_folders_are_created_under_the_checked_folder_only(tmp_path):
    """The output folder did not exist at the check; before the write, a
    symlink to a folder outside is planted where it will be created (at each
    level). The write refuses; nothing lands outside; without the plant the
    folders are created and the file written."""
    from pyimgopt.errors import ScopeDeniedError
    from pyimgopt.pipeline.write import atomic_write, parent_anchor

    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    target = root / "new" / "sub" / "out.png"
    dev, ino, depth = parent_anchor(str(target))
    assert (dev, ino) == (os.stat(root).st_dev, os.stat(root).st_ino) and depth == 2

    os.symlink(outside, root / "new")  # planted at the first missing level
    with pytest.raises(ScopeDeniedError):
        atomic_write(str(target), b"data", expect_parent=(dev, ino), create_depth=depth)
    os.unlink(root / "new")
    (root / "new").mkdir()
    os.symlink(outside, root / "new" / "sub")  # ... or at the last one
    with pytest.raises(ScopeDeniedError):
        atomic_write(str(target), b"data", expect_parent=(dev, ino), create_depth=depth)
    os.unlink(root / "new" / "sub")
    assert list(outside.iterdir()) == []

    os.rename(root, tmp_path / "moved")  # the checked folder itself replaced by a link out
    os.symlink(outside, root)
    with pytest.raises(ScopeDeniedError):
        atomic_write(str(target), b"data", expect_parent=(dev, ino), create_depth=depth)
    os.unlink(root)
    os.rename(tmp_path / "moved", root)
    assert list(outside.iterdir()) == []

    atomic_write(str(target), b"data", expect_parent=(dev, ino), create_depth=depth)
    assert target.read_bytes() == b"data"
    assert not temp_files(tmp_path)


def test_security_pipeline_write_honours_the_recorded_anchor(tmp_path):
    from pyimgopt.pipeline.write import parent_anchor

    (tmp_path / "in").mkdir()
    (tmp_path / "outside").mkdir()
    src = tmp_path / "in" / "a.png"
    src.write_bytes(encode(Image.new("RGB", (64, 64), (0, 200, 0)), "PNG", compress_level=0))
    dst = tmp_path / "out" / "deep" / "a.png"
    st = os.stat(src)
    dev, ino, depth = parent_anchor(str(dst))
    expect = {"dev": st.st_dev, "ino": st.st_ino, "parent_dev": dev, "parent_ino": ino,
              "parent_depth": depth}
    os.symlink(tmp_path / "outside", tmp_path / "out")
    r = optimize_file(src, dst, Settings(), expect=expect)
    assert r.status == "failed" and r.error.code == "scope_denied"
    assert list((tmp_path / "outside").iterdir()) == []
    os.unlink(tmp_path / "out")
    r = optimize_file(src, dst, Settings(), expect=expect)
    assert r.status == "optimized" and dst.exists()


@pytest.mark.parametrize("fmt", ["keep", "auto"])
def test_security_an_output_never_replaces_another_input(tmp_path, fmt):
    """P/sub/x.jpg written under Q, where Q/sub/x.jpg is itself an input: refused
    (client early, router authoritative), and Q/sub/x.jpg keeps its bytes."""
    from pyimgopt.client import Client, plan_jobs

    for d in ("P/sub", "Q/sub"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "P/sub/x.jpg").write_bytes(jpeg(quality=97))
    other = jpeg(photo(200, 150, seed=7), quality=97)
    (tmp_path / "Q/sub/x.jpg").write_bytes(other)
    (tmp_path / "Q/sub/y.png").write_bytes(encode(Image.new("RGB", (40, 40), (9, 9, 9)), "PNG"))
    paths = [tmp_path / "P", tmp_path / "Q/sub/x.jpg"]
    s = Settings(format=fmt)
    jobs, refused = plan_jobs(paths, s, str(tmp_path / "Q"), False)
    assert [os.path.basename(j["input"]) for j in jobs] == ["x.jpg"]
    assert jobs[0]["input"].endswith("Q/sub/x.jpg")
    assert len(refused) == 1 and refused[0].error.code == "scope_denied"
    assert "another input" in refused[0].error.message

    # The router refuses it too when a client sends the clash anyway.
    from pyimgopt import protocol
    with Client.local(workers=0) as c:
        reply = c._request("submit", batch="b" * 16, priority=0, settings=protocol.pack_settings(s),
                           in_place=False, jobs=[
                               {"id": "", "input": str(tmp_path / "P/sub/x.jpg"),
                                "output": str(tmp_path / "Q/sub/x.jpg")},
                               {"id": "", "input": str(tmp_path / "Q/sub/x.jpg"),
                                "output": str(tmp_path / "R/sub/x.jpg")}])
        assert reply["total"] == 2
        batch = c.attach("b" * 16)
        results = batch.wait(60)
    refused = [r for r in results if r.status == "failed"]
    assert len(refused) == 1 and refused[0].input.endswith("P/sub/x.jpg")
    assert refused[0].error.code == "scope_denied"
    assert (tmp_path / "Q/sub/x.jpg").read_bytes() == other


def test_security_a_non_utf8_file_name_fails_alone(tmp_path):
    """A name with undecodable bytes is one failed file, not a refused batch."""
    from pyimgopt.client import Client

    (tmp_path / "in").mkdir()
    good = encode(Image.new("RGB", (64, 64), (0, 200, 0)), "PNG", compress_level=0)
    (tmp_path / "in" / "ok.png").write_bytes(good)
    with open(os.path.join(os.fsencode(tmp_path / "in"), b"bad\xff.png"), "wb") as fh:
        fh.write(good)
    with Client.local(workers=1) as c:
        results = c.submit([tmp_path / "in"], out_dir=tmp_path / "out").wait(60)
    by = {r.status: r for r in results}
    assert sorted(r.status for r in results) == ["failed", "optimized"]
    err = by["failed"].error
    assert err.code == "io_error" and "UTF-8" in err.message and "\\xff" in by["failed"].input
    assert (tmp_path / "out" / "ok.png").exists()


def _auto_root(tmp_path):
    """in/a.png, a photo that format="auto" turns into a lossy format; out/ holds
    a.webp and a.jpg already; the policy may write new files under out/ but
    not overwrite, and never an AVIF: every lossy name auto could pick is forbidden."""
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(encode(Image.fromarray(photo(400, 300)), "PNG"))
    (tmp_path / "out" / "a.webp").write_bytes(b"keep me")
    (tmp_path / "out" / "a.jpg").write_bytes(b"keep me too")
    caps = Capabilities(read=True, write_new=True, overwrite=False, formats=frozenset({"auto", "keep"}),
                        max_pixels=10**8, max_file_bytes=2**30, max_batch_bytes=2**32,
                        max_batch_files=100)
    return Policy(caps, Scope(allow=(f"{tmp_path}/in/**",)),
                  Scope(allow=(f"{tmp_path}/out/**",), deny=("/**/*.avif",)))


def _check_auto_refused(tmp_path, results):
    (r,) = results
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) in (["a.jpg", "a.webp"],
                                                                   ["a.jpg", "a.png", "a.webp"])
    assert (tmp_path / "out" / "a.webp").read_bytes() == b"keep me"
    assert (tmp_path / "out" / "a.jpg").read_bytes() == b"keep me too"
    if r.status == "failed":
        assert r.error.code == "scope_denied" and "not allowed" in r.error.message
    else:  # auto kept PNG, the one name it may write
        assert r.output.endswith("/out/a.png")
        decode((tmp_path / "out" / "a.png").read_bytes())
    assert not temp_files(tmp_path)


def test_security_auto_never_writes_a_name_the_policy_forbids(tmp_path):
    """format="auto" picks the extension after encoding: the writer checks that
    final name (write scope, deny patterns, overwrite), not only the one submitted."""
    policy = _auto_root(tmp_path)
    with Client.local(workers=1, config=RouterConfig(local_policy=policy, **FAST), policy=policy) as c:
        results = c.submit([tmp_path / "in" / "a.png"], Settings(format="auto"),
                           out_dir=tmp_path / "out").wait(120)
    _check_auto_refused(tmp_path, results)


def test_security_auto_inline_writer_checks_the_final_name_too(tmp_path):
    """The same attack through a sidecar that gets the image bytes inline: the
    router is the writer then, and refuses the name just the same."""
    from pyimgopt.router import Router

    policy = _auto_root(tmp_path)
    private = tmp_path / "ipc"
    private.mkdir(mode=0o700)
    router = Router(f"ipc://{private}/c", f"ipc://{private}/s",
                    RouterConfig(pool=False, local_policy=policy, **FAST))
    router.start()
    side = subprocess.Popen([sys.executable, "-m", "pyimgopt_sidecar", "--connect", router.sidecar_endpoint,
                             "--inline", "--heartbeat", "0.2"])
    try:
        with Client.connect(router.client_endpoint, timeout=30, policy=policy) as c:
            results = c.submit([tmp_path / "in" / "a.png"], Settings(format="auto"),
                               out_dir=tmp_path / "out").wait(120)
    finally:
        side.terminate()
        side.wait(30)
        router.stop()
    _check_auto_refused(tmp_path, results)


def test_security_abstract_ipc_endpoints_are_refused(tmp_path):
    """ipc://@name has no file and no permissions: any local user could bind or
    reach it. A router will not bind it, a client or sidecar will not connect."""
    from pyimgopt.errors import PyimgoptError
    from pyimgopt.router import Router

    name = f"ipc://@pyimgopt-test-{os.getpid()}"
    private = tmp_path / "ipc"
    private.mkdir(mode=0o700)
    for client_ep, sidecar_ep in ((name, f"ipc://{private}/s"), (f"ipc://{private}/c", name + "-s")):
        router = Router(client_ep, sidecar_ep, RouterConfig(workers=0))
        with pytest.raises(PermissionError, match="abstract"):
            router.start()
    with pytest.raises(PyimgoptError, match="abstract"):
        Client.connect(name)
    side = subprocess.run([sys.executable, "-m", "pyimgopt_sidecar", "--connect", name],
                          capture_output=True, text=True, timeout=60)
    assert side.returncode == 2 and "abstract" in side.stderr


def _raw(endpoint, **opts):
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 10_000)
    sock.connect(endpoint)
    return sock


def test_security_insecure_loopback_grants_only_what_is_configured(tmp_path):
    """--insecure-loopback: any local user can connect to that TCP port, so a
    keyless connection gets RouterConfig.insecure_policy (default: nothing),
    sees no global figures, and cannot register as a sidecar."""
    from pyimgopt.router import Router

    root = tree(tmp_path)
    private = tmp_path / "ipc"
    private.mkdir(mode=0o700)
    router = Router("tcp://127.0.0.1:0", f"ipc://{private}/s",
                    RouterConfig(insecure_loopback=True, workers=1, **FAST))
    router.start()
    try:
        with Client.connect(router.client_endpoint, timeout=10) as c:
            with pytest.raises(Exception) as err:
                c.submit([root / "in"], Settings(), out_dir=root / "out")
            assert getattr(err.value, "code", None) == "capability_denied"
            assert set(c.status()) == {"batches", "features"}
    finally:
        router.stop()
    assert not list((root / "out").iterdir())

    # with a policy configured for it, exactly that policy
    router = Router("tcp://127.0.0.1:0", f"ipc://{private}/s2",
                    RouterConfig(insecure_loopback=True, workers=1, insecure_policy=narrow_policy(root),
                                 **FAST))
    router.start()
    try:
        with Client.connect(router.client_endpoint, timeout=30) as c:
            results = c.submit([root / "in", root / "secret"], Settings(), out_dir=root / "out").wait(60)
        assert sorted(r.status for r in results) == ["failed", "optimized"]
    finally:
        router.stop()

    # a sidecar without a key on an insecure TCP sidecar endpoint is never registered
    router = Router(f"ipc://{private}/c3", "tcp://127.0.0.1:0",
                    RouterConfig(insecure_loopback=True, pool=False, **FAST))
    router.start()
    raw = _raw(router.sidecar_endpoint)
    try:
        raw.send_multipart(protocol.encode("ready", slots=4, pid=1, name="keyless", inline=True))
        raw.send_multipart(protocol.encode("heartbeat", rss=0, busy=[]))
        with Client.connect(router.client_endpoint, timeout=10) as c:
            for _ in range(3):  # a few round trips: the sidecar endpoint is drained first each turn
                assert c.status()["sidecars"] == []
    finally:
        raw.close(0)
        router.stop()


def test_security_router_never_reads_image_contents(tmp_path):
    """Header probing for memory admission happens in the sidecars: no thread of
    the router's process opens an input (an audit hook sees every open)."""
    import threading

    (tmp_path / "in").mkdir()
    inputs = set()
    for i in range(4):
        p = tmp_path / "in" / f"p{i}.png"
        p.write_bytes(encode(Image.fromarray(photo(300, 200, seed=i)), "PNG"))
        inputs.add(str(p))
    opened: list = []
    watching = [True]

    def hook(event, args):
        if watching[0] and event == "open" and isinstance(args[0], (str, bytes)):
            if os.fsdecode(args[0]) in inputs:
                opened.append((threading.current_thread().name, args[0]))

    sys.addaudithook(hook)  # cannot be removed; it goes quiet when the test ends
    try:
        with Client.local(workers=1, config=RouterConfig(**FAST)) as c:
            results = c.submit([tmp_path / "in"], Settings(format="webp"), out_dir=tmp_path / "out").wait(60)
    finally:
        watching[0] = False
    assert sorted(r.status for r in results) == ["optimized"] * 4
    assert opened == []


def test_security_whole_messages_are_bounded_not_only_frames(monkeypatch):
    """Two frames each under the limit are refused when together they are over it."""
    from pyimgopt.errors import ProtocolError

    monkeypatch.setattr(protocol, "MAX_MESSAGE_BYTES", 64 * 1024)
    body = protocol.encode("job", bulk=[b"x"], job="j", attempt=1, lease_ms=1, input="/" + "a" * 30_000,
                           output=None, in_place=False, settings={}, inline=True)[0]
    assert protocol.decode([body, b"x" * 1000]).type == "job"
    with pytest.raises(ProtocolError, match="MAX_MESSAGE_BYTES"):
        protocol.decode([body, b"x" * 40_000])  # each frame under 64 KiB, the message over


def test_security_a_client_cannot_make_the_router_hold_a_big_message(tmp_path):
    """Clients never send bulk frames: the client endpoint takes no frame over
    MAX_BODY_BYTES (ZeroMQ drops that connection unread), and serves on."""
    with Client.local(workers=0) as c:
        raw = _raw(c.endpoint)
        try:
            raw.send_multipart([b"\x81\xa1v\x01" + b"x" * (protocol.MAX_BODY_BYTES + 1)], zmq.NOBLOCK)
            assert raw.poll(500) == 0  # no answer: it was never read
        finally:
            raw.close(0)
        assert c.status()["counters"]["protocol_errors"] == 0
