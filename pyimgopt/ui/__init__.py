"""A local web UI for people: ``pyimgopt ui`` — pick files, watch, pause, compare.

A host application like any other: it embeds :class:`pyimgopt.Client` with its
own :class:`~pyimgopt.security.Policy` (read and write inside the folders it
was started with) and serves one page on 127.0.0.1. ``session`` owns the
state and the checks; ``server`` owns HTTP, the token and the security
headers; ``static/`` is the page (no build step, no external origin).
"""

from __future__ import annotations

from .server import CSP, UIServer
from .session import Session, ui_policy

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
    try:
        if on_ready is not None:
            on_ready(server.url)
        if open_browser:
            webbrowser.open(server.url)
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.close()
