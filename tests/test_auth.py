"""CurveZMQ keys and ZAP: key files, who gets through a CURVE router socket,
the clear-text bind rule and ``pyimgopt keys``. Real sockets on 127.0.0.1."""

from __future__ import annotations

import os
import stat

import pytest
import zmq
from zmq.utils import z85

from pyimgopt import auth

RECV_MS = 2000  # an admitted message arrives well within this
REFUSED_MS = 1000  # nothing may arrive within this from a refused peer


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def ctx():
    context = zmq.Context()
    yield context
    context.term()  # hangs (and times out the test) if a socket was left open


@pytest.fixture
def sockets(ctx):
    """socket(kind) -> a socket with linger 0, closed at teardown."""
    made: list[zmq.Socket] = []

    def make(kind: int) -> zmq.Socket:
        sock = ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        made.append(sock)
        return sock

    yield make
    for sock in made:
        sock.close(0)


@pytest.fixture
def keys(tmp_path):
    """Key pairs: the router's, client A's (authorised), client B's (not)."""
    pairs = {
        "router": auth.generate_keypair(tmp_path / "router", "router"),
        "a": auth.generate_keypair(tmp_path / "authorized", "a"),
        "b": auth.generate_keypair(tmp_path / "elsewhere", "b"),
    }
    return tmp_path, pairs


@pytest.fixture
def server(ctx, sockets, keys):
    """(endpoint, ROUTER socket) of a CURVE server that admits client A only."""
    root, pairs = keys
    authenticator = auth.Authenticator(ctx, authorized=[root / "authorized"])
    authenticator.start()
    sock = sockets(zmq.ROUTER)
    auth.make_server(sock, pairs["router"][1])
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    yield f"tcp://127.0.0.1:{port}", sock
    sock.close(0)  # before the ZAP handler goes away
    authenticator.stop()


def receive(sock: zmq.Socket, timeout_ms: int) -> list[zmq.Frame] | None:
    if not sock.poll(timeout_ms, zmq.POLLIN):
        return None
    return sock.recv_multipart(zmq.NOBLOCK, copy=False)


# -- key files ---------------------------------------------------------------------


def test_generate_keypair_modes_and_format(tmp_path):
    old = os.umask(0)  # the modes must not depend on the caller's umask
    try:
        public, secret = auth.generate_keypair(tmp_path / "new" / "keys", "router")
    finally:
        os.umask(old)
    assert (public.name, secret.name) == ("router.key", "router.key_secret")
    assert mode(public) == 0o644
    assert mode(secret) == 0o600
    assert mode(tmp_path / "new" / "keys") == 0o700
    assert sorted(os.listdir(tmp_path / "new" / "keys")) == ["router.key", "router.key_secret"]
    pub = auth.load_public(public)
    assert len(pub) == 40
    assert auth.load_public(secret) == pub
    pub2, sec = auth.load_secret(secret)
    assert pub2 == pub and len(sec) == 40
    assert zmq.curve_public(sec) == pub
    assert auth.key_id(pub) == pub.decode("ascii")
    assert auth.key_id(z85.decode(pub)) == pub.decode("ascii")  # raw 32 bytes too


def test_generate_keypair_refuses_to_overwrite(tmp_path):
    public, secret = auth.generate_keypair(tmp_path, "a")
    before = (public.read_bytes(), secret.read_bytes())
    with pytest.raises(FileExistsError):
        auth.generate_keypair(tmp_path, "a")
    assert (public.read_bytes(), secret.read_bytes()) == before
    secret.unlink()  # either file existing is enough to refuse
    with pytest.raises(FileExistsError):
        auth.generate_keypair(tmp_path, "a")
    assert public.read_bytes() == before[0]
    assert not secret.exists()
    assert sorted(os.listdir(tmp_path)) == ["a.key"]  # no staging folder left behind


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "x\0y"])
def test_generate_keypair_bad_name(tmp_path, name):
    with pytest.raises(ValueError, match="key name"):
        auth.generate_keypair(tmp_path, name)


def test_load_secret_refuses_readable_secret(tmp_path):
    _, secret = auth.generate_keypair(tmp_path, "a")
    os.chmod(secret, 0o644)
    with pytest.raises(PermissionError, match="0644") as info:
        auth.load_secret(secret)
    assert str(secret) in str(info.value)


def test_load_bad_files(tmp_path):
    public, _ = auth.generate_keypair(tmp_path, "a")
    os.chmod(public, 0o600)
    with pytest.raises(ValueError, match="no secret key"):
        auth.load_secret(public)  # 0644 is fine for a public file, but it has no secret
    junk = tmp_path / "junk.key"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    with pytest.raises(ValueError, match="junk.key"):
        auth.load_public(junk)
    short = tmp_path / "short.key"
    short.write_text('curve\n    public-key = "abc"\n')
    with pytest.raises(ValueError, match="40-character"):
        auth.load_public(short)
    with pytest.raises(ValueError):
        auth.key_id(b"not a key")


# -- ZAP over real sockets ---------------------------------------------------------


def test_authorised_client_gets_through_with_its_key_id(server, sockets, keys):
    endpoint, srv = server
    _, pairs = keys
    client = sockets(zmq.DEALER)
    auth.make_client(client, pairs["a"][1], pairs["router"][0])
    client.connect(endpoint)
    client.send_multipart([b"hello", b"bulk"])
    frames = receive(srv, RECV_MS)
    assert frames is not None, "authorised client A was not admitted"
    assert [f.bytes for f in frames[1:]] == [b"hello", b"bulk"]
    expected = auth.key_id(auth.load_public(pairs["a"][0]))
    assert auth.peer_key(frames[1]) == expected
    assert auth.peer_key(frames[2]) == expected
    # and the router can answer it over the same encrypted connection
    srv.send_multipart([frames[0].bytes, b"ok"])
    assert client.poll(RECV_MS) and client.recv() == b"ok"


def test_unauthorised_client_is_refused(server, sockets, keys):
    endpoint, srv = server
    _, pairs = keys
    client = sockets(zmq.DEALER)
    auth.make_client(client, pairs["b"][1], pairs["router"][0])  # right server, unknown key
    client.connect(endpoint)
    client.send(b"let me in")
    assert receive(srv, REFUSED_MS) is None


def test_plain_client_is_refused(server, sockets):
    endpoint, srv = server
    client = sockets(zmq.DEALER)
    client.connect(endpoint)
    client.send(b"no curve at all")
    assert receive(srv, REFUSED_MS) is None


def test_client_with_wrong_server_key_gets_nothing_through(server, sockets, keys):
    endpoint, srv = server
    _, pairs = keys
    client = sockets(zmq.DEALER)
    # an authorised client key, but it believes the server is B (a MITM's key)
    auth.make_client(client, pairs["a"][1], pairs["b"][0])
    client.connect(endpoint)
    client.send(b"for the real router only")
    assert receive(srv, REFUSED_MS) is None


def test_ipc_peer_has_no_key(ctx, sockets, tmp_path):
    srv = sockets(zmq.ROUTER)
    srv.bind(f"ipc://{tmp_path}/sock")
    client = sockets(zmq.DEALER)
    client.connect(f"ipc://{tmp_path}/sock")
    client.send(b"local")
    frames = receive(srv, RECV_MS)
    assert frames is not None
    assert auth.peer_key(frames[1]) is None


def test_make_server_needs_a_running_authenticator(ctx, sockets, keys):
    _, pairs = keys
    sock = sockets(zmq.ROUTER)
    with pytest.raises(RuntimeError, match="Authenticator"):
        auth.make_server(sock, pairs["router"][1])
    # the probe left the ZAP address free: an authenticator can start now
    with auth.Authenticator(ctx, authorized=[]):
        auth.make_server(sock, pairs["router"][1])
        assert sock.getsockopt(zmq.CURVE_SERVER) == 1
        assert sock.getsockopt(zmq.ZAP_DOMAIN) == b"pyimgopt"


def test_authenticator_merges_folders_and_reads_them_once(ctx, keys, tmp_path):
    root, pairs = keys
    ids = {name: auth.key_id(auth.load_public(pairs[name][0])) for name in ("a", "b")}
    authenticator = auth.Authenticator(ctx, authorized=[root / "authorized", root / "elsewhere"])
    authenticator.start()
    try:
        # *.key only: the .key_secret files beside them are not keys to admit
        assert authenticator.allowed() == {ids["a"], ids["b"]}
        auth.generate_keypair(root / "authorized", "late")
        assert authenticator.allowed() == {ids["a"], ids["b"]}  # picked up on restart only
    finally:
        authenticator.stop()
    authenticator.start()
    try:
        assert len(authenticator.allowed()) == 3
    finally:
        authenticator.stop()


def test_authenticator_refuses_bad_folders(ctx, tmp_path):
    with pytest.raises(FileNotFoundError):
        auth.Authenticator(ctx, authorized=[tmp_path / "missing"]).start()
    (tmp_path / "bad.key").write_text("not a key\n")
    with pytest.raises(ValueError, match="bad.key"):
        auth.Authenticator(ctx, authorized=[tmp_path]).start()
    with pytest.raises(TypeError):
        auth.Authenticator(ctx, authorized=str(tmp_path))


# -- binding in the clear ----------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "curve", "loopback", "allowed"),
    [
        ("tcp://127.0.0.1:5555", False, False, False),
        ("tcp://127.0.0.1:5555", False, True, True),
        ("tcp://localhost:5555", False, True, True),
        ("tcp://[::1]:5555", False, True, True),
        ("tcp://*:5555", False, True, False),
        ("tcp://0.0.0.0:5555", False, True, False),
        ("tcp://[::]:5555", False, True, False),
        ("tcp://192.168.1.10:5555", False, True, False),
        ("tcp://eth0:5555", False, True, False),
        ("tcp://*:5555", True, False, True),
        ("ipc:///tmp/pyimgopt/clients", False, False, True),
        ("inproc://router", False, False, True),
    ],
)
def test_check_tcp_bind(endpoint, curve, loopback, allowed):
    if allowed:
        auth.check_tcp_bind(endpoint, curve=curve, insecure_loopback=loopback)
    else:
        with pytest.raises(PermissionError, match="CurveZMQ"):
            auth.check_tcp_bind(endpoint, curve=curve, insecure_loopback=loopback)


# -- pyimgopt keys -----------------------------------------------------------------


def test_keys_main_generate_and_show(tmp_path, capsys):
    assert auth.keys_main(["generate", str(tmp_path / "k"), "router"]) == 0
    out = capsys.readouterr().out.split()
    assert out == [str(tmp_path / "k" / "router.key"), str(tmp_path / "k" / "router.key_secret")]
    expected = auth.load_public(out[0]).decode("ascii")
    for path in out:
        assert auth.keys_main(["show", path]) == 0
        assert capsys.readouterr().out.strip() == expected
    assert auth.keys_main(["generate", str(tmp_path / "k"), "router"]) == 1
    assert "already exists" in capsys.readouterr().err
    (tmp_path / "junk").write_text("junk")
    assert auth.keys_main(["show", str(tmp_path / "junk")]) == 1
    assert auth.keys_main(["show", str(tmp_path / "missing.key")]) == 1


@pytest.mark.parametrize(
    "argv",
    [[], ["rotate"], ["show"], ["generate", "dir"], ["show", "a", "b"], ["generate", "d", "a/b"]],
)
def test_keys_main_usage_errors(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert auth.keys_main(argv) == 2
    assert capsys.readouterr().err
