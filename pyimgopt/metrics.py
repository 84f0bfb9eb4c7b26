"""The Prometheus metrics of one router: counters, gauges, histograms, exposition.

Owns :class:`RouterMetrics` (every figure the router reports, in its own
``CollectorRegistry`` so that several routers in one process, as in the tests,
never share or clash over values) and :func:`serve_metrics` (a loopback HTTP
thread answering ``GET /metrics`` in the Prometheus text format). The router
calls the counter methods as jobs end and the gauge setters on each tick;
:meth:`RouterMetrics.snapshot` gives the same figures as plain data for the
router's ``status`` reply.
"""

from __future__ import annotations

import http.server
import importlib.metadata
import math
import socket
import threading
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)

__all__ = ["RouterMetrics", "MetricsServer", "serve_metrics", "IMAGE_BUCKETS", "STAGE_BUCKETS"]

PREFIX = "pyimgopt_"

# One image takes from a few milliseconds (a skipped tiny PNG) to about a
# minute (a large AVIF at effort 9); the job timeout sits above that range.
IMAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0)
# One stage (sniff, decode, resize, encode, ssim, write ...) is often sub-millisecond.
STAGE_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)

# Label value for an absent label (a failure with no stage, a result with no
# output format): an empty label value would read as "label missing" in PromQL.
NONE_LABEL = "none"


def _label(value: Any) -> str:
    return NONE_LABEL if value is None or value == "" else str(value)


def _amount(value: Any) -> float | None:
    """A finite, non-negative number, or None (counters and histograms reject the rest)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return value


def _samples(metric: Any, suffix: str = "") -> list[tuple[dict[str, str], float]]:
    """(labels, value) of one metric's samples named ``<name><suffix>`` (public collect())."""
    out = []
    for family in metric.collect():
        for sample in family.samples:
            if sample.name == family.name + suffix:
                out.append((sample.labels, sample.value))
    return out


def _int(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


class RouterMetrics:
    """Every Prometheus metric of one router, in a registry of its own.

    Counters move with :meth:`job_finished`, :meth:`job_failed`,
    :meth:`retry`, :meth:`recycle`, :meth:`sidecar_lost` and
    :meth:`protocol_error`; gauges are set by :meth:`set_queue`,
    :meth:`set_sidecars` and :meth:`set_memory`. All methods are thread-safe.
    Values that cannot be counted (``None``, negative, NaN) are ignored rather
    than raised on: a metric must never fail a job.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._lock = threading.Lock()
        self._queue_seen: set[str] = set()
        self._sidecars_seen: set[str] = set()
        # labelled children of the per-job metrics, by label values (job_finished)
        self._processed: dict[tuple[str, str], Any] = {}
        self._stages: dict[Any, Any] = {}

        self.images_processed = Counter(
            PREFIX + "images_processed_total",
            "Images that ended optimized or skipped.",
            ["status", "format_out"],
            registry=r,
        )
        self.images_failed = Counter(
            PREFIX + "images_failed_total",
            "Images that ended failed, by error code and pipeline stage.",
            ["code", "stage"],
            registry=r,
        )
        self.bytes_in = Counter(
            PREFIX + "bytes_in_total", "Input bytes of finished images.", registry=r
        )
        self.bytes_out = Counter(
            PREFIX + "bytes_out_total", "Output bytes of finished images.", registry=r
        )
        self.image_seconds = Histogram(
            PREFIX + "image_seconds",
            "Wall time to optimise one image.",
            buckets=IMAGE_BUCKETS,
            registry=r,
        )
        self.stage_seconds = Histogram(
            PREFIX + "stage_seconds",
            "Wall time of one pipeline stage of one image.",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            PREFIX + "retries_total", "Jobs sent again after a failure.", registry=r
        )
        self.recycles = Counter(
            PREFIX + "sidecar_recycles_total",
            "Sidecars replaced on purpose (job count or memory limit).",
            registry=r,
        )
        self.sidecars_lost = Counter(
            PREFIX + "sidecars_lost_total", "Sidecars that died or stopped answering.", registry=r
        )
        self.protocol_errors = Counter(
            PREFIX + "protocol_errors_total",
            "Malformed or unexpected protocol messages.",
            registry=r,
        )
        self.queue_length = Gauge(
            PREFIX + "queue_length", "Jobs waiting, by priority.", ["priority"], registry=r
        )
        self.active_sidecars = Gauge(
            PREFIX + "active_sidecars", "Sidecar processes alive now.", registry=r
        )
        self.sidecar_rss = Gauge(
            PREFIX + "sidecar_rss_bytes", "Resident memory of each sidecar.", ["name"], registry=r
        )
        self.memory_in_use = Gauge(
            PREFIX + "memory_budget_in_use_bytes",
            "Memory reserved by jobs in flight.",
            registry=r,
        )
        self.memory_budget = Gauge(
            PREFIX + "memory_budget_bytes", "Memory the router may hand to jobs.", registry=r
        )

    # -- counters -----------------------------------------------------------

    def job_finished(self, result: dict) -> None:
        """Count one optimized or skipped image from its ``Result.to_dict()``.

        Moves ``images_processed_total{status, format_out}``, ``bytes_in_total``,
        ``bytes_out_total``, observes ``image_seconds`` and one
        ``stage_seconds{stage}`` per entry of ``result["stages"]``.
        """
        # The router calls this once per job: the labelled children are looked
        # up once per label value (``labels()`` validates its arguments on
        # every call, which cost more than the counting itself).
        key = (_label(result.get("status")), _label(result.get("format_out")))
        child = self._processed.get(key)
        if child is None:
            child = self.images_processed.labels(status=key[0], format_out=key[1])
            if len(self._processed) < 256:  # label values come from sidecars: bounded
                self._processed[key] = child
        child.inc()
        n = _amount(result.get("bytes_in"))
        if n is not None:
            self.bytes_in.inc(n)
        n = _amount(result.get("bytes_out"))
        if n is not None:
            self.bytes_out.inc(n)
        s = _amount(result.get("seconds"))
        if s is not None:
            self.image_seconds.observe(s)
        stages = result.get("stages")
        if isinstance(stages, dict):
            for stage, seconds in stages.items():
                s = _amount(seconds)
                if s is not None:
                    child = self._stages.get(stage)
                    if child is None:
                        child = self.stage_seconds.labels(stage=_label(stage))
                        if len(self._stages) < 256:  # stage names come from sidecars: bounded
                            self._stages[stage] = child
                    child.observe(s)

    def job_failed(self, code: str, stage: str | None) -> None:
        """Count one failed image: ``images_failed_total{code, stage}`` (no stage → ``"none"``)."""
        self.images_failed.labels(code=_label(code), stage=_label(stage)).inc()

    def retry(self) -> None:
        """Count one job sent again (``retries_total``)."""
        self.retries.inc()

    def recycle(self) -> None:
        """Count one sidecar replaced on purpose (``sidecar_recycles_total``)."""
        self.recycles.inc()

    def sidecar_lost(self) -> None:
        """Count one sidecar that died or went silent (``sidecars_lost_total``)."""
        self.sidecars_lost.inc()

    def protocol_error(self) -> None:
        """Count one bad protocol message (``protocol_errors_total``)."""
        self.protocol_errors.inc()

    # -- gauges -------------------------------------------------------------

    def set_queue(self, by_priority: dict[int, int]) -> None:
        """Set ``queue_length{priority}``; a priority seen before and absent now reads 0."""
        with self._lock:
            now = {str(p): n for p, n in by_priority.items()}
            for prio in self._queue_seen - now.keys():
                self.queue_length.labels(priority=prio).set(0)
            for prio, n in now.items():
                self.queue_length.labels(priority=prio).set(n)
            self._queue_seen |= now.keys()

    def set_sidecars(self, sidecars: list[dict]) -> None:
        """Set ``active_sidecars`` and ``sidecar_rss_bytes{name}``; drop sidecars that are gone.

        Each dict carries ``"name"`` and ``"rss"`` (bytes; ``None`` when unknown,
        in which case that sidecar has no RSS series this tick).
        """
        with self._lock:
            self.active_sidecars.set(len(sidecars))
            now: dict[str, float] = {}
            for sc in sidecars:
                rss = _amount(sc.get("rss"))
                if rss is not None:
                    now[str(sc.get("name"))] = rss
            for name in self._sidecars_seen - now.keys():
                try:
                    self.sidecar_rss.remove(name)
                except KeyError:  # never set (rss unknown): nothing to remove
                    pass
            for name, rss in now.items():
                self.sidecar_rss.labels(name=name).set(rss)
            self._sidecars_seen = set(now)

    def set_memory(self, in_use: int, budget: int) -> None:
        """Set ``memory_budget_in_use_bytes`` and ``memory_budget_bytes``."""
        self.memory_in_use.set(in_use)
        self.memory_budget.set(budget)

    # -- read out -----------------------------------------------------------

    def snapshot(self) -> dict:
        """The figures of :meth:`exposition` as plain data, for the ``status`` reply.

        Returns
        -------
        dict
            ``images_processed`` (optimized + skipped), ``images_failed``
            (``{code: n}`` summed over stages), ``bytes_in``, ``bytes_out``,
            ``retries``, ``recycles``, ``sidecars_lost``, ``protocol_errors``,
            ``queue`` (``{priority: n}``, int keys where the label is an int),
            ``active_sidecars``, ``memory_in_use``, ``memory_budget``.
        """
        failed: dict[str, int | float] = {}
        for labels, value in _samples(self.images_failed, "_total"):
            failed[labels["code"]] = _int(failed.get(labels["code"], 0) + value)
        queue: dict[Any, int | float] = {}
        for labels, value in _samples(self.queue_length):
            prio = labels["priority"]
            key: Any = int(prio) if prio.lstrip("-").isdigit() else prio
            queue[key] = _int(value)

        def total(metric: Any, suffix: str = "_total") -> int | float:
            return _int(sum(v for _, v in _samples(metric, suffix)))

        return {
            "images_processed": total(self.images_processed),
            "images_failed": failed,
            "bytes_in": total(self.bytes_in),
            "bytes_out": total(self.bytes_out),
            "retries": total(self.retries),
            "recycles": total(self.recycles),
            "sidecars_lost": total(self.sidecars_lost),
            "protocol_errors": total(self.protocol_errors),
            "queue": dict(sorted(queue.items(), key=lambda kv: str(kv[0]))),
            "active_sidecars": total(self.active_sidecars, ""),
            "memory_in_use": total(self.memory_in_use, ""),
            "memory_budget": total(self.memory_budget, ""),
        }

    def exposition(self) -> bytes:
        """This registry in the Prometheus text format (``generate_latest``)."""
        return generate_latest(self.registry)


class MetricsServer:
    """Handle on a running metrics HTTP thread; :meth:`shutdown` stops it and frees the port."""

    def __init__(self, httpd: Any, thread: threading.Thread, host: str, port: int) -> None:
        self.httpd = httpd
        self.thread = thread
        self.host = host
        self.port = port
        self._closed = False

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def shutdown(self) -> None:
        """Stop serving, close the listening socket and join the thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    def __enter__(self) -> "MetricsServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def _client_returns_server() -> bool:
    """prometheus_client >= 0.20 returns (server, thread) from start_http_server; older returns None."""
    try:
        version = importlib.metadata.version("prometheus_client")
        major, minor = (int(part) for part in version.split(".")[:2])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return False
    return (major, minor) >= (0, 20)


def _own_server(registry: CollectorRegistry, host: str, port: int) -> tuple[Any, threading.Thread]:
    """A ThreadingHTTPServer serving ``GET /metrics`` only (for prometheus_client < 0.20)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path.split("?", 1)[0] != "/metrics":
                self.send_error(404)
                return
            body = generate_latest(registry)
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE_LATEST)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # scrapes every few seconds would flood stderr

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    httpd = Server((host, port), Handler)
    thread = threading.Thread(target=httpd.serve_forever, name="pyimgopt-metrics", daemon=True)
    thread.start()
    return httpd, thread


def serve_metrics(
    metrics: RouterMetrics, port: int, host: str = "127.0.0.1"
) -> tuple[MetricsServer, int]:
    """Serve ``metrics`` over HTTP (``GET /metrics``) from a daemon thread.

    Parameters
    ----------
    metrics
        The router's metrics; only its own registry is exposed.
    port
        TCP port; 0 picks a free one.
    host
        Address to bind; loopback unless the operator asks otherwise.

    Returns
    -------
    (server, port)
        ``server.shutdown()`` stops the thread and closes the socket; ``port``
        is the one actually bound.
    """
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ValueError(f"Expected integer 0..65535 for port but received {port!r}")
    if _client_returns_server():
        httpd, thread = start_http_server(port, addr=host, registry=metrics.registry)
    else:
        httpd, thread = _own_server(metrics.registry, host, port)
    actual = int(httpd.server_address[1])
    return MetricsServer(httpd, thread, host, actual), actual
