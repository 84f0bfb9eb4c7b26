"""The wire between client, router and sidecars: the only module that imports msgpack.

It owns the message types and their fields (:data:`SCHEMAS`), the framing
(one msgpack body ``{"v": VERSION, "t": TYPE, ...}`` followed by at most
:data:`MAX_BULK_FRAMES` raw bulk frames), the limits, :func:`encode` /
:func:`decode`, the socket limit options (:func:`configure_socket`) and the
conversion of :class:`~pyimgopt.settings.Settings`, :class:`~pyimgopt.result.Result`
and :class:`~pyimgopt.errors.PyimgoptError` to and from plain wire dicts.

Decoding is strict and total: whatever bytes arrive, :func:`decode` returns a
:class:`Message` or raises :class:`~pyimgopt.errors.ProtocolError` (code
``protocol_error``, stage ``protocol``), never anything else, so a bad frame
can never crash the router. Encoding runs the same checks on what it is about
to send, so a bug on our side fails at the sender instead of at the peer.
"""

from __future__ import annotations

import dataclasses
import reprlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgpack

from .errors import InternalError, ProtocolError, PyimgoptError, from_wire
from .result import STATUSES, Result
from .settings import Settings

if TYPE_CHECKING:  # zmq is imported lazily: only socket code needs it
    import zmq

__all__ = [
    "VERSION",
    "MAX_BODY_BYTES",
    "MAX_MESSAGE_BYTES",
    "MAX_BULK_FRAMES",
    "MAX_STR_BYTES",
    "MAX_ARRAY_LEN",
    "MAX_MAP_LEN",
    "MAX_DEPTH",
    "SCHEMAS",
    "BULK_FRAMES",
    "TYPES",
    "EVENT_KINDS",
    "FEATURES",
    "MAX_JOBS_PAGE",
    "OTHER_JOB_STATE",
    "Message",
    "encode",
    "decode",
    "configure_socket",
    "split_jobs",
    "pack_settings",
    "unpack_settings",
    "pack_result",
    "unpack_result",
    "pack_error",
    "unpack_error",
    "unpack_jobs_page",
]

VERSION = 1

#: A msgpack body larger than this is refused before it is parsed.
MAX_BODY_BYTES = 4 * 1024 * 1024
#: The largest whole message (body and bulk frames together): :func:`decode`
#: refuses more, and it is ZMQ_MAXMSGSIZE (which ZeroMQ applies per frame)
#: on sockets that take bulk frames. Bulk image frames count, hence the size.
#: Sockets whose peers never send bulk (the router's client endpoint) take
#: ``max_bytes=MAX_BODY_BYTES`` in :func:`configure_socket`: a client can
#: make the shared router hold no more than that per message.
MAX_MESSAGE_BYTES = 300 * 1024 * 1024
#: Raw frames after the body, across all types (each type allows fewer).
MAX_BULK_FRAMES = 2

# msgpack unpack limits. They are checked against the header before anything
# is allocated, so an array32 header claiming 10**9 elements costs nothing.
MAX_STR_BYTES = 1024 * 1024
MAX_BIN_BYTES = 0  # bytes travel as bulk frames, never inside the body
MAX_ARRAY_LEN = 100_000
MAX_MAP_LEN = 4096
MAX_EXT_BYTES = 0
#: Nesting depth of containers inside one field. Our payloads are 2-4 deep;
#: the bound keeps every walk over untrusted data short and non-recursive.
MAX_DEPTH = 32

# Non-UTF-8 file names reach Python as surrogate escapes (os.fsdecode); this
# error handler carries them across unchanged, so no file is unreachable.
_UNICODE_ERRORS = "surrogateescape"

_NONE = type(None)
_S = (str,)
_SN = (str, _NONE)
_I = (int,)
_B = (bool,)
_D = (dict,)
_L = (list,)
_DN = (dict, _NONE)
_BN = (bool, _NONE)
_IN = (int, _NONE)
REQ, OPT = True, False  # an OPT field may be absent (it reads as None)

#: type -> {field: (accepted types, required)}. Types are matched exactly as
#: msgpack decodes them, so ``True`` is never an int. Optional fields accept
#: None and read as None when absent.
SCHEMAS: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {
    # client -> router
    "hello": {"client": (_S, REQ), "pid": (_I, REQ)},
    "submit": {
        "req": (_S, REQ),
        "batch": (_S, REQ),
        "priority": (_I, REQ),
        "settings": (_D, REQ),
        "jobs": (_L, REQ),
        "in_place": (_B, REQ),
        # force: redo every file whatever the optimisation manifest says;
        # dry_run: run the pipeline, write nothing, report what would be written
        "force": (_BN, OPT),
        "dry_run": (_BN, OPT),
        # True: more jobs of this batch follow as "jobs" chunks; the router
        # answers each chunk with a "reply" and the last one with "accepted"
        "more": (_BN, OPT),
    },
    # the next chunk of a batch whose "submit" said more=True
    "jobs": {"req": (_S, REQ), "batch": (_S, REQ), "jobs": (_L, REQ), "more": (_B, REQ)},
    "cancel": {"req": (_S, REQ), "batch": (_S, REQ)},
    "pause": {"req": (_S, REQ), "batch": (_S, REQ)},
    "resume": {"req": (_S, REQ), "batch": (_S, REQ)},
    "status": {"req": (_S, REQ), "batch": (_SN, OPT)},
    # reattach to a batch after a reconnect or a router restart: the router
    # replays the events of every finished file, then the live ones follow
    "attach": {"req": (_S, REQ), "batch": (_S, REQ)},
    # a page of a batch's jobs in submit order from ``offset``: at most
    # ``limit`` and what fits one message; the "reply" data is checked by
    # unpack_jobs_page (a router advertises it in status "features")
    "batch_jobs": {"req": (_S, REQ), "batch": (_S, REQ), "offset": (_I, REQ), "limit": (_I, REQ)},
    # router -> client
    "accepted": {"req": (_S, REQ), "batch": (_S, REQ), "total": (_I, REQ)},
    "event": {
        "batch": (_S, REQ),
        "kind": (_S, REQ),
        "job": (_SN, OPT),
        "data": (_D, REQ),
    },
    # several events in one message, in order: [[batch, kind, job, data], ...]
    # (the router sends what gathered for a client in a turn of its loop together)
    "events": {"events": (_L, REQ)},
    "reply": {"req": (_S, REQ), "ok": (_B, REQ), "data": (_D, REQ)},
    "error": {"req": (_SN, OPT), "error": (_D, REQ)},
    # the router is alive: sent to a client with open batches when nothing
    # else was sent for a while, so a long quiet stage is not taken for a
    # lost router (which would make the client reattach and replay)
    "ping": {},
    # router <-> sidecar
    # inline: the sidecar has no access to the router's files (remote) and
    # takes every job as bytes in a frame.
    "ready": {"slots": (_I, REQ), "pid": (_I, REQ), "name": (_S, REQ), "inline": (_BN, OPT)},
    "heartbeat": {"rss": (_I, REQ), "busy": (_L, REQ)},
    "job": {
        "job": (_S, REQ),
        "attempt": (_I, REQ),
        "lease_ms": (_I, REQ),
        "input": (_SN, OPT),
        "output": (_SN, OPT),
        "in_place": (_B, REQ),
        "settings": (_D, REQ),
        "inline": (_B, REQ),
        # what the router checked: {"dev", "ino"} of the input and, when the
        # output folder existed, {"parent_dev", "parent_ino"}; the sidecar
        # refuses a file or folder that is not the one checked.
        "expect": (_DN, OPT),
        # bytes of memory the router reserved for the job; a sidecar whose
        # header estimate is larger asks for more ("need") before decoding
        "mem": (_IN, OPT),
        # format="auto": {format: output path} of the final names the router
        # checked against the policy; the writer refuses any other name
        "outputs": (_DN, OPT),
        # the optimisation manifest's word on this file (router -> sidecar):
        # {"hashes": [hex], "copy": bool, "result": {...}}: an input whose
        # content hash is listed is ``unchanged`` (copied to the output when
        # "copy"), without decoding; force skips that and the in-file marker
        "known": (_DN, OPT),
        "force": (_BN, OPT),
        "dry_run": (_BN, OPT),
    },
    # sidecar -> router: the header says this job needs ``mem`` bytes, more
    # than reserved; the router answers "grant" (ok: go on; not ok: the job
    # goes back to the queue to wait for memory, and the slot is free)
    "need": {"job": (_S, REQ), "attempt": (_I, REQ), "mem": (_I, REQ)},
    "grant": {"job": (_S, REQ), "attempt": (_I, REQ), "ok": (_B, REQ)},
    # router -> sidecar: this connection is unknown here (lost, or the
    # router restarted): announce yourself again with "ready" when idle
    "register": {},
    "progress": {"job": (_S, REQ), "attempt": (_I, REQ), "stage": (_S, REQ)},
    "result": {"job": (_S, REQ), "attempt": (_I, REQ), "result": (_D, REQ)},
    "failed": {"job": (_S, REQ), "attempt": (_I, REQ), "error": (_D, REQ)},
    "abort": {"job": (_S, REQ)},
    "shutdown": {"reason": (_S, REQ)},
}

#: How many bulk frames each type may carry (absent: none).
BULK_FRAMES: dict[str, int] = {"job": 1, "result": 1}

TYPES: frozenset[str] = frozenset(SCHEMAS)

EVENT_KINDS: frozenset[str] = frozenset(
    (
        "queued",
        "started",
        "progress",
        "result",
        "failed",
        "retrying",
        "batch_progress",
        "degraded",
        "batch_done",
        "cancelled",
        "paused",
        "resumed",
    )
)

#: Requests added after version 1 that a router lists in its ``status`` reply
#: ("features"): a client asks for one only of a router that lists it.
FEATURES: frozenset[str] = frozenset({"batch_jobs"})
#: The most jobs one ``batch_jobs`` page holds (fewer when their paths are long).
MAX_JOBS_PAGE = 5000

# Fields of one element of submit's "jobs".
_JOB_ENTRY: dict[str, tuple[tuple[type, ...], bool]] = {
    "id": (_S, REQ),
    "input": (_S, REQ),
    "output": (_SN, OPT),
}

_UNPACK_LIMITS: dict[str, Any] = dict(
    raw=False,
    strict_map_key=True,
    use_list=True,
    unicode_errors=_UNICODE_ERRORS,
    max_str_len=MAX_STR_BYTES,
    max_bin_len=MAX_BIN_BYTES,
    max_array_len=MAX_ARRAY_LEN,
    max_map_len=MAX_MAP_LEN,
    max_ext_len=MAX_EXT_BYTES,
)

_repr = reprlib.Repr()
_repr.maxstring = 60
_repr.maxother = 60
_repr.maxlist = _repr.maxdict = _repr.maxtuple = 4
_repr.maxlevel = 2


def _fail(message: str) -> ProtocolError:
    return ProtocolError(message, stage="protocol")


def _type_names(types: tuple[type, ...]) -> str:
    return " or ".join("None" if t is _NONE else t.__name__ for t in types)


def _received(value: Any) -> str:
    return f"{type(value).__name__} ({_repr.repr(value)})"


@dataclass(frozen=True)
class Message:
    """One decoded message: its ``type``, its ``fields`` (the body without
    ``v`` and ``t``; every field of the schema is present, absent optional
    ones as None) and its raw ``bulk`` frames."""

    type: str
    fields: dict[str, Any]
    bulk: tuple[bytes, ...] = ()

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]

    def get(self, key: str, default: Any = None) -> Any:
        """Return field ``key``, or ``default`` when the body has no such field."""
        return self.fields.get(key, default)


# --------------------------------------------------------------------------
# validation of decoded (plain) data


def _check_plain(value: Any, where: str) -> None:
    """Refuse anything but None/bool/int/float/str/list/dict-with-str-keys,
    nested at most MAX_DEPTH deep. Iterative: untrusted depth never recurses."""
    # Every message is checked here (decode, and encode's check of what it
    # sends): scalars are checked in place, only containers go on the stack.
    if type(value) is not dict and type(value) is not list:
        _check_scalar(value, where)
        return
    stack: list[tuple[Any, int]] = [(value, 0)]
    pop, push = stack.pop, stack.append
    while stack:
        item, depth = pop()
        if depth >= MAX_DEPTH:
            raise _fail(f"{where} nests deeper than {MAX_DEPTH} levels")
        if type(item) is dict:
            for key, sub in item.items():
                if type(key) is not str:
                    raise _fail(f"{where} has a non-str map key {_received(key)}")
                kind = type(sub)
                if kind is str or kind is int or sub is None or kind is float or kind is bool:
                    continue
                if kind is dict or kind is list:
                    push((sub, depth + 1))
                else:
                    _check_scalar(sub, where)
        else:
            for sub in item:
                kind = type(sub)
                if kind is str or kind is int or sub is None or kind is float or kind is bool:
                    continue
                if kind is dict or kind is list:
                    push((sub, depth + 1))
                else:
                    _check_scalar(sub, where)


def _check_scalar(item: Any, where: str) -> None:
    kind = type(item)
    if kind is bytes:
        raise _fail(f"{where} holds bytes; raw bytes travel as bulk frames")
    if not (item is None or kind is bool or kind is int or kind is float or kind is str):
        raise _fail(f"{where} holds an unsupported {type(item).__name__}")


def _check_fields(
    what: str, body: dict[str, Any], schema: dict[str, tuple[tuple[type, ...], bool]]
) -> None:
    """Check ``body`` against ``schema`` in place: refuse missing required,
    unknown and mistyped fields; fill absent optional ones with None."""
    unknown = [k for k in body if k not in schema]
    if unknown:
        names = ", ".join(repr(k) for k in sorted(map(str, unknown)))
        raise _fail(f"{what}: unexpected field(s) {names}; expected {', '.join(schema)}")
    for name, (types, required) in schema.items():
        if name not in body:
            if required:
                raise _fail(f"{what}: missing field {name!r}")
            body[name] = None
            continue
        value = body[name]
        if type(value) not in types:
            raise _fail(
                f"{what}: field {name!r} expected {_type_names(types)} "
                f"but received {_received(value)}"
            )


def _check_message(msg_type: str, fields: dict[str, Any], nbulk: int) -> None:
    what = f"message {msg_type!r}"
    _check_fields(what, fields, SCHEMAS[msg_type])
    for name, value in fields.items():
        if type(value) is dict or type(value) is list:
            _check_plain(value, f"{what}: field {name!r}")
    if msg_type in ("submit", "jobs"):
        for i, entry in enumerate(fields["jobs"]):
            if type(entry) is not dict:
                raise _fail(f"{what}: jobs[{i}] expected dict but received {_received(entry)}")
            _check_fields(f"{what}: jobs[{i}]", entry, _JOB_ENTRY)
    elif msg_type == "heartbeat":
        for i, name in enumerate(fields["busy"]):
            if type(name) is not str:
                raise _fail(f"{what}: busy[{i}] expected str but received {_received(name)}")
    elif msg_type == "event":
        if fields["kind"] not in EVENT_KINDS:
            raise _fail(
                f"{what}: unknown event kind {_repr.repr(fields['kind'])}; "
                f"expected one of {', '.join(sorted(EVENT_KINDS))}"
            )
    elif msg_type == "events":
        for i, entry in enumerate(fields["events"]):
            if (type(entry) is not list or len(entry) != 4 or type(entry[0]) is not str
                    or type(entry[1]) is not str or type(entry[2]) not in _SN
                    or type(entry[3]) is not dict):
                raise _fail(f"{what}: events[{i}] expected [batch, kind, job or None, data] "
                            f"but received {_received(entry)}")
            if entry[1] not in EVENT_KINDS:
                raise _fail(f"{what}: events[{i}] has an unknown event kind {_repr.repr(entry[1])}")
    allowed = BULK_FRAMES.get(msg_type, 0)
    if nbulk > allowed:
        if allowed == 0:
            raise _fail(f"{what} carries no bulk frames but received {nbulk}")
        raise _fail(f"{what} carries at most {allowed} bulk frame(s) but received {nbulk}")
    if msg_type == "job" and fields["inline"] != (nbulk == 1):
        state = "inline" if fields["inline"] else "not inline"
        raise _fail(
            f"{what}: a job {state} must carry {int(fields['inline'])} bulk frame(s), "
            f"received {nbulk}"
        )


# --------------------------------------------------------------------------
# frames


def _frame_view(frame: Any, index: int) -> memoryview:
    try:
        view = memoryview(frame)
    except TypeError:
        raise _fail(f"frame {index} expected bytes but received {type(frame).__name__}") from None
    if view.nbytes > MAX_MESSAGE_BYTES:
        raise _fail(f"frame {index} of {view.nbytes} bytes exceeds {MAX_MESSAGE_BYTES}")
    return view


def _as_bytes(frame: Any, view: memoryview) -> bytes:
    if type(frame) is bytes:
        return frame
    return view.tobytes()


def decode(frames: Sequence[bytes | zmq.Frame | memoryview]) -> Message:
    """Decode the frames of one message (routing frames already stripped).

    Returns
    -------
    Message
        The type, the checked fields and the bulk frames as bytes.

    Raises
    ------
    ProtocolError
        For anything that is not a valid message of this protocol version,
        and for nothing else, whatever the input.
    """
    if not isinstance(frames, (list, tuple)):
        raise _fail(f"expected a list of frames but received {type(frames).__name__}")
    if not frames:
        raise _fail("empty message: no frames")
    nbulk = len(frames) - 1
    if nbulk > MAX_BULK_FRAMES:
        raise _fail(f"too many bulk frames: {nbulk} (at most {MAX_BULK_FRAMES})")
    views = [_frame_view(f, i) for i, f in enumerate(frames)]
    total = sum(v.nbytes for v in views)
    if total > MAX_MESSAGE_BYTES:
        raise _fail(f"message of {total} bytes exceeds MAX_MESSAGE_BYTES ({MAX_MESSAGE_BYTES})")
    if views[0].nbytes > MAX_BODY_BYTES:
        raise _fail(
            f"message body of {views[0].nbytes} bytes exceeds MAX_BODY_BYTES ({MAX_BODY_BYTES})"
        )
    try:
        body = msgpack.unpackb(views[0], **_UNPACK_LIMITS)
    except Exception as exc:  # msgpack raises several types; all mean "not a message"
        raise _fail(f"invalid msgpack body: {type(exc).__name__}: {exc}") from None
    if type(body) is not dict:
        raise _fail(f"message body must be a map but is {_received(body)}")
    if "v" not in body:
        raise _fail("message has no protocol version 'v'")
    version = body.pop("v")
    if type(version) is not int or version != VERSION:
        raise _fail(f"unknown protocol version {_repr.repr(version)}")
    if "t" not in body:
        raise _fail("message has no type 't'")
    msg_type = body.pop("t")
    if type(msg_type) is not str or msg_type not in SCHEMAS:
        err = _fail(f"unknown message type {_repr.repr(msg_type)}")
        # the request id, when there is one, so the answer reaches the waiting caller
        err.req = body["req"] if type(body.get("req")) is str else None
        raise err
    _check_message(msg_type, body, nbulk)
    bulk = tuple(_as_bytes(f, v) for f, v in zip(frames[1:], views[1:]))
    return Message(msg_type, body, bulk)


def encode(msg_type: str, bulk: Sequence[bytes] = (), **fields: Any) -> list[bytes]:
    """Encode one message as ``[body, *bulk]``, ready for ``send_multipart``.

    The body is ``{"v": VERSION, "t": msg_type, **fields}``; absent optional
    fields are sent as None. The message is checked exactly as :func:`decode`
    would check it on arrival.

    Raises
    ------
    ProtocolError
        If the type is unknown or a field is missing, unknown, of the wrong
        type, not plain data, or the message exceeds a limit.
    """
    if not isinstance(msg_type, str) or msg_type not in SCHEMAS:
        raise _fail(f"cannot encode unknown message type {_repr.repr(msg_type)}")
    if isinstance(bulk, (bytes, bytearray, memoryview, str)):
        raise _fail(f"cannot encode {msg_type!r}: bulk must be a sequence of frames")
    frames: list[bytes] = []
    for i, frame in enumerate(bulk, start=1):
        frames.append(_as_bytes(frame, _frame_view(frame, i)))
    if "v" in fields or "t" in fields:
        raise _fail(f"cannot encode {msg_type!r}: 'v' and 't' are set by encode, not by fields")
    body: dict[str, Any] = {"v": VERSION, "t": msg_type}
    body.update((k, None) for k, (_, req) in SCHEMAS[msg_type].items() if not req)
    body.update(fields)
    try:
        packed = msgpack.packb(body, use_bin_type=True, unicode_errors=_UNICODE_ERRORS)
    except Exception as exc:
        raise _fail(
            f"cannot encode {msg_type!r}: fields must be plain data ({type(exc).__name__}: {exc})"
        ) from None
    # Check what the peer will see: tuples arrive as lists, limits apply.
    try:
        decode([packed, *frames])
    except ProtocolError as exc:
        raise _fail(f"cannot encode {msg_type!r}: {exc.message}") from None
    return [packed, *frames]


def split_jobs(jobs: Sequence[dict[str, Any]], *, max_bytes: int | None = None,
               max_count: int | None = None) -> list[list[dict[str, Any]]]:
    """Split a submit's job entries into chunks that each fit one message.

    Each chunk stays under ``max_bytes`` of body (default half of
    :data:`MAX_BODY_BYTES`) and ``max_count`` entries (default half of
    :data:`MAX_ARRAY_LEN`), so a batch of any size travels as ``submit`` +
    ``jobs`` messages while the limits stay what they are: limits on hostile
    input. Always returns at least one (possibly empty) chunk.
    """
    limit = MAX_BODY_BYTES // 2 if max_bytes is None else int(max_bytes)
    count = MAX_ARRAY_LEN // 2 if max_count is None else int(max_count)
    chunks: list[list[dict[str, Any]]] = [[]]
    size = 0
    for entry in jobs:
        # a generous bound of its msgpack size: map and string headers plus UTF-8 text
        cost = 48 + sum(len(str(v).encode("utf-8", _UNICODE_ERRORS)) for v in entry.values()
                        if v is not None)
        if chunks[-1] and (size + cost > limit or len(chunks[-1]) >= count):
            chunks.append([])
            size = 0
        chunks[-1].append(entry)
        size += cost
    return chunks


def configure_socket(sock: zmq.Socket, *, max_bytes: int | None = None,
                     max_queued: int | None = None) -> None:
    """Apply the wire limits to a ZeroMQ socket: ZeroMQ itself drops a peer
    that sends a frame over ``max_bytes`` (default :data:`MAX_MESSAGE_BYTES`;
    :data:`MAX_BODY_BYTES` where peers send no bulk frames), ``max_queued``
    bounds the messages buffered per peer (ZMQ_RCVHWM; None keeps ZeroMQ's
    1000), and close never blocks."""
    import zmq

    sock.setsockopt(zmq.MAXMSGSIZE, int(MAX_MESSAGE_BYTES if max_bytes is None else max_bytes))
    if max_queued is not None:
        sock.setsockopt(zmq.RCVHWM, int(max_queued))
    sock.setsockopt(zmq.LINGER, 0)


# --------------------------------------------------------------------------
# payloads


def pack_settings(s: Settings) -> dict[str, Any]:
    """Return ``s`` as a wire dict."""
    if not isinstance(s, Settings):
        raise _fail(f"pack_settings expected Settings but received {_received(s)}")
    return s.to_dict()


def unpack_settings(d: Any) -> Settings:
    """Rebuild :class:`Settings` from a wire dict; ProtocolError if invalid."""
    if type(d) is not dict:
        raise _fail(f"settings expected dict but received {_received(d)}")
    try:
        return Settings.from_dict(d)
    except PyimgoptError as exc:
        raise _fail(f"invalid settings: {exc.message}") from None
    except Exception as exc:
        raise _fail(f"invalid settings: {type(exc).__name__}: {exc}") from None


_ERROR_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "code": (_S, REQ),
    "message": (_S, REQ),
    "path": (_SN, OPT),
    "stage": (_SN, OPT),
    "retryable": ((bool, _NONE), OPT),
}


def pack_error(e: BaseException) -> dict[str, Any]:
    """Return ``e`` as a wire dict. Anything that is not a PyimgoptError is
    sent as an ``internal`` error naming its class, so nothing is lost."""
    if not isinstance(e, PyimgoptError):
        e = InternalError(f"{type(e).__name__}: {e}")
    return e.to_wire()


def unpack_error(d: Any) -> PyimgoptError:
    """Rebuild the error class of a wire dict; an unknown code becomes an
    InternalError that keeps the code. ProtocolError if the dict is malformed."""
    if type(d) is not dict:
        raise _fail(f"error expected dict but received {_received(d)}")
    d = dict(d)
    _check_fields("error", d, _ERROR_FIELDS)
    return from_wire(d)


_FLOAT = (float, int)
_RESULT_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "input": (_SN, REQ),
    "output": (_SN, REQ),
    "status": (_S, REQ),
    "format_in": (_SN, OPT),
    "format_out": (_SN, OPT),
    "bytes_in": ((int, _NONE), OPT),
    "bytes_out": ((int, _NONE), OPT),
    "width_in": ((int, _NONE), OPT),
    "height_in": ((int, _NONE), OPT),
    "width": ((int, _NONE), OPT),
    "height": ((int, _NONE), OPT),
    "frames": (_I, OPT),
    "quality": ((int, _NONE), OPT),
    "ssim": ((float, int, _NONE), OPT),
    "seconds": (_FLOAT, OPT),
    "stages": (_D, OPT),
    "notes": (_L, OPT),
    "error": ((dict, _NONE), OPT),
    "input_hash": (_SN, OPT),
    "output_hash": (_SN, OPT),
    "dry_run": (_B, OPT),
}
assert set(_RESULT_FIELDS) == {f.name for f in dataclasses.fields(Result)}


def pack_result(r: Result) -> dict[str, Any]:
    """Return ``r`` as a wire dict (its error as a wire error dict)."""
    if not isinstance(r, Result):
        raise _fail(f"pack_result expected Result but received {_received(r)}")
    return r.to_dict()


def unpack_result(d: Any) -> Result:
    """Rebuild a :class:`Result` from a wire dict; ProtocolError if malformed."""
    if type(d) is not dict:
        raise _fail(f"result expected dict but received {_received(d)}")
    # Only present fields are checked; absent ones keep the dataclass defaults.
    schema = {k: (t, req) for k, (t, req) in _RESULT_FIELDS.items() if req or k in d}
    kw = dict(d)
    _check_fields("result", kw, schema)
    if kw["status"] not in STATUSES:
        raise _fail(
            f"result: field 'status' expected one of {', '.join(STATUSES)} "
            f"but received {_repr.repr(kw['status'])}"
        )
    for name in ("ssim", "seconds"):
        if kw.get(name) is not None:
            kw[name] = float(kw[name])
    if "stages" in kw:
        stages = {}
        for key, value in kw["stages"].items():
            if type(key) is not str or type(value) not in _FLOAT:
                raise _fail(
                    f"result: stages expected str -> float but received "
                    f"{_received(key)} -> {_received(value)}"
                )
            stages[key] = float(value)
        kw["stages"] = stages
    if "notes" in kw:
        for i, note in enumerate(kw["notes"]):
            if type(note) is not str:
                raise _fail(f"result: notes[{i}] expected str but received {_received(note)}")
        kw["notes"] = tuple(kw["notes"])
    if kw.get("error") is not None:
        kw["error"] = unpack_error(kw["error"])
    try:
        return Result(**kw)
    except Exception as exc:  # Result validates nothing today; keep unpacking total anyway
        raise _fail(f"invalid result: {type(exc).__name__}: {exc}") from None


#: Job states in a ``batch_jobs`` page, and batch states. A page from a later router
#: naming a job state not listed here shows it as :data:`OTHER_JOB_STATE`.
JOB_STATES = frozenset({"queued", "running", "writing", "done", "failed", "cancelled"})
OTHER_JOB_STATE = "other"
BATCH_STATES = frozenset({"active", "paused", "cancelled", "done"})
_PAGE_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "batch": (_S, REQ), "total": (_I, REQ), "offset": (_I, REQ), "next": (_IN, REQ),
    "hidden": (_I, REQ), "state": (_S, REQ), "in_place": (_B, REQ), "priority": (_I, REQ),
    "settings": (_D, REQ), "options": (_D, REQ), "jobs": (_L, REQ),
}
_PAGE_JOB: dict[str, tuple[tuple[type, ...], bool]] = {
    "id": (_S, REQ), "input": (_S, REQ), "output": (_SN, REQ), "state": (_S, REQ),
    "status": (_SN, OPT), "code": (_SN, OPT),
}


def unpack_jobs_page(d: Any) -> dict[str, Any]:
    """Check the data of a ``batch_jobs`` reply; ProtocolError if malformed.

    A page is ``{batch, total, offset, next, hidden, state, in_place,
    priority, settings, options, jobs}``: ``jobs`` lists ``{id, input, output,
    state, status, code}`` (``status`` the result's for a done job, ``code``
    the error's for a failed or cancelled one) of the batch's jobs at
    positions ``offset`` to ``next`` (None: the last page), less ``hidden``
    ones whose input is outside the connection's read scope.

    Forward compatible: fields a later router adds to the page or to a job
    are dropped, and a job state not in :data:`JOB_STATES` reads as
    ``"other"`` (:data:`OTHER_JOB_STATE`); a known field of the wrong type,
    or an unknown batch state, is still refused.
    """
    if type(d) is not dict:
        raise _fail(f"jobs page expected dict but received {_received(d)}")
    page = {k: v for k, v in d.items() if k in _PAGE_FIELDS}
    _check_fields("jobs page", page, _PAGE_FIELDS)
    if page["state"] not in BATCH_STATES:
        raise _fail(f"jobs page: unknown batch state {_repr.repr(page['state'])}")
    nxt = page["next"]
    if page["offset"] < 0 or page["hidden"] < 0 or (nxt is not None and not page["offset"] < nxt <= page["total"]):
        raise _fail(f"jobs page: inconsistent offset {page['offset']}, next {nxt}, total {page['total']}")
    jobs = []
    for i, entry in enumerate(page["jobs"]):
        if type(entry) is not dict:
            raise _fail(f"jobs page: jobs[{i}] expected dict but received {_received(entry)}")
        entry = {k: v for k, v in entry.items() if k in _PAGE_JOB}
        _check_fields(f"jobs page: jobs[{i}]", entry, _PAGE_JOB)
        if entry["state"] not in JOB_STATES:
            entry["state"] = OTHER_JOB_STATE
        jobs.append(entry)
    page["jobs"] = jobs
    return page
