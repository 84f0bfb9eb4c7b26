"""The web UI's HTTP side: a loopback-only server in front of a :class:`Session`.

Owns the request checks every response goes through — the per-launch token
(query ``token``, or header ``X-Pyimgopt-Token``), ``Host`` and ``Origin``
against DNS rebinding and cross-site requests, a strict
Content-Security-Policy and the other security headers on every response,
errors included — the routes (page, static assets, JSON API, Server-Sent
Events, previews) and the mapping of :class:`UIError` to HTTP statuses with a
typed JSON body. Nothing here decides what may be read or written: the
session and the client's policy do.
"""

from __future__ import annotations

import hmac
import html
import io
import json
import secrets
import threading
import time
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources

from ..errors import IOFailureError, InvalidSettingsError
from ..formats import sniff
from .forms import UIError
from .session import Session

__all__ = ["UIServer", "CSP"]

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the token is in the URL: never send it on
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
}
_STATIC = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8",
           "icon.svg": "image/svg+xml"}
#: Formats a browser shows as they are; others are previewed as a lossless PNG.
_BROWSER_FORMATS = {"jpeg": "image/jpeg", "png": "image/png", "gif": "image/gif",
                    "webp": "image/webp", "avif": "image/avif", "bmp": "image/bmp"}
_MAX_BODY = 1 << 20
_MAX_PREVIEW = 256 << 20


def _asset(name: str) -> bytes:
    return resources.files("pyimgopt.ui").joinpath("static", name).read_bytes()


class _Handler(BaseHTTPRequestHandler):
    server: UIServer
    protocol_version = "HTTP/1.1"
    timeout = 30  # a connection that stops sending is dropped, not kept forever
    server_version = "pyimgopt-ui"
    sys_version = ""

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        if self.server.verbose:
            super().log_message(format, *args)

    # -- responses ------------------------------------------------------------------

    def _send(self, status: int, body: bytes, ctype: str, extra: dict | None = None) -> None:
        self.send_response(status)
        for k, v in _HEADERS.items():
            self.send_header(k, v)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _error(self, status: int, code: str, message: str) -> None:
        if status >= 400 and not getattr(self, "_body_read", False):
            self.close_connection = True  # an unread body must never be parsed as a request
        self._json(status, {"error": {"code": code, "message": message}})

    def send_error(self, code, message=None, explain=None) -> None:  # stdlib errors get our headers
        self.close_connection = True
        try:
            self._error(int(code), "http", message or HTTPStatus(code).phrase)
        except OSError:
            pass

    # -- checks ---------------------------------------------------------------------

    def _allowed_hosts(self) -> set[str]:
        port = self.server.server_address[1]
        return {f"127.0.0.1:{port}", f"localhost:{port}"}

    def _checked(self) -> urllib.parse.SplitResult | None:
        """Host, Origin and token checks; ``None`` after answering 403."""
        host = (self.headers.get("Host") or "").lower()
        if host not in self._allowed_hosts():
            self._error(403, "forbidden", f"Host {host!r} is not this UI (DNS rebinding?)")
            return None
        origin = self.headers.get("Origin")
        if origin is not None and origin.lower() not in {f"http://{h}" for h in self._allowed_hosts()}:
            self._error(403, "forbidden", f"Origin {origin!r} may not use this UI")
            return None
        site = self.headers.get("Sec-Fetch-Site")
        if self.command == "POST" and site not in (None, "same-origin", "none"):
            self._error(403, "forbidden", f"cross-site request ({site}) refused")
            return None
        url = urllib.parse.urlsplit(self.path)
        q = urllib.parse.parse_qs(url.query)
        token = self.headers.get("X-Pyimgopt-Token") or (q.get("token") or [""])[0]
        if not hmac.compare_digest(token.encode(), self.server.token.encode()):
            self._error(403, "forbidden", "missing or wrong token: open the URL pyimgopt ui printed")
            return None
        return url

    # -- routing --------------------------------------------------------------------

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        if self.headers.get("Content-Length") or self.headers.get("Transfer-Encoding"):
            self.close_connection = True  # a GET body is never read, so never parsed either
        url = self._checked()
        if url is None:
            return
        q = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
        try:
            if url.path in ("/", "/index.html"):
                return self._page()
            if url.path.startswith("/static/"):
                name = url.path[len("/static/"):]
                if name not in _STATIC:
                    return self._error(404, "not_found", "no such asset")
                return self._send(200, _asset(name), _STATIC[name])
            if url.path == "/api/state":
                return self._json(200, self.server.session.snapshot())
            if url.path == "/api/browse":
                return self._json(200, self.server.session.browse(q.get("path")))
            if url.path == "/api/events":
                return self._events(q)
            if url.path == "/api/preview":
                return self._preview(q)
            self._error(404, "not_found", f"no route {url.path}")
        except UIError as exc:
            self._json(exc.status, exc.to_json())

    def do_POST(self) -> None:
        url = self._checked()
        if url is None:
            return
        try:
            if self.headers.get("Transfer-Encoding"):
                return self._error(411, "invalid_settings", "send a Content-Length, not a chunked body")
            try:
                n = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                return self._error(400, "invalid_settings", "bad Content-Length")
            if n > _MAX_BODY or n < 0:
                return self._error(413, "too_large", "request body too large")
            if not (self.headers.get("Content-Type") or "").startswith("application/json"):
                return self._error(415, "invalid_settings", "send application/json")
            raw = self.rfile.read(n)
            self._body_read = len(raw) == n
            if not self._body_read:
                return self._error(400, "invalid_settings", "the body ended early")
            try:
                body = json.loads(raw or b"null")
            except (ValueError, UnicodeDecodeError, RecursionError):
                return self._error(400, "invalid_settings", "the body is not valid JSON")
            parts = url.path.strip("/").split("/")
            if parts == ["api", "batch"]:
                return self._json(200, self.server.session.start(body))
            if len(parts) == 4 and parts[:2] == ["api", "batch"]:
                return self._json(200, self.server.session.control(parts[2], parts[3]))
            self._error(404, "not_found", f"no route {url.path}")
        except UIError as exc:
            self._json(exc.status, exc.to_json())

    def _page(self) -> None:
        page = _asset("index.html").decode()
        tok = html.escape(urllib.parse.quote(self.server.token, safe=""), quote=True)
        self._send(200, page.replace("{{TOKEN}}", tok).encode(), "text/html; charset=utf-8")

    def _events(self, q: dict) -> None:
        try:
            seq = int(self.headers.get("Last-Event-ID") or q.get("since") or 0)
        except ValueError:
            seq = 0
        self.send_response(200)
        for k, v in _HEADERS.items():
            self.send_header(k, v)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("X-Accel-Buffering", "no")
        self.end_headers()
        self.close_connection = True
        if self.command == "HEAD":
            return
        session = self.server.session
        last_ping = time.monotonic()
        try:
            self.wfile.write(b"retry: 1000\n\n")
            while not session.closed.is_set() and not self.server.stopping.is_set():
                entries, ok = session.since(seq)
                if not ok:
                    self.wfile.write(b"event: reset\ndata: {}\n\n")
                    self.wfile.flush()
                    return
                for s, kind, data in entries:
                    self.wfile.write(f"id: {s}\nevent: {kind}\ndata: {json.dumps(data)}\n\n".encode())
                    seq = s
                if entries:
                    self.wfile.flush()
                if time.monotonic() - last_ping > 15:
                    self.wfile.write(b": ping\n\n")
                    self.wfile.flush()
                    last_ping = time.monotonic()
                with session.changed:
                    if session.seq == seq:
                        session.changed.wait(1.0)
        except (BrokenPipeError, ConnectionResetError, OSError):
            return

    def _preview(self, q: dict) -> None:
        which = q.get("which")
        if which not in ("before", "after"):
            raise UIError(400, InvalidSettingsError("which must be before or after", stage="ui"))
        try:
            idx = int(q.get("row", ""))
        except ValueError:
            raise UIError(400, InvalidSettingsError("row must be a number", stage="ui")) from None
        data = self.server.session.preview(q.get("batch", ""), idx, which, _MAX_PREVIEW)
        fmt = (sniff(data[:64]) or "").lower()
        if fmt in _BROWSER_FORMATS:
            return self._send(200, data, _BROWSER_FORMATS[fmt])
        try:  # TIFF and friends: first frame as a lossless PNG, same pixels
            from PIL import Image

            out = io.BytesIO()
            if fmt in ("heif", "jxl"):  # decoded with the pipeline's header limits first
                _decoded_frame(data).save(out, "PNG", compress_level=1)
            else:
                with Image.open(io.BytesIO(data), formats=["TIFF"]) as im:
                    im.save(out, "PNG", compress_level=1)
        except Exception as exc:  # a file the browser cannot show either way
            raise UIError(415, IOFailureError(f"cannot preview this file: {exc}", stage="ui")) from None
        self._send(200, out.getvalue(), "image/png")


def _decoded_frame(data: bytes):
    """HEIF / JPEG XL for a preview: probed (limits first), decoded upright in sRGB."""
    from ..pipeline.decode import decode
    from ..pipeline.probe import probe
    from ..settings import Settings

    pr = probe(data, Settings())
    return decode(pr, all_frames=False, draft_size=None, keep_palette=False,
                  keep_exif=False).frames[0]


class UIServer(ThreadingHTTPServer):
    """``UIServer(session, port)``: serve the UI on 127.0.0.1 until :meth:`close`."""

    daemon_threads = True
    allow_reuse_address = True
    #: Connections served at once; more are closed at accept (a page needs ~3).
    max_connections = 64

    def __init__(self, session: Session, port: int = 0, *, token: str | None = None,
                 verbose: bool = False) -> None:
        self.session = session
        self.token = token or secrets.token_urlsafe(24)
        self.verbose = verbose
        self.stopping = threading.Event()
        self._slots = threading.BoundedSemaphore(self.max_connections)
        super().__init__(("127.0.0.1", port), _Handler)

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # full: refuse rather than queue threads without end
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address) -> None:
        """A client that went away is normal; anything else is logged without the request."""
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, (BrokenPipeError, ConnectionResetError, TimeoutError)):
            return
        if self.verbose:
            super().handle_error(request, client_address)
        else:
            print(f"pyimgopt ui: request failed: {type(exc).__name__}: {exc}", file=sys.stderr)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/?token={self.token}"

    def close(self) -> None:
        """Stop serving, end event streams, stop the session's client and pool."""
        self.stopping.set()
        self.shutdown()
        self.server_close()
        self.session.close()

