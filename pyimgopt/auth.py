"""CurveZMQ keys and ZAP authentication: who may talk to a router over TCP.

Owns the key files (zmq.auth's certificate format: ``NAME.key`` holds the
public key and may be shared, ``NAME.key_secret`` holds both and stays 0600),
the ZAP handler that admits exactly the public keys found in the authorised
folders (:class:`Authenticator`), the socket options that make a socket a
CURVE server or client (:func:`make_server`, :func:`make_client`), the key a
message arrived with (:func:`peer_key`, the identity the router maps to a
capability set), the rule that no TCP endpoint is bound in the clear
(:func:`check_tcp_bind`) and ``pyimgopt keys`` (:func:`keys_main`).

A key id is the z85 text of a public key (40 characters); it is what ZAP
reports as the User-Id of every message a CURVE peer sends.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import pathlib
import shutil
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Iterable

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

__all__ = [
    "ZAP_DOMAIN",
    "generate_keypair",
    "load_public",
    "load_secret",
    "key_id",
    "Authenticator",
    "authorized_keys",
    "make_server",
    "make_client",
    "peer_key",
    "check_tcp_bind",
    "check_ipc_bind",
    "check_not_abstract",
    "keys_main",
]

#: The ZAP domain of every pyimgopt server socket.
ZAP_DOMAIN = b"pyimgopt"

# libzmq's fixed address for the ZAP handler of a context (RFC 27).
_ZAP_ENDPOINT = "inproc://zeromq.zap.01"
_PUBLIC_SUFFIX = ".key"
_SECRET_SUFFIX = ".key_secret"
_LOOPBACK_NAMES = frozenset({"localhost"})
_LOCAL_TRANSPORTS = frozenset({"ipc", "inproc"})


# --------------------------------------------------------------------------
# keys


def key_id(public: bytes) -> str:
    """Return the key id of ``public``: its z85 text (40 characters).

    ``public`` is a z85 public key (40 bytes, as the key files and ZeroMQ's
    socket options hold it) or a raw one (32 bytes, as ZAP receives it).

    Raises
    ------
    ValueError
        If ``public`` is neither.
    """
    if isinstance(public, str):
        public = public.encode("ascii", "replace")
    if not isinstance(public, (bytes, bytearray)):
        raise ValueError(f"Expected a public key as bytes but received {type(public).__name__}")
    public = bytes(public)
    if len(public) == 32:
        return z85.encode(public).decode("ascii")
    _check_z85_key(public, "public key")
    return public.decode("ascii")


def _check_z85_key(key: bytes, what: str, path: object = None) -> None:
    where = f" in {path}" if path is not None else ""
    if len(key) != 40:
        raise ValueError(
            f"Expected a 40-character z85 {what}{where} but received {len(key)} characters"
        )
    try:
        raw = z85.decode(key)
    except Exception:  # z85.decode raises KeyError/ValueError/TypeError on bad characters
        raw = b""
    if len(raw) != 32:
        raise ValueError(f"Expected a z85 {what}{where} but it holds characters outside z85")


def _read_certificate(path: str | os.PathLike) -> tuple[bytes, bytes | None]:
    path = os.fspath(path)
    try:
        public, secret = zmq.auth.load_certificate(path)
    except ValueError as exc:  # "No public key found in ..."
        raise ValueError(f"{path} is not a key file: {exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a key file (not text)") from None
    _check_z85_key(public, "public key", path)
    if secret is not None:
        _check_z85_key(secret, "secret key", path)
    return public, secret


def load_public(path: str | os.PathLike) -> bytes:
    """Return the z85 public key (40 bytes) of a ``.key`` or ``.key_secret`` file.

    Raises
    ------
    ValueError
        If the file holds no valid public key.
    OSError
        If it cannot be read.
    """
    return _read_certificate(path)[0]


def load_secret(path: str | os.PathLike) -> tuple[bytes, bytes]:
    """Return ``(public, secret)``, both z85, from a ``.key_secret`` file.

    Raises
    ------
    PermissionError
        If group or others may access the file (mode & 0o077): a secret
        others can read is no longer a secret; ``chmod 600`` it (or make a
        new pair and authorise that one instead).
    ValueError
        If the file holds no secret key, or a secret key that does not
        belong to its public key.
    """
    path = os.fspath(path)
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        raise PermissionError(
            f"secret key file {path} has mode {mode:04o}: group/others may read it; "
            f"run 'chmod 600 {path}' (and consider the key leaked)"
        )
    public, secret = _read_certificate(path)
    if secret is None:
        raise ValueError(f"{path} holds no secret key (is it the public .key file?)")
    if zmq.curve_public(secret) != public:
        raise ValueError(f"{path}: its secret key does not belong to its public key")
    return public, secret


def generate_keypair(directory: str | os.PathLike, name: str) -> tuple[pathlib.Path, pathlib.Path]:
    """Write a new key pair ``NAME.key`` (0644) and ``NAME.key_secret`` (0600).

    ``directory`` is created (0700) if missing. The files are written in a
    private temporary folder and then linked into place, so the secret is
    never readable by others, not even for a moment, and an existing file is
    never replaced.

    Returns
    -------
    (public_path, secret_path)

    Raises
    ------
    FileExistsError
        If either file already exists (nothing is written).
    ValueError
        If ``name`` is empty or not a plain file name.
    """
    if (
        not isinstance(name, str)
        or not name
        or name in (".", "..")
        or "\0" in name
        or "/" in name
        or os.sep in name
        or (os.altsep and os.altsep in name)
    ):
        raise ValueError(f"Expected a plain file name for the key name but received {name!r}")
    folder = pathlib.Path(directory)
    if not folder.exists():
        folder.mkdir(mode=0o700, parents=True)
        os.chmod(folder, 0o700)  # mkdir's mode is filtered by the umask
    public_path = folder / (name + _PUBLIC_SUFFIX)
    secret_path = folder / (name + _SECRET_SUFFIX)
    for p in (public_path, secret_path):
        if os.path.lexists(p):
            raise FileExistsError(f"{p} already exists; refusing to overwrite a key")
    staging = tempfile.mkdtemp(prefix=".keys-", dir=folder)  # 0700
    try:
        made_public, made_secret = zmq.auth.create_certificates(staging, name)
        os.chmod(made_secret, 0o600)
        os.chmod(made_public, 0o644)
        _place(made_public, public_path)
        try:
            _place(made_secret, secret_path)
        except BaseException:
            os.unlink(public_path)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return public_path, secret_path


def _place(src: str | os.PathLike, dst: pathlib.Path) -> None:
    """Move ``src`` to ``dst`` without ever replacing an existing ``dst``."""
    try:
        os.link(src, dst)  # fails with FileExistsError: no check-then-rename race
    except FileExistsError:
        raise FileExistsError(f"{dst} already exists; refusing to overwrite a key") from None
    except OSError:  # a file system without hard links
        if os.path.lexists(dst):
            raise FileExistsError(f"{dst} already exists; refusing to overwrite a key") from None
        os.rename(src, dst)


# --------------------------------------------------------------------------
# ZAP


class Authenticator:
    """ZAP handler for a router: allows exactly the public keys found in the
    given folders (their ``*.key`` files).

    It must run in the same :class:`zmq.Context` as the server sockets
    (ZAP talks over ``inproc``) and be started before :func:`make_server`.
    The folders are read once, by :meth:`start`: keys added to or removed
    from a folder later take effect when the authenticator (i.e. the router)
    is restarted, so the set of admitted keys never changes under a running
    router. Every folder is read the same way (a CURVE credentials provider
    over the union of their keys), so several folders need no merging on disk.

    Parameters
    ----------
    context:
        The context of the sockets to protect.
    authorized:
        Folders of public key files. A missing folder or an unreadable key
        file is an error at :meth:`start`, not a silently empty set.
    """

    def __init__(self, context: zmq.Context, *, authorized: Iterable[str | os.PathLike]) -> None:
        if isinstance(authorized, (str, bytes, os.PathLike)):
            raise TypeError(
                "Expected an iterable of folders for authorized but received a single path; "
                "wrap it in a list"
            )
        self.context = context
        self.folders = [pathlib.Path(f) for f in authorized]
        self._allowed: frozenset[str] = frozenset()
        self._thread: ThreadAuthenticator | None = None
        self._lock = threading.Lock()

    def _load(self) -> frozenset[str]:
        return authorized_keys(self.folders)

    def start(self) -> None:
        """Read the folders and start answering ZAP requests.

        Raises
        ------
        FileNotFoundError, ValueError
            A folder is missing or a ``.key`` file in it is not a key.
        zmq.ZMQError
            Another ZAP handler already runs in this context.
        """
        with self._lock:
            if self._thread is not None:
                return
            self._allowed = self._load()
            auth = ThreadAuthenticator(self.context)
            # The callback path, not configure_curve(location=...): it reads
            # several folders, and a bad key file fails start() instead of
            # being logged and turned into "deny everybody". Configured before
            # the thread runs, so no request is ever answered unconfigured.
            # pyzmq matches the domain exactly ("*" only stands for a socket
            # that sets none), so our servers' domain is registered by name.
            for domain in (ZAP_DOMAIN.decode("ascii"), "*"):
                auth.configure_curve_callback(domain=domain, credentials_provider=self)
            try:
                auth.start()
            except BaseException:
                auth.stop()  # closes the half-made ZAP socket
                raise
            self._thread = auth

    def stop(self) -> None:
        """Stop answering; from now on no CURVE client of this context is admitted."""
        with self._lock:
            if self._thread is None:
                return
            self._thread.stop()
            self._thread = None
            # The ZAP socket's inproc name is released by libzmq's reaper, a
            # moment after close: wait for it, so start() can follow at once.
            deadline = time.monotonic() + 5.0
            while _zap_handler_running(self.context) and time.monotonic() < deadline:
                time.sleep(0.005)

    def allowed(self) -> set[str]:
        """The key ids currently admitted."""
        return set(self._allowed)

    def callback(self, domain: str, key: bytes) -> bool:
        """Credentials provider for pyzmq: ``key`` is the client's z85 public key.

        Runs on the authenticator thread; reads one immutable set.
        """
        try:
            return key_id(key) in self._allowed
        except ValueError:
            return False

    def __enter__(self) -> Authenticator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def authorized_keys(folders: Iterable[str | os.PathLike]) -> frozenset[str]:
    """The key ids of every public key file (``*.key``) in ``folders``.

    Raises
    ------
    FileNotFoundError
        A folder does not exist (never read as "no keys").
    ValueError
        A ``.key`` file in it is not a key.
    """
    keys: set[str] = set()
    for folder in map(pathlib.Path, folders):
        if not folder.is_dir():
            raise FileNotFoundError(f"authorised keys folder {folder} does not exist")
        for path in sorted(folder.glob("*" + _PUBLIC_SUFFIX)):
            if path.is_file():
                keys.add(key_id(load_public(path)))
    return frozenset(keys)


def _zap_handler_running(context: zmq.Context) -> bool:
    probe = context.socket(zmq.REP)
    probe.setsockopt(zmq.LINGER, 0)
    try:
        try:
            probe.bind(_ZAP_ENDPOINT)
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EADDRINUSE:
                return True
            raise
        # close() releases an inproc name only later, on the reaper thread;
        # unbind() releases it now, so an Authenticator can bind right after.
        probe.unbind(_ZAP_ENDPOINT)
        return False
    finally:
        probe.close(0)


def make_server(sock: zmq.Socket, secret_file: str | os.PathLike) -> None:
    """Make ``sock`` a CURVE server with the key pair in ``secret_file``.

    Call before ``bind``, and after :meth:`Authenticator.start` in the same
    context: without a ZAP handler libzmq admits *every* client that knows
    the server's public key, so that case is refused here.

    Raises
    ------
    RuntimeError
        If no ZAP handler runs in the socket's context.
    PermissionError, ValueError
        From :func:`load_secret`.
    """
    public, secret = load_secret(secret_file)
    if not _zap_handler_running(sock.context):
        raise RuntimeError(
            "no ZAP handler runs in this socket's context: start an "
            "Authenticator(context, authorized=[...]) before make_server, "
            "or every client that knows the server key is admitted"
        )
    sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN)
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    sock.setsockopt(zmq.CURVE_SECRETKEY, secret)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, public)


def make_client(
    sock: zmq.Socket, secret_file: str | os.PathLike, server_public_file: str | os.PathLike
) -> None:
    """Make ``sock`` a CURVE client: our key pair from ``secret_file``, the
    server's public key from ``server_public_file`` (``.key`` or ``.key_secret``).

    Call before ``connect``. A client that holds the wrong server key never
    completes the handshake: nothing it sends arrives.
    """
    public, secret = load_secret(secret_file)
    server = load_public(server_public_file)
    sock.setsockopt(zmq.CURVE_SERVERKEY, server)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, secret)


def peer_key(frame: zmq.Frame) -> str | None:
    """The key id of the CURVE peer that sent ``frame``, or None.

    ``frame`` is a received :class:`zmq.Frame` (``recv_multipart(copy=False)``;
    bytes carry no metadata). Pass a body frame: libzmq attaches the ZAP
    metadata to every frame that came over the connection. None for a peer
    without CURVE (ipc, or a NULL-mechanism connection, whose ZAP User-Id is
    empty or "anonymous").
    """
    try:
        user = frame.get("User-Id")
    except (zmq.ZMQError, AttributeError, TypeError):
        return None
    if isinstance(user, bytes):
        user = user.decode("ascii", "replace")
    if not isinstance(user, str):
        return None
    try:
        return key_id(user.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        return None


# --------------------------------------------------------------------------
# binding


def _is_loopback(host: str) -> bool:
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "*", interface names, host names: may listen beyond this machine


def check_tcp_bind(endpoint: str, *, curve: bool, insecure_loopback: bool) -> None:
    """Refuse to bind a network endpoint in the clear.

    ``ipc://`` and ``inproc://`` always pass (the ipc socket lives in a 0700
    folder). Any other transport needs ``curve=True``, except a loopback
    address (127.0.0.0/8, ``localhost``, ``[::1]``) when
    ``insecure_loopback=True``. A wildcard (``*``, ``0.0.0.0``, ``[::]``) or
    an interface name is never loopback.

    Raises
    ------
    PermissionError
        Saying what to do instead.
    ValueError
        If ``endpoint`` is not ``transport://address``.
    """
    if not isinstance(endpoint, str) or "://" not in endpoint:
        raise ValueError(f"Expected an endpoint like tcp://host:port but received {endpoint!r}")
    transport, address = endpoint.split("://", 1)
    if transport.lower() in _LOCAL_TRANSPORTS or curve:
        return
    host = address.rsplit(":", 1)[0] if ":" in address else address
    if insecure_loopback and _is_loopback(host):
        return
    if insecure_loopback:
        raise PermissionError(
            f"refusing to bind {endpoint} without CurveZMQ: --insecure-loopback only allows "
            f"127.0.0.1, localhost or [::1], and {host!r} may be reachable from other machines; "
            "bind a loopback address or give the router a key pair and authorised keys "
            "('pyimgopt keys generate DIR NAME')"
        )
    raise PermissionError(
        f"refusing to bind {endpoint} without CurveZMQ: give the router a key pair and a folder "
        "of authorised client keys ('pyimgopt keys generate DIR NAME'), use an ipc:// endpoint, "
        "or, for a loopback address only, pass --insecure-loopback"
    )


# --------------------------------------------------------------------------
# pyimgopt keys


def keys_main(argv: list[str]) -> int:
    """``pyimgopt keys generate DIR NAME`` / ``pyimgopt keys show FILE``.

    Returns the exit code: 0 on success, 1 when the operation fails (an
    existing key, a bad key file), 2 for a usage error.
    """
    parser = argparse.ArgumentParser(
        prog="pyimgopt keys", description="CurveZMQ key pairs for routers, clients and sidecars."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    gen = sub.add_parser(
        "generate", help="write DIR/NAME.key (public, share it) and DIR/NAME.key_secret (0600)"
    )
    gen.add_argument("dir", metavar="DIR")
    gen.add_argument("name", metavar="NAME")
    show = sub.add_parser("show", help="print the key id (z85 public key) of a key file")
    show.add_argument("file", metavar="FILE")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on a usage error, 0 for --help
        return exc.code if isinstance(exc.code, int) else 2
    try:
        if args.command == "generate":
            for path in generate_keypair(args.dir, args.name):
                print(path)
        else:
            print(key_id(load_public(args.file)))
    except ValueError as exc:
        if args.command == "generate" and "key name" in str(exc):
            print(f"pyimgopt keys: error: {exc}", file=sys.stderr)
            return 2
        print(f"pyimgopt keys: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"pyimgopt keys: {exc}", file=sys.stderr)
        return 1
    return 0


def check_not_abstract(endpoint: str) -> None:
    """Refuse a Linux abstract-namespace ipc endpoint (``ipc://@name``), to bind or to connect.

    Such a socket has no file and no permissions: any local user can bind
    the name first or connect to it, so neither a router nor a client nor a
    sidecar may rely on it. Other endpoints pass.

    Raises
    ------
    PermissionError
        Saying what to use instead.
    """
    if isinstance(endpoint, str) and endpoint.startswith("ipc://@"):
        raise PermissionError(
            f"refusing {endpoint}: an abstract-namespace socket has no permissions, so any local "
            "user could take it over or connect to it; use ipc:///PATH in a folder only you can "
            "enter (0700)"
        )


def check_ipc_bind(endpoint: str) -> None:
    """Refuse an ``ipc://`` endpoint whose folder others could reach, or that a live router holds.

    The folder must be owned by this user and closed to group and others
    (0700), since the local endpoint carries no authentication of its own.
    A Linux abstract-namespace socket (``ipc://@name``) has no folder and no
    permissions at all, so any local user could connect: refused.
    An existing socket file that accepts a connection belongs to a running
    router: binding over it (libzmq would unlink it) is refused; a stale
    one is left for libzmq to replace. Other transports pass.

    Raises
    ------
    PermissionError
        An abstract socket; the folder is not private to this user; or the
        endpoint is in use.
    """
    if not endpoint.startswith("ipc://"):
        return
    check_not_abstract(endpoint)
    path = endpoint[len("ipc://"):]
    folder = os.path.dirname(os.path.abspath(path)) or "."
    st = os.stat(folder)
    if st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise PermissionError(
            f"refusing to bind {endpoint}: its folder {folder} must be owned by this user "
            f"with mode 0700 (it is {stat.S_IMODE(st.st_mode):04o}, uid {st.st_uid})"
        )
    if os.path.exists(path):
        import socket

        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except OSError:
            return  # stale socket file: nobody listens
        finally:
            probe.close()
        raise PermissionError(f"refusing to bind {endpoint}: another router is listening there")
