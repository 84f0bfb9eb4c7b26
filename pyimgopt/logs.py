"""Structured logging for pyimgopt: one JSON object per line through stdlib ``logging``.

Owns the ``"pyimgopt"`` logger's handler and format: :func:`configure` installs
it (JSON lines when asked or when ``PYIMGOPT_LOG_JSON=1``, readable lines
otherwise), :func:`get_logger` hands out children, :func:`event` logs a named
event with structured fields. The formatters never raise: a log line must not
be what fails a batch.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import sys
from typing import Any, TextIO

__all__ = [
    "LOGGER_NAME",
    "ENV_VAR",
    "FIELDS",
    "JsonFormatter",
    "HumanFormatter",
    "configure",
    "get_logger",
    "event",
]

LOGGER_NAME = "pyimgopt"
ENV_VAR = "PYIMGOPT_LOG_JSON"
# The structured fields a record may carry (via ``extra=``), in output order.
FIELDS = ("batch", "job", "sidecar", "duration", "error_code", "stage", "count", "path", "encoder",
          "reason")

_MARK = "_pyimgopt_handler"  # set on the handler configure() installs, so it can replace it


def _jsonable(value: Any) -> Any:
    """``value`` if it dumps as strict JSON, else a string form of it; never raises."""
    if isinstance(value, os.PathLike):
        try:
            return os.fspath(value)
        except Exception:
            pass
    try:
        json.dumps(value, allow_nan=False)
        return value
    except Exception:
        pass
    try:
        return repr(value)
    except Exception:
        return f"<unrepresentable {type(value).__name__}>"


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # bad %-args: keep the template rather than lose the line
        try:
            return str(record.msg)
        except Exception:
            return "<unrepresentable message>"


class JsonFormatter(logging.Formatter):
    """One JSON object per line.

    Keys: ``ts`` (ISO 8601, UTC, milliseconds), ``level``, ``logger``,
    ``event`` (the message), then each of :data:`FIELDS` the record carries,
    then ``exc`` (the traceback) when the record has exception info. Values
    that are not JSON are given as their ``repr`` (paths as their string).
    """

    def format(self, record: logging.LogRecord) -> str:
        try:
            return self._format(record)
        except Exception as exc:  # last resort: still one parseable line
            return json.dumps(
                {
                    "level": "ERROR",
                    "logger": LOGGER_NAME,
                    "event": "log_format_failed",
                    "error": _jsonable(exc),
                }
            )

    def _format(self, record: logging.LogRecord) -> str:
        ts = _dt.datetime.fromtimestamp(record.created, tz=_dt.timezone.utc)
        out: dict[str, Any] = {
            "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "event": _message(record),
        }
        for key in FIELDS:
            if key in record.__dict__:
                out[key] = _jsonable(record.__dict__[key])
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        # ensure_ascii keeps the line 7-bit: a log shipper never splits a code point
        return json.dumps(out, ensure_ascii=True, allow_nan=False)


def _human_value(value: Any) -> str:
    value = _jsonable(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    text = value if isinstance(value, str) else json.dumps(value)
    if text == "" or any(c.isspace() or c in '"=' for c in text):
        return json.dumps(text)
    return text


class HumanFormatter(logging.Formatter):
    """``HH:MM:SS level event key=value ...`` (local time), for a person at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        try:
            ts = _dt.datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
            parts = [ts, record.levelname.lower(), _message(record)]
            for key in FIELDS:
                if key in record.__dict__:
                    parts.append(f"{key}={_human_value(record.__dict__[key])}")
            line = " ".join(parts)
            if record.exc_info:
                line += "\n" + self.formatException(record.exc_info)
            return line
        except Exception:
            return f"{record.levelname} {_message(record)}"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at emit time (so redirection and capture work)."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> TextIO:  # type: ignore[override]
        return sys.stderr


def _level(level: int | str) -> int:
    if isinstance(level, bool):
        raise ValueError(f"Expected a logging level name or int for level but received {level!r}")
    if isinstance(level, int):
        return level
    if isinstance(level, str):
        value = logging.getLevelName(level.strip().upper())
        if isinstance(value, int):
            return value
    raise ValueError(
        "Expected a logging level (DEBUG, INFO, WARNING, ERROR, CRITICAL or an int) "
        f"for level but received {level!r}"
    )


def configure(
    json_lines: bool | None = None, level: int | str = "INFO", stream: TextIO | None = None
) -> logging.Logger:
    """Set up the ``"pyimgopt"`` logger and return it.

    Parameters
    ----------
    json_lines
        True for one JSON object per line, False for human lines; None follows
        ``PYIMGOPT_LOG_JSON`` (``"1"`` means JSON).
    level
        Level name or number for the ``"pyimgopt"`` logger.
    stream
        Where lines go; default ``sys.stderr`` (looked up at each write).

    Calling it again replaces the handler it installed before (no duplicate
    lines). The root logger is never touched; the ``"pyimgopt"`` logger stops
    propagating to it, so a host that configured root does not get each line
    twice in two formats (which would break a JSON-lines reader).
    """
    lvl = _level(level)
    if json_lines is None:
        json_lines = os.environ.get(ENV_VAR, "").strip() == "1"
    logger = logging.getLogger(LOGGER_NAME)
    for old in [h for h in logger.handlers if getattr(h, _MARK, False)]:
        logger.removeHandler(old)
        old.close()
    handler: logging.Handler = _StderrHandler() if stream is None else logging.StreamHandler(stream)
    setattr(handler, _MARK, True)
    handler.setFormatter(JsonFormatter() if json_lines else HumanFormatter())
    logger.addHandler(handler)
    logger.setLevel(lvl)
    logger.propagate = False
    return logger


def get_logger(name: str = "") -> logging.Logger:
    """The ``"pyimgopt"`` logger (``name=""``) or its child ``"pyimgopt.<name>"``.

    A name already under ``pyimgopt`` (``get_logger(__name__)``) is used as is.
    """
    if not name or name == LOGGER_NAME:
        return logging.getLogger(LOGGER_NAME)
    if name.startswith(LOGGER_NAME + "."):
        return logging.getLogger(name)
    return logging.getLogger(f"{LOGGER_NAME}.{name}")


def event(
    logger: logging.Logger, name: str, level: int | str = logging.INFO, **fields: Any
) -> None:
    """Log the event ``name`` with structured ``fields`` (``logger.log(level, name, extra=fields)``).

    The caller's file and line are recorded, not this helper's. A field whose
    name is a ``LogRecord`` attribute (``msg``, ``args``, ``message`` ...)
    would make ``logging`` raise ``KeyError``; such fields are dropped, since
    logging an event must never fail the work it describes.
    """
    extra = {k: v for k, v in fields.items() if k not in _RESERVED}
    logger.log(_level(level), name, extra=extra, stacklevel=2)


_RESERVED = frozenset(logging.LogRecord("", logging.INFO, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
}
