"""What this machine lets the router use: CPUs and memory.

Owns the default pool size (the CPUs this process may use: affinity and
cgroup CPU quota) and the memory budget (min of cgroup ``memory.max``, the RAM
available now and a configured cap, minus a reserve). A job's own need is
estimated by its sidecar from the image's header: the router never reads
image contents.
"""

from __future__ import annotations

import math
import os

__all__ = ["usable_cpus", "available_memory", "cgroup_memory_limit", "memory_budget"]

_CGROUP = "/sys/fs/cgroup"


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return None


def usable_cpus() -> int:
    """CPUs this process may use: affinity, bounded by a cgroup v2/v1 CPU quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = _read(f"{_CGROUP}/cpu.max")
    if quota:
        q, _, period = quota.partition(" ")
        if q != "max" and period:
            n = min(n, max(1, math.floor(int(q) / int(period))))
    else:
        q1, p1 = _read(f"{_CGROUP}/cpu/cpu.cfs_quota_us"), _read(f"{_CGROUP}/cpu/cpu.cfs_period_us")
        if q1 and p1 and int(q1) > 0:
            n = min(n, max(1, int(q1) // int(p1)))
    return max(1, n)


def available_memory() -> int:
    """MemAvailable from /proc/meminfo, in bytes (a large number if unknown)."""
    text = _read("/proc/meminfo") or ""
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 1 << 40


def cgroup_memory_limit() -> int | None:
    """The cgroup memory limit minus current usage, in bytes, or ``None``."""
    limit = _read(f"{_CGROUP}/memory.max")
    if limit and limit != "max":
        used = _read(f"{_CGROUP}/memory.current") or "0"
        return max(0, int(limit) - int(used))
    v1 = _read(f"{_CGROUP}/memory/memory.limit_in_bytes")
    if v1 and int(v1) < (1 << 60):
        used = _read(f"{_CGROUP}/memory/memory.usage_in_bytes") or "0"
        return max(0, int(v1) - int(used))
    return None


def memory_budget(cap: int | None = None, reserve: int = 256 * 1024 * 1024) -> int:
    """Bytes the router may commit to running jobs right now."""
    candidates = [available_memory()]
    cg = cgroup_memory_limit()
    if cg is not None:
        candidates.append(cg)
    if cap is not None:
        candidates.append(cap)
    return max(0, min(candidates) - reserve)
