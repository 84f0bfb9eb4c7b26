"""RouterMetrics: counters, gauges, snapshot, isolation, and the /metrics HTTP endpoint."""

from __future__ import annotations

import re
import urllib.error
import urllib.request

import pytest

from pyimgopt import metrics as metrics_mod
from pyimgopt.metrics import RouterMetrics, serve_metrics


def result(**kw) -> dict:
    base = {
        "input": "a.png",
        "output": "a.webp",
        "status": "optimized",
        "format_in": "png",
        "format_out": "webp",
        "bytes_in": 1000,
        "bytes_out": 400,
        "seconds": 0.2,
        "stages": {"decode": 0.05, "encode": 0.12},
        "error": None,
    }
    base.update(kw)
    return base


def value(m: RouterMetrics, sample: str, **labels) -> float | None:
    return m.registry.get_sample_value(sample, labels)


def test_metrics_job_finished_moves_counters_and_histograms():
    m = RouterMetrics()
    m.job_finished(result())
    m.job_finished(
        result(
            status="skipped",
            format_out="jpeg",
            bytes_in=500,
            bytes_out=500,
            seconds=0.003,
            stages={"decode": 0.001},
        )
    )
    assert value(m, "pyimgopt_images_processed_total", status="optimized", format_out="webp") == 1
    assert value(m, "pyimgopt_images_processed_total", status="skipped", format_out="jpeg") == 1
    assert value(m, "pyimgopt_bytes_in_total") == 1500
    assert value(m, "pyimgopt_bytes_out_total") == 900
    assert value(m, "pyimgopt_image_seconds_count") == 2
    assert value(m, "pyimgopt_image_seconds_sum") == pytest.approx(0.203)
    assert value(m, "pyimgopt_image_seconds_bucket", le="0.005") == 1
    assert value(m, "pyimgopt_image_seconds_bucket", le="60.0") == 2
    assert value(m, "pyimgopt_stage_seconds_count", stage="decode") == 2
    assert value(m, "pyimgopt_stage_seconds_count", stage="encode") == 1
    assert value(m, "pyimgopt_stage_seconds_sum", stage="encode") == pytest.approx(0.12)


def test_metrics_job_finished_tolerates_missing_and_bad_values():
    m = RouterMetrics()
    m.job_finished(
        {
            "status": "skipped",
            "format_out": None,
            "bytes_in": None,
            "bytes_out": -5,
            "seconds": float("nan"),
            "stages": {"decode": None, "write": 0.01},
        }
    )
    assert value(m, "pyimgopt_images_processed_total", status="skipped", format_out="none") == 1
    assert value(m, "pyimgopt_bytes_in_total") == 0
    assert value(m, "pyimgopt_bytes_out_total") == 0
    assert value(m, "pyimgopt_image_seconds_count") == 0
    assert value(m, "pyimgopt_stage_seconds_count", stage="decode") is None
    assert value(m, "pyimgopt_stage_seconds_count", stage="write") == 1


def test_metrics_simple_counters_move():
    m = RouterMetrics()
    m.job_failed("decode_error", "decode")
    m.job_failed("decode_error", "decode")
    m.job_failed("worker_lost", None)
    m.retry()
    m.retry()
    m.recycle()
    m.sidecar_lost()
    m.protocol_error()
    m.protocol_error()
    m.protocol_error()
    assert value(m, "pyimgopt_images_failed_total", code="decode_error", stage="decode") == 2
    assert value(m, "pyimgopt_images_failed_total", code="worker_lost", stage="none") == 1
    assert value(m, "pyimgopt_retries_total") == 2
    assert value(m, "pyimgopt_sidecar_recycles_total") == 1
    assert value(m, "pyimgopt_sidecars_lost_total") == 1
    assert value(m, "pyimgopt_protocol_errors_total") == 3


def test_metrics_queue_priorities_that_empty_drop_to_zero():
    m = RouterMetrics()
    m.set_queue({0: 5, 10: 2})
    assert value(m, "pyimgopt_queue_length", priority="0") == 5
    assert value(m, "pyimgopt_queue_length", priority="10") == 2
    m.set_queue({10: 1})
    assert value(m, "pyimgopt_queue_length", priority="0") == 0
    assert value(m, "pyimgopt_queue_length", priority="10") == 1
    m.set_queue({})
    assert value(m, "pyimgopt_queue_length", priority="10") == 0
    assert m.snapshot()["queue"] == {0: 0, 10: 0}


def test_metrics_sidecars_set_and_gone_labels_removed():
    m = RouterMetrics()
    m.set_sidecars([{"name": "sc-1", "rss": 100}, {"name": "sc-2", "rss": 200}])
    assert value(m, "pyimgopt_active_sidecars") == 2
    assert value(m, "pyimgopt_sidecar_rss_bytes", name="sc-1") == 100
    assert value(m, "pyimgopt_sidecar_rss_bytes", name="sc-2") == 200
    m.set_sidecars([{"name": "sc-2", "rss": 250}, {"name": "sc-3", "rss": None}])
    assert value(m, "pyimgopt_active_sidecars") == 2
    assert value(m, "pyimgopt_sidecar_rss_bytes", name="sc-1") is None
    assert value(m, "pyimgopt_sidecar_rss_bytes", name="sc-2") == 250
    assert value(m, "pyimgopt_sidecar_rss_bytes", name="sc-3") is None
    m.set_sidecars([])
    assert value(m, "pyimgopt_active_sidecars") == 0
    assert b"pyimgopt_sidecar_rss_bytes{" not in m.exposition()


def test_metrics_memory_gauges():
    m = RouterMetrics()
    m.set_memory(3 << 20, 1 << 30)
    assert value(m, "pyimgopt_memory_budget_in_use_bytes") == 3 << 20
    assert value(m, "pyimgopt_memory_budget_bytes") == 1 << 30
    m.set_memory(0, 1 << 30)
    assert value(m, "pyimgopt_memory_budget_in_use_bytes") == 0


def test_metrics_snapshot_matches_figures():
    m = RouterMetrics()
    assert m.snapshot() == {
        "images_processed": 0,
        "images_failed": {},
        "bytes_in": 0,
        "bytes_out": 0,
        "retries": 0,
        "recycles": 0,
        "sidecars_lost": 0,
        "protocol_errors": 0,
        "queue": {},
        "active_sidecars": 0,
        "memory_in_use": 0,
        "memory_budget": 0,
    }
    m.job_finished(result())
    m.job_finished(result(status="skipped", bytes_in=10, bytes_out=10))
    m.job_failed("decode_error", "decode")
    m.job_failed("decode_error", "sniff")
    m.job_failed("too_large", None)
    m.retry()
    m.recycle()
    m.recycle()
    m.sidecar_lost()
    m.protocol_error()
    m.set_queue({0: 3, 5: 1})
    m.set_sidecars([{"name": "a", "rss": 1}, {"name": "b", "rss": 2}, {"name": "c", "rss": 3}])
    m.set_memory(100, 1000)
    snap = m.snapshot()
    assert snap == {
        "images_processed": 2,
        "images_failed": {"decode_error": 2, "too_large": 1},
        "bytes_in": 1010,
        "bytes_out": 410,
        "retries": 1,
        "recycles": 2,
        "sidecars_lost": 1,
        "protocol_errors": 1,
        "queue": {0: 3, 5: 1},
        "active_sidecars": 3,
        "memory_in_use": 100,
        "memory_budget": 1000,
    }
    assert all(type(snap[k]) is int for k in ("images_processed", "bytes_in", "retries"))


def test_metrics_two_instances_do_not_share_values():
    a, b = RouterMetrics(), RouterMetrics()
    assert a.registry is not b.registry
    a.job_finished(result())
    a.retry()
    a.set_queue({1: 7})
    assert b.snapshot()["images_processed"] == 0
    assert b.snapshot()["retries"] == 0
    assert b.snapshot()["queue"] == {}
    assert a.snapshot()["images_processed"] == 1
    assert b"pyimgopt_retries_total 1.0" in a.exposition()
    assert b"pyimgopt_retries_total 0.0" in b.exposition()


def test_metrics_exposition_names_are_prefixed():
    m = RouterMetrics()
    m.job_finished(result())
    m.job_failed("x", "y")
    m.set_queue({0: 1})
    m.set_sidecars([{"name": "s", "rss": 5}])
    samples = {
        re.split(r"[{ ]", line, maxsplit=1)[0]
        for line in m.exposition().decode().splitlines()
        if line and not line.startswith("#")
    }
    assert samples and all(n.startswith("pyimgopt_") for n in samples)
    for expected in (
        "pyimgopt_images_processed_total",
        "pyimgopt_images_failed_total",
        "pyimgopt_image_seconds_bucket",
        "pyimgopt_stage_seconds_bucket",
        "pyimgopt_queue_length",
        "pyimgopt_sidecar_rss_bytes",
        "pyimgopt_memory_budget_bytes",
        "pyimgopt_memory_budget_in_use_bytes",
        "pyimgopt_active_sidecars",
        "pyimgopt_sidecar_recycles_total",
        "pyimgopt_sidecars_lost_total",
        "pyimgopt_protocol_errors_total",
        "pyimgopt_retries_total",
        "pyimgopt_bytes_in_total",
        "pyimgopt_bytes_out_total",
    ):
        assert expected in samples


def scrape(port: int, path: str = "/metrics") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        return resp.read().decode()


@pytest.mark.parametrize("own_server", [False, True], ids=["prometheus_client", "fallback"])
def test_metrics_serve_on_free_port_and_shutdown(monkeypatch, own_server):
    if own_server:
        monkeypatch.setattr(metrics_mod, "_client_returns_server", lambda: False)
    m = RouterMetrics()
    m.job_finished(result())
    m.protocol_error()
    m.set_queue({2: 4})
    server, port = serve_metrics(m, 0)
    try:
        assert port > 0
        text = scrape(port)
        assert 'pyimgopt_images_processed_total{format_out="webp",status="optimized"} 1.0' in text
        assert "pyimgopt_bytes_in_total 1000.0" in text
        assert "pyimgopt_protocol_errors_total 1.0" in text
        assert 'pyimgopt_queue_length{priority="2"} 4.0' in text
        m.retry()  # a later scrape sees later values
        assert "pyimgopt_retries_total 1.0" in scrape(port)
    finally:
        server.shutdown()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
    server.shutdown()  # idempotent


def test_metrics_serve_two_routers_each_their_own_registry():
    a, b = RouterMetrics(), RouterMetrics()
    a.retry()
    sa, pa = serve_metrics(a, 0)
    sb, pb = serve_metrics(b, 0)
    try:
        assert pa != pb
        assert "pyimgopt_retries_total 1.0" in scrape(pa)
        assert "pyimgopt_retries_total 0.0" in scrape(pb)
    finally:
        sa.shutdown()
        sb.shutdown()


def test_metrics_fallback_server_404_elsewhere(monkeypatch):
    monkeypatch.setattr(metrics_mod, "_client_returns_server", lambda: False)
    server, port = serve_metrics(RouterMetrics(), 0)
    try:
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=5)
        info.value.close()
        assert info.value.code == 404
    finally:
        server.shutdown()


@pytest.mark.parametrize("port", [-1, 65536, "9100", True])
def test_metrics_serve_rejects_bad_port(port):
    with pytest.raises(ValueError, match="port"):
        serve_metrics(RouterMetrics(), port)
