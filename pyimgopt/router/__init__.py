"""The router: pyimgopt's broker between clients and the sidecar pool.

Owns the queue, dispatch, liveness, retries, throttling and pool supervision
(:mod:`.broker`), the dispatch order (:mod:`.queue`) and what the machine
allows (:mod:`.resources`). It never touches pixels.
"""

from .broker import Router, RouterConfig

__all__ = ["Router", "RouterConfig"]
