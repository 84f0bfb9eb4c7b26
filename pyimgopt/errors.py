"""The error tree of pyimgopt: the only module that defines error codes.

Every failure is a :class:`PyimgoptError` with a stable ``code``, a human
``message``, the ``path`` it concerns, the pipeline ``stage`` where it happened
and whether it is ``retryable``. Errors cross process boundaries as plain data
(:meth:`PyimgoptError.to_wire`) and are rebuilt as the same class on the other
side (:func:`from_wire`). Each leaf also inherits the builtin exception that
fits, so ``except ValueError`` or ``except PermissionError`` in a host app
keeps working.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "PyimgoptError",
    "InvalidSettingsError",
    "DecodeError",
    "EncodeError",
    "UnsupportedFormatError",
    "TooLargeError",
    "ScopeDeniedError",
    "CapabilityDeniedError",
    "WorkerLostError",
    "JobTimeoutError",
    "CancelledError",
    "IOFailureError",
    "SourceChangedError",
    "InternalError",
    "ProtocolError",
    "TargetUnreachableError",
    "CODES",
    "from_wire",
    "error_class",
]


class PyimgoptError(Exception):
    """Base of every pyimgopt failure.

    Parameters
    ----------
    message:
        What went wrong, for a person.
    path:
        The file concerned, if any.
    stage:
        Pipeline stage (``read``, ``probe``, ``decode``, ``normalise``,
        ``resize``, ``encode``, ``write``) or component (``settings``,
        ``protocol``, ...) where the failure happened.
    retryable:
        Overrides the class default: whether running the same job again may
        succeed.
    """

    code: ClassVar[str] = "internal"
    default_retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        stage: str | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.stage = stage
        self.retryable = self.default_retryable if retryable is None else bool(retryable)

    def __str__(self) -> str:
        where = f" [{self.path}]" if self.path else ""
        return f"{self.code}: {self.message}{where}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, path={self.path!r}, "
            f"stage={self.stage!r}, retryable={self.retryable!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PyimgoptError):
            return NotImplemented
        return type(self) is type(other) and self.to_wire() == other.to_wire()

    __hash__ = Exception.__hash__

    def __reduce__(self):  # keeps pickling (and multiprocessing) faithful
        return (_rebuild, (self.to_wire(),))

    def to_wire(self) -> dict[str, Any]:
        """Return the error as a plain dict of str/bool/None values."""
        return {
            "code": self.code,
            "message": self.message,
            "path": self.path,
            "stage": self.stage,
            "retryable": self.retryable,
        }

    @staticmethod
    def from_wire(data: dict[str, Any]) -> "PyimgoptError":
        """Rebuild an error sent by :meth:`to_wire` as the same class."""
        return from_wire(data)


class InvalidSettingsError(PyimgoptError, ValueError):
    """A setting has the wrong type or value; the message names the field."""

    code = "invalid_settings"


class DecodeError(PyimgoptError, ValueError):
    """The input is a known format but cannot be decoded (empty, truncated, corrupt)."""

    code = "decode_failed"


class EncodeError(PyimgoptError, ValueError):
    """The encoder refused the image (e.g. dimensions beyond the format's limits)."""

    code = "encode_failed"


class UnsupportedFormatError(PyimgoptError, ValueError):
    """Not an image pyimgopt reads, or an operation the output format cannot hold."""

    code = "unsupported_format"


class TooLargeError(PyimgoptError, ValueError):
    """Over a limit (pixels, frames, bytes): refused before any pixel buffer exists."""

    code = "too_large"


class ScopeDeniedError(PyimgoptError, PermissionError):
    """A path lies outside the scopes this caller may read or write."""

    code = "scope_denied"


class CapabilityDeniedError(PyimgoptError, PermissionError):
    """The caller asked for an operation it was not granted."""

    code = "capability_denied"


class WorkerLostError(PyimgoptError, RuntimeError):
    """The process running the job died or went silent."""

    code = "worker_lost"
    default_retryable = True


class JobTimeoutError(PyimgoptError, TimeoutError):
    """The job ran past its time limit."""

    code = "timeout"
    default_retryable = True


class CancelledError(PyimgoptError):
    """The job was cancelled before it finished."""

    code = "cancelled"


class IOFailureError(PyimgoptError, OSError):
    """Reading the input or writing the output failed at the OS level."""

    code = "io_error"

    def __init__(self, message: str, **kw: Any) -> None:  # OSError's __init__ takes errno args
        PyimgoptError.__init__(self, message, **kw)


class SourceChangedError(IOFailureError):
    """An in-place write was refused because the file changed on disk after it was
    read (a save made during the run): nothing was written, the new content stays.
    Retryable: doing it again reads the new content."""

    code = "source_changed"
    default_retryable = True


class InternalError(PyimgoptError, RuntimeError):
    """A bug: something that should not happen did. Always reported, never hidden."""

    code = "internal"


class ProtocolError(PyimgoptError, ValueError):
    """A message on the wire was malformed, oversize or of an unknown version/type."""

    code = "protocol_error"


class TargetUnreachableError(PyimgoptError, ValueError):
    """No output allowed by the settings fits ``target_size`` (or meets it together with
    ``target_ssim``); the message says the smallest size reached and how."""

    code = "target_unreachable"


_CLASSES: tuple[type[PyimgoptError], ...] = (
    InvalidSettingsError,
    DecodeError,
    EncodeError,
    UnsupportedFormatError,
    TooLargeError,
    ScopeDeniedError,
    CapabilityDeniedError,
    WorkerLostError,
    JobTimeoutError,
    CancelledError,
    IOFailureError,
    SourceChangedError,
    InternalError,
    ProtocolError,
    TargetUnreachableError,
)

#: The registry: stable code -> class.
CODES: dict[str, type[PyimgoptError]] = {cls.code: cls for cls in _CLASSES}


def error_class(code: str) -> type[PyimgoptError]:
    """Return the class registered for ``code`` (``InternalError`` if unknown)."""
    return CODES.get(code, InternalError)


def from_wire(data: dict[str, Any]) -> PyimgoptError:
    """Rebuild an error from :meth:`PyimgoptError.to_wire` output.

    An unknown code becomes an :class:`InternalError` whose message keeps the
    original code, so nothing is silently lost.
    """
    code = str(data.get("code", "internal"))
    message = str(data.get("message", ""))
    cls = CODES.get(code)
    if cls is None:
        cls, message = InternalError, f"[{code}] {message}"
    return cls(
        message,
        path=data.get("path"),
        stage=data.get("stage"),
        retryable=data.get("retryable"),
    )


def _rebuild(data: dict[str, Any]) -> PyimgoptError:
    return from_wire(data)
