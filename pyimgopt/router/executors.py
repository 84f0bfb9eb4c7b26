"""Which executor runs a router's jobs: the seam between *what* runs and *where*.

Owns the executor specification of :attr:`RouterConfig.executor` — None or
``"local"`` for the ZeroMQ sidecars (the local pool plus remote sidecars,
:mod:`.sidecars`), ``"dask://HOST:PORT"`` for a Dask distributed cluster
(:mod:`.dask_executor`), where the workers get image bytes, or
``"dask://HOST:PORT?files=shared"`` where they are declared to see the
router's files under the same paths — its parsing with clear errors, and
building the executor for a router. Every executor offers the same small
surface the router's loop calls: ``setup``/``close_sockets``, ``on_readable``,
``tick``, ``free_slots``/``has_room``/``name_of``/``start``, ``abort``,
``describe``/``metrics_rows``, ``start_pool``/``shutdown``, ``endpoint``
and ``degraded_reason``; each reports back through the router's ``job_*``
callbacks (:mod:`.jobs`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from ..errors import InvalidSettingsError

if TYPE_CHECKING:
    from .broker import Router

__all__ = ["ExecutorSpec", "parse_executor", "make_executor", "DASK_INSTALL_HINT"]

#: What to install for ``dask://`` executors.
DASK_INSTALL_HINT = "pip install 'pyimgopt[dask]'"


@dataclass(frozen=True)
class ExecutorSpec:
    """A parsed executor: ``kind`` "local" or "dask", the scheduler address, the file mode."""

    kind: str
    address: str | None = None
    shared_files: bool = False


def parse_executor(spec: str | None) -> ExecutorSpec:
    """Parse an executor specification; InvalidSettingsError names what is wrong.

    ``None``/``""``/``"local"``: the sidecar pool. ``dask://HOST:PORT``: a
    Dask scheduler, workers get bytes; add ``?files=shared`` when every
    worker sees the router's files under the same paths (``files=bytes`` is
    the default, spelled out).
    """
    if spec is None or spec in ("", "local"):
        return ExecutorSpec("local")
    if not isinstance(spec, str):
        raise InvalidSettingsError(f"executor must be a string, not {type(spec).__name__}",
                                   stage="settings")
    parts = urlsplit(spec)
    if parts.scheme != "dask":
        raise InvalidSettingsError(
            f"unknown executor {spec!r}: use 'local' or dask://HOST:PORT[?files=shared]", stage="settings")
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None or parts.path not in ("", "/"):
        raise InvalidSettingsError(f"executor {spec!r}: expected dask://HOST:PORT[?files=shared]",
                                   stage="settings")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = set(query) - {"files"}
    files = query.get("files", ["bytes"])
    if unknown or len(files) != 1 or files[0] not in ("bytes", "shared"):
        raise InvalidSettingsError(
            f"executor {spec!r}: the only option is files=shared or files=bytes", stage="settings")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return ExecutorSpec("dask", f"tcp://{host}:{port}", files[0] == "shared")


def make_executor(router: Router) -> Any:
    """The executor ``router.config.executor`` names, not yet set up.

    A ``dask://`` executor without the ``distributed`` package raises
    InvalidSettingsError saying how to install it.
    """
    spec = parse_executor(router.config.executor)
    if spec.kind == "local":
        from .sidecars import SidecarExecutor

        return SidecarExecutor(router)
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise InvalidSettingsError(
            f"--executor {router.config.executor} needs Dask distributed: {DASK_INSTALL_HINT}",
            stage="settings") from None
    from .dask_executor import DaskExecutor

    return DaskExecutor(router, spec.address, shared_files=spec.shared_files)
