"""``Client.jobs``: a batch's jobs learnt from the router, a page at a time.

Real routers (threads, and one process for the old-router case), real ipc
sockets, real SQLite journals. Routers run with ``pool=False`` and no
sidecar connects: jobs stay queued, so the tests list a batch that is still
open without processing a file, and each stays well under a second but the
old-router one (a Python process: ~1 s).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import zmq
from PIL import Image

from pyimgopt import Settings, protocol
from pyimgopt.client import Client
from pyimgopt.errors import InvalidSettingsError, IOFailureError, ProtocolError
from pyimgopt.router import Router, RouterConfig
from pyimgopt.security import Capabilities, Policy, Scope

from conftest import encode

# the router's and client's machinery, no pixels: the native pass covers it
pytestmark = pytest.mark.one_backend


def _png(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(Image.new("RGB", (4, 4), (200, 30, 30)), "PNG"))


@pytest.fixture
def private(tmp_path):
    folder = tmp_path / "ipc"
    folder.mkdir(mode=0o700)
    return folder


def _router(private, name="r", **cfg):
    router = Router(f"ipc://{private}/{name}-c", f"ipc://{private}/{name}-s",
                    RouterConfig(pool=False, **cfg))
    router.start()
    return router


def test_client_jobs_pages_list_every_job_in_submit_order(tmp_path, private):
    for i in range(12):
        _png(tmp_path / "in" / f"f{i:02}.png")
    router = _router(private)
    try:
        with Client.connect(router.client_endpoint, timeout=10) as c:
            batch = c.submit([tmp_path / "in"], Settings(format="webp", quality=70), out_dir=tmp_path / "out",
                             dry_run=True)
            pages = [c.jobs(batch.id, 0, 5)]
            while pages[-1]["next"] is not None:
                pages.append(c.jobs(batch.id, pages[-1]["next"], 5))
            assert [(p["offset"], p["next"], len(p["jobs"])) for p in pages] == [(0, 5, 5), (5, 10, 5),
                                                                                   (10, None, 2)]
            head = pages[0]
            assert (head["batch"], head["total"], head["hidden"], head["state"]) == (batch.id, 12, 0, "active")
            assert head["in_place"] is False and head["options"] == {"dry_run": True}
            assert head["settings"]["format"] == "webp" and head["settings"]["quality"] == 70
            jobs = [j for p in pages for j in p["jobs"]]
            src = os.path.realpath(tmp_path / "in")
            dst = os.path.realpath(tmp_path / "out")
            assert [(j["input"], j["output"]) for j in jobs] == [
                (f"{src}/f{i:02}.png", f"{dst}/f{i:02}.webp") for i in range(12)]
            assert {j["state"] for j in jobs} == {"queued"} and len({j["id"] for j in jobs}) == 12
            assert list(c.iter_jobs(batch.id, page=7)) == jobs
            assert c.jobs(batch.id, 12)["jobs"] == [] and c.jobs(batch.id, 99)["next"] is None
            c.status(batch.id)
            batch.pause()
            assert c.jobs(batch.id, 0, 1)["state"] == "paused"
            batch.cancel()
            cancelled = c.jobs(batch.id, 0, 100)
            assert cancelled["state"] == "done"
            assert {(j["state"], j["code"]) for j in cancelled["jobs"]} == {("cancelled", "cancelled")}
            with pytest.raises(IOFailureError, match="unknown batch"):
                c.jobs("no-such-batch")
            with pytest.raises(InvalidSettingsError, match="offset"):  # refused before sending
                c.jobs(batch.id, -1)
            kind, err = _raw_page(router.client_endpoint, batch.id, -1)  # and by the router when sent
            assert kind == "error" and isinstance(err, ProtocolError) and "offset" in err.message
    finally:
        router.stop()


def test_client_jobs_a_page_stops_at_what_fits_one_message(tmp_path, private):
    """Long paths: a page holds what fits half a message body, whatever the limit asked."""
    one = tmp_path / "one.png"
    _png(one)
    deep = tmp_path.joinpath(*["d" * 250] * 12)  # a 3,000-character folder: ~3.7 KB of paths a job
    deep.mkdir(parents=True)
    n = 700
    for i in range(n):  # hard links: distinct files to the router's checks, one inode on disk
        os.link(one, deep / f"{i:04}{'x' * 240}.png")
    router = _router(private)
    try:
        with Client.connect(router.client_endpoint, timeout=30) as c:
            batch = c.submit([deep], Settings(), out_dir=tmp_path / "out")
            first = c.jobs(batch.id, 0, protocol.MAX_JOBS_PAGE)
            assert first["total"] == n and 0 < len(first["jobs"]) == first["next"] < n
            body = protocol.encode("reply", req="r", ok=True, data=first)[0]
            assert len(body) <= protocol.MAX_BODY_BYTES // 2
            everything = list(c.iter_jobs(batch.id, page=protocol.MAX_JOBS_PAGE))
            assert [j["input"] for j in everything] == sorted(
                os.path.join(os.path.realpath(deep), p) for p in os.listdir(deep))
    finally:
        router.stop()


def test_client_jobs_a_page_holds_at_most_max_jobs_page(tmp_path, private):
    """A batch of MAX_JOBS_PAGE + 1 jobs written to a real journal (no files needed: a
    router started with recover=False answers from the journal without checking them)."""
    from pyimgopt.journal import Journal

    state = tmp_path / "state"
    n = protocol.MAX_JOBS_PAGE + 1
    journal = Journal(state)
    try:
        journal.add_batch("big", None, 0, protocol.pack_settings(Settings()), False, [
            {"id": f"big:{i}", "seq": i, "input": f"/in/{i:05}.png", "output": f"/out/{i:05}.png",
             "status": "queued"} for i in range(n)])
    finally:
        journal.close()
    router = _router(private, state_dir=str(state), recover=False)
    try:
        with Client.connect(router.client_endpoint, timeout=30) as c:
            page = c.jobs("big", 0, 10**9)
            assert (page["total"], len(page["jobs"]), page["next"]) == (n, protocol.MAX_JOBS_PAGE,
                                                                      protocol.MAX_JOBS_PAGE)
            assert [j["input"] for j in c.jobs("big", page["next"], 10**9)["jobs"]] == [f"/in/{n - 1:05}.png"]
    finally:
        router.stop()


def test_client_jobs_withholds_inputs_outside_the_connections_read_scope(tmp_path, private):
    _png(tmp_path / "in" / "a.png")
    _png(tmp_path / "secret" / "s.png")
    root = os.path.realpath(tmp_path)
    narrow = Policy(Capabilities.full(), Scope(allow=(f"{root}/in/**",)), Scope(allow=(f"{root}/out/**",)))
    router = _router(private, local_policy=narrow)
    try:
        with Client.connect(router.client_endpoint, timeout=10) as c:  # the client itself checks nothing
            batch = c.submit([tmp_path / "in", tmp_path / "secret"], Settings(), out_dir=tmp_path / "out")
            page = c.jobs(batch.id)
            assert page["total"] == 2 and page["hidden"] == 1 and page["next"] is None
            assert [j["input"] for j in page["jobs"]] == [f"{root}/in/a.png"]
            assert "secret" not in repr(page)
    finally:
        router.stop()


def test_client_jobs_reads_a_batch_the_router_holds_only_in_its_journal(tmp_path, private):
    for i in range(3):
        _png(tmp_path / "in" / f"f{i}.png")
    state = str(tmp_path / "state")
    router = _router(private, "a", state_dir=state)
    try:
        with Client.connect(router.client_endpoint, timeout=10) as c:
            bid = c.submit([tmp_path / "in"], Settings(), out_dir=tmp_path / "out").id
            before = list(c.iter_jobs(bid))
    finally:
        router.stop()
    router = _router(private, "b", state_dir=state, recover=False)  # the batch stays in the journal only
    try:
        with Client.connect(router.client_endpoint, timeout=10) as c:
            assert c.status()["batches"] == []
            page = c.jobs(bid, 1, 5)
            assert (page["total"], page["offset"], page["next"], page["state"]) == (3, 1, None, "active")
            assert page["jobs"] == before[1:]
            assert [j["id"] for j in c.iter_jobs(bid, page=2)] == [j["id"] for j in before]
            with pytest.raises(IOFailureError, match="unknown batch"):
                c.jobs("no-such-batch")
    finally:
        router.stop()


def _raw_page(endpoint, bid, offset, limit=1):
    """One batch_jobs request sent by hand (offsets a Client refuses to send): (type, data)."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 10000)
    try:
        sock.connect(endpoint)
        sock.send(protocol.msgpack.packb({"v": protocol.VERSION, "t": "batch_jobs", "req": "r1", "batch": bid,
                                          "offset": offset, "limit": limit}))
        reply = protocol.decode(sock.recv_multipart())
        return reply.type, (protocol.unpack_error(reply["error"]) if reply.type == "error" else reply["data"])
    finally:
        sock.close(0)


@pytest.mark.parametrize("offset", [2**63 - 1, 2**63, 2**64 - 1])
def test_router_answers_an_offset_past_sqlites_range_as_memory_does(tmp_path, private, offset):
    """An offset past every job is an empty last page whether the batch is in memory or only
    in the journal (SQLite's OFFSET stops at 2**63-1): never a retryable io_error."""
    _png(tmp_path / "in" / "a.png")
    state = str(tmp_path / "state")
    router = _router(private, "a", state_dir=state)
    try:
        with Client.connect(router.client_endpoint, timeout=10) as c:
            bid = c.submit([tmp_path / "in"], Settings(), out_dir=tmp_path / "out").id
            c.jobs(bid)  # registered
        answers = [_raw_page(router.client_endpoint, bid, offset)]
    finally:
        router.stop()
    router = _router(private, "b", state_dir=state, recover=False)
    try:
        answers.append(_raw_page(router.client_endpoint, bid, offset))
    finally:
        router.stop()
    for kind, data in answers:
        assert kind == "reply", data
        page = protocol.unpack_jobs_page(data)
        assert (page["offset"], page["next"], page["total"], page["jobs"]) == (offset, None, 1, [])


@pytest.mark.parametrize("offset, limit", [(1.9, 1), ("abc", 1), (True, 1), (0, 0.5), (-1, 1), (0, 0), (2**63, 1)])
def test_client_jobs_refuses_a_non_integer_or_out_of_range_page_before_sending(private, offset, limit):
    router = _router(private)
    try:
        with Client.connect(router.client_endpoint, timeout=10) as c:
            sent = c.status()["counters"] if "counters" in c.status() else None
            with pytest.raises(InvalidSettingsError, match="offset|limit"):
                c.jobs("any", offset, limit)
            with pytest.raises(InvalidSettingsError, match="page"):
                next(c.iter_jobs("any", page=1.5))
            assert sent is None or c.status()["counters"] == sent
    finally:
        router.stop()


def test_client_status_refreshes_the_routers_features(private, monkeypatch):
    """A router that stops advertising batch_jobs (replaced by an older one at the same
    endpoint) is seen at the next status(): jobs() then says so at once, not a timeout."""
    router = _router(private)
    try:
        with Client.connect(router.client_endpoint, timeout=10) as c:
            with pytest.raises(IOFailureError, match="unknown batch"):
                c.jobs("any")  # features learnt and cached: batch_jobs
            monkeypatch.setattr(protocol, "FEATURES", frozenset())  # what the router now advertises
            assert c.status()["features"] == []
            with pytest.raises(ProtocolError, match="cannot list a batch's jobs.*upgrade"):
                c.jobs("any")
    finally:
        router.stop()


def test_router_answers_an_unknown_request_type_with_a_typed_error_for_that_request(private):
    router = _router(private)
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 10000)
    try:
        sock.connect(router.client_endpoint)
        sock.send(protocol.msgpack.packb({"v": protocol.VERSION, "t": "frobnicate", "req": "r9", "x": 1}))
        reply = protocol.decode(sock.recv_multipart())
        assert reply.type == "error" and reply["req"] == "r9"
        err = protocol.unpack_error(reply["error"])
        assert isinstance(err, ProtocolError) and "frobnicate" in err.message
    finally:
        sock.close(0)
        router.stop()


_OLD_ROUTER = textwrap.dedent("""
    import sys
    from pyimgopt import protocol
    # the router of a release before batch_jobs: the type is not in its wire, nor its features
    del protocol.SCHEMAS["batch_jobs"]
    protocol.FEATURES = frozenset()
    from pyimgopt.router import Router, RouterConfig
    r = Router(sys.argv[1] + "/c", sys.argv[1] + "/s", RouterConfig(pool=False))
    r.start()
    print(r.client_endpoint, flush=True)
    sys.stdin.read()
    r.stop()
""")


def test_client_jobs_says_clearly_that_an_older_router_cannot_list_jobs(private):
    proc = subprocess.Popen([sys.executable, "-c", _OLD_ROUTER, f"ipc://{private}"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        endpoint = proc.stdout.readline().strip()
        assert endpoint.startswith("ipc://")
        with Client.connect(endpoint, timeout=10) as c:
            assert "features" in c.status() and c.status()["features"] == []
            with pytest.raises(ProtocolError, match="cannot list a batch's jobs.*upgrade"):
                c.jobs("any")
            with pytest.raises(ProtocolError, match="unknown message type 'batch_jobs'"):
                c._request("batch_jobs", batch="any", offset=0, limit=1)  # asked anyway: typed, at once
    finally:
        proc.stdin.close()
        assert proc.wait(30) == 0
        proc.stdout.close()
