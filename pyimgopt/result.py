"""The outcome of optimising one image: the :class:`Result` dataclass.

A result says what went in, what came out, how long each stage took, the
quality reached, the content hashes of input and output (what the
optimisation manifest records) and the status (``optimized``, ``skipped``,
``unchanged`` or ``failed``, with the structured error). It round-trips through plain dicts so it can cross a
process boundary, and :meth:`Result.to_json` gives the CLI's JSON line.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from .errors import PyimgoptError, from_wire

__all__ = ["Result", "STATUSES"]

#: ``unchanged``: the manifest (or the file's own marker) says this very content
#: was already optimised with these settings by this version; nothing was
#: decoded, and nothing written unless an output folder needed a copy.
STATUSES = ("optimized", "skipped", "unchanged", "failed")


@dataclass(frozen=True)
class Result:
    """What happened to one image.

    ``bytes_out`` is the size of what was written (for ``skipped`` that is the
    input's own size; for ``unchanged`` the size of the output recorded by the
    run that made it); ``width``/``height`` are the output dimensions. For a
    ``failed`` result ``error`` holds the :class:`PyimgoptError` and the output
    fields are ``None``. ``input_hash`` and ``output_hash`` are the content
    hashes (128-bit BLAKE3, hex) of the bytes read and of the bytes written
    (or that would be written). ``dry_run`` says nothing was written: the
    output fields describe what a real run would write.
    """

    input: str | None
    output: str | None
    status: str
    format_in: str | None = None
    format_out: str | None = None
    bytes_in: int | None = None
    bytes_out: int | None = None
    width_in: int | None = None
    height_in: int | None = None
    width: int | None = None
    height: int | None = None
    frames: int = 1
    quality: int | None = None
    ssim: float | None = None
    seconds: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    error: PyimgoptError | None = None
    input_hash: str | None = None
    output_hash: str | None = None
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        """True unless the status is ``failed``."""
        return self.status != "failed"

    @property
    def saved_bytes(self) -> int:
        """Bytes saved (0 for skipped or failed)."""
        if self.bytes_in is None or self.bytes_out is None:
            return 0
        return self.bytes_in - self.bytes_out

    def to_dict(self) -> dict[str, Any]:
        """Return the result as plain values (the error as its wire dict)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "error":
                value = None if value is None else value.to_wire()
            elif f.name == "notes":
                value = list(value)
            elif f.name == "stages":
                value = dict(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Result":
        """Rebuild a result from :meth:`to_dict` output."""
        kw = dict(data)
        if kw.get("error") is not None:
            kw["error"] = from_wire(kw["error"])
        kw["notes"] = tuple(kw.get("notes") or ())
        kw["stages"] = dict(kw.get("stages") or {})
        return cls(**kw)

    def to_json(self) -> dict[str, Any]:
        """The CLI's ``--json`` record for this file (``type: result``)."""
        err = None
        if self.error is not None:
            w = self.error.to_wire()
            err = {k: w[k] for k in ("code", "message", "stage", "retryable")}
        return {
            "type": "result",
            "input": self.input,
            "output": self.output,
            "status": self.status,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "format_in": self.format_in,
            "format_out": self.format_out,
            "width": self.width,
            "height": self.height,
            "quality": self.quality,
            "ssim": self.ssim,
            "dry_run": self.dry_run,
            "seconds": round(self.seconds, 4),
            "error": err,
        }
