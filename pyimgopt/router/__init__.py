"""The router: pyimgopt's broker between clients and the sidecar pool.

The router decides *what* runs; an executor decides *where*. Owns the loop
and its start/stop (:mod:`.broker`), what clients send and receive
(:mod:`.clients`), what they ask about batches — submit, attach, recovery,
status (:mod:`.batches`, with the file-system checks off the loop's thread in
:mod:`.checks` and :mod:`.offload`), the life of each job and dispatch
(:mod:`.jobs`), the dispatch order (:mod:`.queue`), and the executor of
today: ZeroMQ sidecars (:mod:`.sidecars`, their liveness in
:mod:`.liveness`, the local pool in :mod:`.pool`, image bytes for remote
ones in :mod:`.inline`); also what the machine
allows (:mod:`.resources`), the tunables (:mod:`.config`) and the in-memory
records (:mod:`.model`), and the zygote that forks pool sidecars warm
(:mod:`.zygote`). It never touches pixels.

``Router`` and ``RouterConfig`` load on first use, so that the command line
can import :mod:`.zygote` and start its pool's zygote before the rest.
"""

from __future__ import annotations

__all__ = ["Router", "RouterConfig"]


def __getattr__(name: str):
    if name == "Router":
        from .broker import Router as value
    elif name == "RouterConfig":
        from .config import RouterConfig as value
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value
