"""``python -m pyimgopt_sidecar --connect ENDPOINT``: run one pyimgopt worker process."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, apply resource limits, and serve until told to stop."""
    p = argparse.ArgumentParser(prog="python -m pyimgopt_sidecar", description="pyimgopt worker process")
    p.add_argument("--connect", required=True, metavar="ENDPOINT", help="router's sidecar endpoint")
    p.add_argument("--slots", type=int, default=1)
    p.add_argument("--max-jobs", type=int, default=None, help="recycle after N jobs")
    p.add_argument("--max-rss-mb", type=int, default=None, help="recycle when RSS passes this")
    p.add_argument("--max-age", type=float, default=None, help="recycle after serving this many seconds")
    p.add_argument("--heartbeat", type=float, default=0.5, help="seconds between heartbeats")
    p.add_argument("--name", default=None)
    p.add_argument("--parent", type=int, default=None, help="exit when this pid is gone")
    p.add_argument("--max-address-space-mb", type=int, default=None,
                   help="RLIMIT_AS: a hostile image that needs more fails alone (MemoryError)")
    p.add_argument("--inline", action="store_true", default=None,
                   help="take jobs as bytes (default for tcp:// endpoints: no shared file system)")
    p.add_argument("--curve-secret", metavar="FILE", help="this sidecar's secret key (tcp://)")
    p.add_argument("--server-key", metavar="FILE", help="the router's public key (tcp://)")
    p.add_argument("--cpu-per-job", type=float, default=None,
                   help="CPU seconds one job may use; past it the job fails with 'timeout'")
    # Test-only: a job whose input path contains this text kills the process.
    # Off unless a test passes it (RouterConfig(sidecar_args=[...])).
    p.add_argument("--test-crash-on", default=None, metavar="TEXT", help=argparse.SUPPRESS)
    # Test-only: "TEXT:SECONDS": a job whose input path contains TEXT waits that
    # long before it runs (a job surely in progress, without a costly image).
    p.add_argument("--test-stall-on", default=None, metavar="TEXT:SECONDS", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    # (The router starts pool sidecars with MALLOC_ARENA_MAX=2 in their
    # environment: glibc reads it at start-up, too early to set it here.)
    from pyimgopt.auth import check_not_abstract
    from pyimgopt.logs import configure

    try:
        check_not_abstract(a.connect)
    except PermissionError as exc:
        print(f"python -m pyimgopt_sidecar: error: {exc}", file=sys.stderr)
        return 2

    from .worker import Sidecar

    configure(level="WARNING")  # warnings (e.g. an encoder fallback) as lines with their fields

    if a.max_address_space_mb:
        import resource

        limit = a.max_address_space_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    sc = Sidecar(
        a.connect,
        slots=a.slots,
        max_jobs=a.max_jobs,
        max_rss=None if a.max_rss_mb is None else a.max_rss_mb * 1024 * 1024,
        max_age=a.max_age,
        heartbeat=a.heartbeat,
        name=a.name,
        parent=a.parent,
        cpu_per_job=a.cpu_per_job,
        inline=a.inline,
        curve=(a.curve_secret, a.server_key) if a.curve_secret else None,
        crash_on=a.test_crash_on,
        stall_on=_stall(a.test_stall_on),
    )
    return sc.run()


def _stall(value: str | None) -> tuple[str, float] | None:
    """``"TEXT:SECONDS"`` as ``(TEXT, SECONDS)``; None when not given."""
    if not value:
        return None
    text, _, seconds = value.rpartition(":")
    return (text, float(seconds))


if __name__ == "__main__":
    sys.exit(main())
