"""The router's tunables: :class:`RouterConfig`.

Owns every knob a router is started with — pool size and recycling,
liveness and leases, retries, memory limits, the policies bound to local and
keyed connections, CurveZMQ key folders, the journal folder and metrics —
with the defaults that suit a desktop or a server.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..security import Policy

__all__ = ["RouterConfig"]


@dataclass
class RouterConfig:
    """Tunables of a router; the defaults suit a desktop or a server."""

    workers: int | None = None  # None: usable CPUs; 0: in-process (degraded) only
    pool: bool = True  # False: start no sidecars at all, wait for sidecars that connect
    # Recycling (after the job in hand) bounds leaks and heap growth. A new
    # sidecar costs ~0.3 s of CPU (interpreter, imports), so the job count is
    # high enough for that to stay under ~3 % even for tiny files; the RSS cap
    # and the age bound what a long-lived process may grow into.
    max_jobs_per_sidecar: int | None = 5000
    max_rss: int | None = 1024 * 1024 * 1024
    max_sidecar_age: float | None = 3600.0  # seconds a sidecar serves before it is recycled
    # True: while the pool first comes up, the in-process worker takes small
    # first attempts, so the first file starts at once — at the price of
    # running those files in this process, outside the sidecars' isolation
    # (a codec that crashes on a hostile file would take this process down).
    # Off by default for that reason (README § Pool start-up).
    inprocess_start: bool = False
    # True: pool sidecars are forked from a zygote (``python -m
    # pyimgopt_sidecar.zygote``) that imported the pipeline once, instead of
    # each starting an interpreter and importing it; the command line starts
    # that zygote first thing. False, or when the zygote fails: plain starts.
    warm_start: bool = True
    memory_cap: int | None = None
    memory_reserve: int = 256 * 1024 * 1024
    heartbeat: float = 0.5
    liveness: float = 5.0
    lease: float = 300.0
    max_attempts: int = 3
    poison_kills: int = 3
    spawn_grace: float = 20.0
    # Who may do what: the policy of clients on the local (ipc/inproc, 0700)
    # endpoints — None means trusted — and one policy per authorised CurveZMQ
    # client key id; an authorised key without an entry may do nothing.
    local_policy: Policy | None = None
    key_policies: dict[str, Policy] = field(default_factory=dict)
    # What clients on a TCP endpoint without CurveZMQ (insecure_loopback) may
    # do: any local user can connect there, so None means nothing at all.
    insecure_policy: Policy | None = None
    # CurveZMQ: the router's secret key file, and folders of the public keys
    # of clients and of sidecars it admits. Required for any tcp:// endpoint,
    # unless insecure_loopback is set and the endpoint is on 127.0.0.1.
    curve_secret: str | None = None
    authorized_clients: list[str] = field(default_factory=list)
    authorized_sidecars: list[str] = field(default_factory=list)
    insecure_loopback: bool = False
    # The journal (SQLite, WAL) in this folder: batches survive a router crash
    # and resume on the next start. None: no journal (an ephemeral router).
    state_dir: str | None = None
    # Recovery at start: True requeues every unfinished batch of the journal
    # (a long-running router, an embedding host); False runs only a batch a
    # client attaches to (``pyimgopt optimize`` and ``resume``).
    recover: bool = True
    # When another process owns state_dir's journal: False refuses to start
    # (JournalBusyError); True keeps a private journal in state_dir/runs/.
    private_journal_if_busy: bool = False
    # The optimisation manifest (SQLite): None puts it beside the journal,
    # ``state_dir/manifest.sqlite3`` (no journal, no manifest); a path puts it
    # there (several routers may share one); False turns it off.
    manifest: str | bool | None = None
    retention_days: float = 30.0  # finished batches older than this are pruned
    metrics_port: int | None = None  # serve Prometheus /metrics on 127.0.0.1:PORT (0: any free port)
    sidecar_address_space: int | None = 8 * 1024**3  # RLIMIT_AS of pool sidecars
    cpu_per_job: float | None = 300.0  # CPU seconds one job may use in a pool sidecar
    # Extra command-line arguments for every pool sidecar (``python -m
    # pyimgopt_sidecar --help``), e.g. ``["--slots", "2"]``.
    sidecar_args: list[str] = field(default_factory=list)
    # Where jobs run (:mod:`.executors`): None or "local" — the sidecar pool
    # (and remote sidecars); "dask://HOST:PORT" — a Dask distributed
    # cluster whose workers get image bytes; "dask://HOST:PORT?files=shared"
    # — its workers see this router's files under the same paths.
    executor: str | None = None

