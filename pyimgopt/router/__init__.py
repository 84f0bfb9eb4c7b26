"""The router: pyimgopt's broker between clients and the sidecar pool.

Owns the loop and the life of each job (:mod:`.broker`), what clients ask
about batches (:mod:`.batches`), where jobs run (the sidecar executor,
:mod:`.sidecars`), the dispatch order (:mod:`.queue`), what the machine
allows (:mod:`.resources`), the tunables (:mod:`.config`) and the in-memory
records (:mod:`.model`). It never touches pixels.
"""

from .broker import Router
from .config import RouterConfig

__all__ = ["Router", "RouterConfig"]
