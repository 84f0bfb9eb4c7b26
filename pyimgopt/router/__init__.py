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
records (:mod:`.model`). It never touches pixels.
"""

from .broker import Router
from .config import RouterConfig

__all__ = ["Router", "RouterConfig"]
