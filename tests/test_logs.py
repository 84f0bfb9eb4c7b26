"""Structured logging: JSON lines, human lines, the env switch, idempotent configure."""

from __future__ import annotations

import io
import json
import logging
import pathlib
import re

import pytest

from pyimgopt import logs


@pytest.fixture(autouse=True)
def restore_logger():
    """Leave the "pyimgopt" logger as the test found it."""
    logger = logging.getLogger(logs.LOGGER_NAME)
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    for h in list(logger.handlers):
        if h not in saved[0]:
            logger.removeHandler(h)
            h.close()
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


def lines(buf: io.StringIO) -> list[str]:
    return buf.getvalue().splitlines()


def test_logs_json_lines_parse_and_carry_fields():
    buf = io.StringIO()
    logs.configure(json_lines=True, stream=buf)
    log = logs.get_logger("router")
    logs.event(
        log,
        "job_done",
        batch="b1",
        job=7,
        sidecar="sc-2",
        duration=0.25,
        stage="encode",
        count=3,
        path="/tmp/a b.png",
    )
    logs.event(log, "job_failed", level=logging.WARNING, error_code="decode_error", job=8)
    out = lines(buf)
    assert len(out) == 2
    first, second = (json.loads(line) for line in out)
    assert first["event"] == "job_done"
    assert first["level"] == "INFO"
    assert first["logger"] == "pyimgopt.router"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["ts"])
    assert {k: v for k, v in first.items() if k in logs.FIELDS} == {
        "batch": "b1",
        "job": 7,
        "sidecar": "sc-2",
        "duration": 0.25,
        "stage": "encode",
        "count": 3,
        "path": "/tmp/a b.png",
    }
    assert "error_code" not in first
    assert second["level"] == "WARNING"
    assert second["error_code"] == "decode_error"
    assert second["job"] == 8
    assert "batch" not in second


def test_logs_json_one_object_per_line_even_with_newlines():
    buf = io.StringIO()
    log = logs.configure(json_lines=True, stream=buf)
    log.info("two\nlines", extra={"path": "a\nb"})
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("crashed")
    out = lines(buf)
    assert len(out) == 2
    rec = json.loads(out[0])
    assert rec["event"] == "two\nlines" and rec["path"] == "a\nb"
    crash = json.loads(out[1])
    assert crash["level"] == "ERROR"
    assert "RuntimeError: boom" in crash["exc"]


def test_logs_json_never_raises_on_weird_extras():
    class BadRepr:
        def __repr__(self):
            raise RuntimeError("no repr")

    buf = io.StringIO()
    log = logs.configure(json_lines=True, stream=buf)
    # pytest >= 9 attaches its capture handler to every non-propagating logger
    # (ours, when an earlier test configured it), and that handler re-raises
    # format errors by design. Only our handler is under test here; the
    # autouse fixture puts the others back.
    log.handlers[:] = [h for h in log.handlers if getattr(h, logs._MARK, False)]
    logs.event(
        log,
        "weird",
        batch={1, 2},
        job=b"\xff",
        sidecar=BadRepr(),
        duration=float("nan"),
        count=object(),
        path=pathlib.Path("/x/y.png"),
        stage={"k": (1, 2)},
        unknown_field="dropped",
    )
    log.info("bad %d args", "not-an-int")  # %-formatting error must not raise either
    log.info("msg", extra={"path": "ok"})
    out = lines(buf)
    assert len(out) == 3
    rec = json.loads(out[0])
    assert rec["batch"] in ("{1, 2}", "{2, 1}")
    assert rec["job"] == "b'\\xff'"
    assert rec["sidecar"].startswith("<unrepresentable")
    assert rec["duration"] == "nan"
    assert rec["count"].startswith("<object object")
    assert rec["path"] == "/x/y.png"
    assert rec["stage"] == {"k": [1, 2]}
    assert "unknown_field" not in rec
    assert json.loads(out[1])["event"] == "bad %d args"
    assert json.loads(out[2])["path"] == "ok"


def test_logs_event_reserved_field_names_do_not_raise():
    buf = io.StringIO()
    log = logs.configure(json_lines=True, stream=buf)
    logs.event(log, "reserved", msg="x", args=(1,), message="m", job=1)
    rec = json.loads(lines(buf)[0])
    assert rec["event"] == "reserved" and rec["job"] == 1


def test_logs_human_mode_readable():
    buf = io.StringIO()
    log = logs.configure(json_lines=False, stream=buf)
    logs.event(
        logs.get_logger("pool"),
        "sidecar_started",
        sidecar="sc-1",
        count=2,
        path="/a b/c.png",
        duration=1.23456,
    )
    (line,) = lines(buf)
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d info sidecar_started sidecar=sc-1 duration=1\.235 count=2 "
        r'path="/a b/c\.png"',
        line,
    ), line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)
    assert log is logging.getLogger("pyimgopt")


@pytest.mark.parametrize(
    "env, expect_json", [("1", True), ("0", False), ("", False), (None, False)]
)
def test_logs_env_var_switch(monkeypatch, env, expect_json):
    if env is None:
        monkeypatch.delenv(logs.ENV_VAR, raising=False)
    else:
        monkeypatch.setenv(logs.ENV_VAR, env)
    buf = io.StringIO()
    logs.configure(stream=buf).info("hello", extra={"job": 1})
    (line,) = lines(buf)
    if expect_json:
        assert json.loads(line)["job"] == 1
    else:
        assert line.endswith("info hello job=1")


def test_logs_explicit_argument_beats_env(monkeypatch):
    monkeypatch.setenv(logs.ENV_VAR, "1")
    buf = io.StringIO()
    logs.configure(json_lines=False, stream=buf).info("plain")
    assert lines(buf)[0].endswith("info plain")


def test_logs_configure_idempotent_no_duplicate_lines():
    first, second = io.StringIO(), io.StringIO()
    logs.configure(json_lines=True, stream=first)
    logs.configure(json_lines=True, stream=second)
    logs.configure(json_lines=True, stream=second)
    logs.get_logger("x").info("once")
    assert first.getvalue() == ""
    assert len(lines(second)) == 1
    ours = [h for h in logging.getLogger("pyimgopt").handlers if getattr(h, logs._MARK, False)]
    assert len(ours) == 1


def test_logs_configure_keeps_foreign_handlers_and_root_untouched():
    root = logging.getLogger()
    root_state = (list(root.handlers), root.level)
    foreign = logging.StreamHandler(io.StringIO())
    logger = logging.getLogger("pyimgopt")
    logger.addHandler(foreign)
    try:
        logs.configure(json_lines=True, stream=io.StringIO())
        logs.configure(json_lines=False, stream=io.StringIO())
        assert foreign in logger.handlers
        assert (list(root.handlers), root.level) == root_state
    finally:
        logger.removeHandler(foreign)


def test_logs_level_filters_and_validates():
    buf = io.StringIO()
    log = logs.configure(json_lines=True, level="warning", stream=buf)
    log.info("hidden")
    log.warning("shown")
    assert [json.loads(x)["event"] for x in lines(buf)] == ["shown"]
    logs.configure(json_lines=True, level=logging.DEBUG, stream=buf)
    logs.event(log, "dbg", level="DEBUG")
    assert json.loads(lines(buf)[-1])["event"] == "dbg"
    with pytest.raises(ValueError, match="level"):
        logs.configure(level="LOUD")


def test_logs_default_stream_is_stderr_at_write_time(capsys):
    logs.configure(json_lines=True)
    logs.get_logger().info("to stderr", extra={"count": 1})
    captured = capsys.readouterr()
    assert captured.out == ""
    assert json.loads(captured.err.splitlines()[-1])["count"] == 1


def test_logs_get_logger_names():
    assert logs.get_logger().name == "pyimgopt"
    assert logs.get_logger("router").name == "pyimgopt.router"
    assert logs.get_logger("pyimgopt.router.broker").name == "pyimgopt.router.broker"
    assert logs.get_logger("router").parent is logging.getLogger("pyimgopt")
