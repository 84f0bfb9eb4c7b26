"""What the router holds in memory: jobs, batches and the sidecars it knows.

Owns the plain records the broker, the batch desk and the sidecar executor
share: :class:`Job` (one file: paths, attempt, state, lease, memory
estimate), :class:`Batch` (its jobs, settings, counters, owner, pause and
cancel flags) and :class:`SidecarRecord` (one registered worker: slots, busy
jobs, last sign of life). No behaviour beyond derived properties.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Job", "Batch", "SidecarRecord", "str_keys"]


@dataclass(slots=True)
class Job:
    id: str
    batch: str
    input: str
    output: str | None
    attempt: int = 0
    kills: int = 0
    state: str = "queued"  # queued | running | writing | done | failed | cancelled
    sidecar: bytes | None = None
    deadline: float = 0.0
    not_before: float = 0.0
    mem: int | None = None  # the sidecar's header estimate, once known
    reserved: int = 0  # bytes of the memory budget held while it runs
    size: int = 0  # input bytes at submit (for the first reservation)
    started: float = 0.0
    expect: dict | None = None
    outputs: dict | None = None  # format="auto": checked final name per format
    known: dict | None = None  # the manifest's hint: hashes that mean "already done"
    early: dict | None = None  # its ``unchanged`` result, found at submit: never dispatched
    inline: bool = False
    mode: int | None = None
    result: dict | None = None  # kept for replay to a client that reattaches
    error: dict | None = None


@dataclass
class Batch:
    id: str
    client: bytes | None  # the connection its events go to (None: nobody attached)
    priority: int
    settings: dict
    in_place: bool
    jobs: list[str]
    total: int = 0  # every job of the batch, also while they are still being registered
    done: int = 0
    failed: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    paused: bool = False
    cancelled: bool = False
    started: float = field(default_factory=time.monotonic)
    finished: bool = False
    last_progress: float = 0.0
    owner: str | None = None  # CurveZMQ key id of the submitter (None: local)
    finished_at: float = 0.0
    options: dict = field(default_factory=dict)  # force, dry_run (journaled with the batch)
    key: str | None = None  # the manifest's settings key (None: no manifest for this batch)


@dataclass
class SidecarRecord:
    identity: bytes
    slots: int
    pid: int
    name: str
    busy: set[str] = field(default_factory=set)
    last_seen: float = field(default_factory=time.monotonic)
    last_idle: float = field(default_factory=time.monotonic)
    rss: int = 0
    jobs_done: int = 0
    retiring: bool = False
    local: bool = False
    inline: bool = False
    sock: Any = None  # the ROUTER socket this sidecar is connected to
    pool: bool = False  # a process of our own pool (its /proc is ours to read)
    cpu: float = -1.0  # its CPU seconds at the last look (pool sidecars)
    fd: int | None = None  # the connection's file descriptor (remote sidecars)
    stale: set[str] = field(default_factory=set)  # jobs given up on that it may still run
    start_only: bool = False  # the in-process worker covering the pool's start (small jobs only)


def str_keys(value: Any) -> Any:
    """The same data with every map key a string (msgpack bodies allow no others)."""
    if isinstance(value, dict):
        return {str(k): str_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [str_keys(v) for v in value]
    return value
