"""A local web UI for people: ``pyimgopt ui`` — pick files, watch, pause, compare.

A host application like any other: it embeds :class:`pyimgopt.Client` with its
own :class:`~pyimgopt.security.Policy` (read and write inside the folders it
was started with) and serves one page on 127.0.0.1. ``session`` owns the
state and the checks; ``server`` owns HTTP, the token and the security
headers; ``static/`` is the page (no build step, no external origin).
"""

from __future__ import annotations

import html
import os
import shutil
import tempfile

from .server import CSP, UIServer
from .forms import ui_policy
from .session import Session

__all__ = ["CSP", "Session", "UIServer", "ui_policy", "serve"]


def serve(roots: list[str], *, port: int = 0, workers: int | None = None, in_place: bool = True,
          state_dir: str | None = None, open_browser: bool = False, on_ready=None) -> None:
    """Serve the UI for ``roots`` until interrupted (Ctrl-C or SIGTERM)."""
    import signal
    import threading
    import webbrowser

    session = Session(ui_policy(roots, in_place=in_place), workers=workers, state_dir=state_dir)
    try:
        server = UIServer(session, port)
    except OSError:
        session.close()
        raise
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, name="pyimgopt-ui-http", daemon=True)
    thread.start()
    launcher = None
    try:
        if on_ready is not None:
            on_ready(server.url)
        if open_browser:
            launcher = _redirect_file(server.url)
            threading.Thread(target=webbrowser.open, args=(f"file://{launcher}",), daemon=True).start()
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.close()
        if launcher is not None:
            shutil.rmtree(os.path.dirname(launcher), ignore_errors=True)


def _redirect_file(url: str) -> str:
    """A 0600 page that redirects to ``url``: the browser is started with its path,
    so the token never appears on a command line other users can read (``ps``)."""
    folder = tempfile.mkdtemp(prefix="pyimgopt-ui-")
    path = os.path.join(folder, "open.html")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(f'<!doctype html><meta charset="utf-8"><meta http-equiv="refresh" '
                 f'content="0;url={html.escape(url, quote=True)}"><title>pyimgopt</title>'
                 f'<a href="{html.escape(url, quote=True)}">open pyimgopt</a>\n')
    return path
