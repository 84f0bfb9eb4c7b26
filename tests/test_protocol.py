"""The wire: every message type round-trips, payloads round-trip exactly, every
malformed input is a ProtocolError (and nothing else), and ZeroMQ enforces the
frame limit that configure_socket sets."""

from __future__ import annotations

import struct
import tracemalloc

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyimgopt import protocol
from pyimgopt.errors import CODES, InternalError, ProtocolError, PyimgoptError
from pyimgopt.protocol import (
    EVENT_KINDS,
    MAX_ARRAY_LEN,
    MAX_BODY_BYTES,
    MAX_BULK_FRAMES,
    MAX_MESSAGE_BYTES,
    SCHEMAS,
    TYPES,
    VERSION,
    Message,
    configure_socket,
    decode,
    encode,
    pack_error,
    pack_result,
    pack_settings,
    unpack_error,
    unpack_result,
    unpack_settings,
)
from pyimgopt.result import STATUSES, Result
from pyimgopt.settings import AUTO_FORMATS, FILTERS, FITS, OUTPUT_FORMATS, SUBSAMPLINGS, Settings

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

WIRE_ERROR = pack_error(ProtocolError("bad frame", stage="protocol"))
RESULT = pack_result(Result("/in/a.jpg", "/out/a.jpg", "optimized", bytes_in=10, bytes_out=5,
                            input_hash="ab" * 16, output_hash="cd" * 16, dry_run=True))

#: One valid (fields, bulk) per message type.
VALID: dict[str, tuple[dict, list[bytes]]] = {
    "hello": (dict(client="cli", pid=42), []),
    "submit": (
        dict(
            req="r1",
            batch="b1",
            priority=-3,
            settings=pack_settings(Settings(format="webp", quality=70)),
            jobs=[
                {"id": "j1", "input": "/in/a.jpg", "output": "/out/a.webp"},
                {"id": "j2", "input": "/in/b.png", "output": None},
            ],
            in_place=False,
            more=True,
            force=True,
            dry_run=None,
        ),
        [],
    ),
    "jobs": (dict(req="r1b", batch="b1", jobs=[{"id": "", "input": "/in/c.jpg", "output": None}],
                  more=False), []),
    "cancel": (dict(req="r2", batch="b1"), []),
    "pause": (dict(req="r3", batch="b1"), []),
    "resume": (dict(req="r4", batch="b1"), []),
    "status": (dict(req="r5", batch=None), []),
    "attach": (dict(req="r6", batch="b1"), []),
    "batch_jobs": (dict(req="r7", batch="b1", offset=5000, limit=1000), []),
    "accepted": (dict(req="r1", batch="b1", total=2), []),
    "event": (dict(batch="b1", kind="result", job="j1", data={"result": RESULT}), []),
    "events": (dict(events=[["b1", "started", "j1", {"attempt": 1}], ["b2", "batch_done", None, {}]]), []),
    "reply": (dict(req="r5", ok=True, data={"batches": [{"id": "b1", "done": 1}]}), []),
    "error": (dict(req=None, error=WIRE_ERROR), []),
    "ping": (dict(), []),
    "ready": (dict(slots=1, pid=99, name="sidecar-1", inline=False), []),
    "heartbeat": (dict(rss=123_456_789, busy=["j1"]), []),
    "job": (
        dict(
            job="j1",
            attempt=1,
            lease_ms=30_000,
            input="a.jpg",
            output=None,
            in_place=False,
            settings=pack_settings(Settings()),
            inline=True,
            expect={"dev": 2049, "ino": 1234},
            mem=64 * 1024 * 1024,
            outputs={"webp": "/out/a.webp", "jpeg": "/out/a.jpg"},
            known={"entries": [{"hash": "0" * 32, "copy": False, "result": {"bytes_out": 5}}]},
            force=False,
            dry_run=True,
        ),
        [b"\xff\xd8\xff image bytes"],
    ),
    "progress": (dict(job="j1", attempt=1, stage="decode"), []),
    "need": (dict(job="j1", attempt=1, mem=512 * 1024 * 1024), []),
    "grant": (dict(job="j1", attempt=1, ok=False), []),
    "register": (dict(), []),
    "result": (dict(job="j1", attempt=1, result=RESULT), [b"\x00out\x00"]),
    "failed": (dict(job="j1", attempt=2, error=WIRE_ERROR), []),
    "abort": (dict(job="j1"), []),
    "shutdown": (dict(reason="recycle"), []),
}


def raw(body, *bulk: bytes) -> list[bytes]:
    """Frames with a hand-made body (bypassing encode's checks)."""
    return [msgpack.packb(body, use_bin_type=True), *bulk]


def body_of(msg_type: str, **changes) -> dict:
    fields, _ = VALID[msg_type]
    body = {"v": VERSION, "t": msg_type, **fields}
    for k, v in changes.items():
        if v is DROP:
            del body[k]
        else:
            body[k] = v
    return body


DROP = object()


def refused(frames) -> ProtocolError:
    """Decode ``frames`` and return the ProtocolError it must raise."""
    with pytest.raises(ProtocolError) as err:
        decode(frames)
    assert err.value.code == "protocol_error"
    assert err.value.stage == "protocol"
    return err.value


def decodes_or_refuses(frames) -> Message | None:
    try:
        msg = decode(frames)
    except ProtocolError as exc:
        assert exc.code == "protocol_error" and exc.stage == "protocol"
        return None
    assert isinstance(msg, Message) and msg.type in TYPES
    assert all(type(b) is bytes for b in msg.bulk)
    return msg


# ---------------------------------------------------------------- round trips


def test_protocol_valid_table_covers_every_type():
    assert set(VALID) == TYPES == set(SCHEMAS)
    assert "failed" in TYPES and "error" in TYPES
    assert EVENT_KINDS >= {"queued", "result", "batch_done", "degraded", "paused"}


@pytest.mark.parametrize("msg_type", sorted(TYPES))
def test_protocol_round_trip_every_type(msg_type):
    fields, bulk = VALID[msg_type]
    frames = encode(msg_type, bulk, **fields)
    assert all(type(f) is bytes for f in frames)
    assert len(frames) == 1 + len(bulk)
    msg = decode(frames)
    assert msg.type == msg_type
    assert msg.fields == fields
    assert msg.bulk == tuple(bulk)
    for first in list(fields)[:1]:  # types without fields ("ping", "register") have none to read
        assert msg[first] == fields[first]
        assert msg.get(first) == fields[first]
    assert msg.get("nope", 7) == 7
    body = msgpack.unpackb(frames[0])
    assert body["v"] == VERSION and body["t"] == msg_type


def test_protocol_decode_accepts_zmq_frames_and_memoryviews():
    fields, bulk = VALID["job"]
    frames = encode("job", bulk, **fields)
    as_frames = decode([zmq.Frame(f) for f in frames])
    as_views = decode([memoryview(f) for f in frames])
    assert as_frames == as_views == decode(frames)
    assert as_frames.bulk == tuple(bulk) and type(as_frames.bulk[0]) is bytes


def test_protocol_optional_fields_read_as_none_when_absent():
    msg = decode(raw({"v": 1, "t": "status", "req": "r"}))
    assert msg["batch"] is None
    msg = decode(raw(body_of("submit", jobs=[{"id": "j", "input": "/a"}])))
    assert msg["jobs"] == [{"id": "j", "input": "/a", "output": None}]
    frames = encode("event", batch="b", kind="degraded", data={})
    assert decode(frames)["job"] is None


def test_protocol_tuples_are_sent_as_lists():
    msg = decode(encode("heartbeat", rss=0, busy=("a", "b")))
    assert msg["busy"] == ["a", "b"]


def test_protocol_non_utf8_path_round_trips_as_surrogate_escape():
    path = b"/in/caf\xe9.jpg".decode("utf-8", "surrogateescape")  # as os.fsdecode gives it
    msg = decode(encode("submit", **{**VALID["submit"][0], "jobs": [{"id": "1", "input": path}]}))
    assert msg["jobs"][0]["input"] == path
    assert msg["jobs"][0]["input"].encode("utf-8", "surrogateescape") == b"/in/caf\xe9.jpg"


texts = st.text(max_size=40)
opt_texts = st.none() | texts


@st.composite
def settings_st(draw) -> Settings:
    fit = draw(st.sampled_from(FITS))
    max_width = draw(st.none() | st.integers(1, 1_000_000))
    max_height = draw(st.none() | st.integers(1, 1_000_000))
    if fit != "inside" and max_width is None and max_height is None:
        max_width = draw(st.integers(1, 1_000_000))
    return Settings(
        format=draw(st.sampled_from(OUTPUT_FORMATS)),
        quality=draw(st.none() | st.integers(1, 100)),
        target_ssim=draw(st.none() | st.floats(0.0, 1.0, exclude_min=True)),
        lossless=draw(st.none() | st.booleans()),
        max_width=max_width,
        max_height=max_height,
        fit=fit,
        enlarge=draw(st.booleans()),
        filter=draw(st.sampled_from(FILTERS)),
        chroma_subsampling=draw(st.sampled_from(SUBSAMPLINGS)),
        keep_metadata=draw(st.booleans()),
        first_frame=draw(st.booleans()),
        allow_larger=draw(st.booleans()),
        background=draw(st.from_regex(r"#[0-9a-fA-F]{6}", fullmatch=True)),
        max_pixels=draw(st.integers(1, 2**63)),
        max_frames=draw(st.integers(1, 2**32)),
        max_input_bytes=draw(st.integers(1, 2**63)),
        effort=draw(st.integers(0, 9)),
        formats_allowed=draw(st.lists(st.sampled_from(AUTO_FORMATS), min_size=1, unique=True)),
    )


@st.composite
def errors_st(draw) -> PyimgoptError:
    cls = draw(st.sampled_from(sorted(CODES.values(), key=lambda c: c.code)))
    return cls(
        draw(texts),
        path=draw(opt_texts),
        stage=draw(st.none() | st.sampled_from(["read", "decode", "encode", "write", "protocol"])),
        retryable=draw(st.none() | st.booleans()),
    )


finite = st.floats(allow_nan=False)
counts = st.none() | st.integers(0, 2**63)


@st.composite
def results_st(draw) -> Result:
    status = draw(st.sampled_from(STATUSES))
    return Result(
        input=draw(opt_texts),
        output=draw(opt_texts),
        status=status,
        format_in=draw(st.none() | st.sampled_from(["jpeg", "png", "gif", "tiff"])),
        format_out=draw(st.none() | st.sampled_from(["jpeg", "png", "webp", "avif"])),
        bytes_in=draw(counts),
        bytes_out=draw(counts),
        width_in=draw(counts),
        height_in=draw(counts),
        width=draw(counts),
        height=draw(counts),
        frames=draw(st.integers(0, 10_000)),
        quality=draw(st.none() | st.integers(1, 100)),
        ssim=draw(st.none() | finite),
        seconds=draw(finite),
        stages=draw(st.dictionaries(texts, finite, max_size=8)),
        notes=tuple(draw(st.lists(texts, max_size=5))),
        error=draw(errors_st()) if status == "failed" or draw(st.booleans()) else None,
    )


@FAST
@given(settings_st())
def test_protocol_settings_round_trip_exactly(s):
    job = {**VALID["job"][0], "settings": pack_settings(s), "inline": False}
    back = unpack_settings(decode(encode("job", **job))["settings"])
    assert back == s
    assert back.to_dict() == s.to_dict()
    assert {k: type(v) for k, v in back.to_dict().items()} == {
        k: type(v) for k, v in s.to_dict().items()
    }


@FAST
@given(results_st())
def test_protocol_result_round_trips_exactly(r):
    msg = decode(encode("result", job="j", attempt=0, result=pack_result(r)))
    back = unpack_result(msg["result"])
    assert back == r
    assert type(back.error) is type(r.error)
    assert type(back.notes) is tuple and type(back.stages) is dict
    # the same result nested in an event's data
    ev = decode(encode("event", batch="b", kind="result", job="j", data={"r": pack_result(r)}))
    assert unpack_result(ev["data"]["r"]) == r


@FAST
@given(errors_st())
def test_protocol_error_round_trips_exactly(e):
    back = unpack_error(decode(encode("failed", job="j", attempt=3, error=pack_error(e)))["error"])
    assert back == e and type(back) is type(e)
    assert (back.message, back.path, back.stage, back.retryable) == (
        e.message,
        e.path,
        e.stage,
        e.retryable,
    )
    back = unpack_error(decode(encode("error", req="r", error=pack_error(e)))["error"])
    assert back == e


@pytest.mark.parametrize("cls", sorted(CODES.values(), key=lambda c: c.code))
def test_protocol_every_error_class_round_trips(cls):
    e = cls("message é ✓", path="/p/ü.jpg", stage="decode", retryable=True)
    assert unpack_error(decode(encode("error", error=pack_error(e)))["error"]) == e


def test_protocol_unknown_error_code_keeps_the_code():
    back = unpack_error({"code": "martian", "message": "boom"})
    assert type(back) is InternalError and "martian" in back.message


def test_protocol_pack_error_wraps_foreign_exceptions():
    wire = pack_error(KeyError("x"))
    assert wire["code"] == "internal" and "KeyError" in wire["message"]


# ---------------------------------------------------------------- rejections

BOMB_ARRAY32 = b"\xdd" + struct.pack(">I", 10**9)  # claims 10**9 elements, holds none
BOMB_MAP32 = b"\xdf" + struct.pack(">I", 10**9)
BOMB_STR32 = b"\xdb" + struct.pack(">I", 4 * 10**9 - 1)


def _plus_field(fixmap: bytes, pair: bytes) -> bytes:
    """Append one raw key/value ``pair`` to a packed fixmap."""
    return bytes([fixmap[0] + 1]) + fixmap[1:] + pair


def _in_body(field_bytes: bytes) -> bytes:
    """A heartbeat body whose 'busy' value is ``field_bytes`` (raw msgpack)."""
    head = msgpack.packb({"v": 1, "t": "heartbeat", "rss": 0})
    return _plus_field(head, msgpack.packb("busy") + field_bytes)


REJECTIONS = {
    "wrong version": (raw(body_of("hello", v=2)), ["unknown protocol version 2"]),
    "version as bool": (raw(body_of("hello", v=True)), ["protocol version", "True"]),
    "version as str": (raw(body_of("hello", v="1")), ["protocol version"]),
    "no version": (raw(body_of("hello", v=DROP)), ["version"]),
    "unknown type": (raw(body_of("hello", t="launch")), ["unknown message type", "launch"]),
    "type not str": (raw(body_of("hello", t=5)), ["unknown message type"]),
    "no type": (raw(body_of("hello", t=DROP)), ["type"]),
    "missing field": (raw(body_of("hello", pid=DROP)), ["missing field", "pid", "hello"]),
    "extra field": (raw(body_of("hello", colour="red")), ["unexpected", "colour"]),
    "bool for int": (raw(body_of("hello", pid=True)), ["pid", "int", "bool"]),
    "float for int": (raw(body_of("accepted", total=2.0)), ["total", "int", "float"]),
    "str for int": (raw(body_of("submit", priority="1")), ["priority", "int", "str"]),
    "None for required": (raw(body_of("cancel", batch=None)), ["batch", "str", "NoneType"]),
    "int for bool": (raw(body_of("reply", ok=1)), ["ok", "bool", "int"]),
    "list for dict": (raw(body_of("reply", data=[])), ["data", "dict"]),
    "job entry not a dict": (raw(body_of("submit", jobs=["a"])), ["jobs[0]", "dict"]),
    "job entry missing id": (raw(body_of("submit", jobs=[{"input": "a"}])), ["jobs[0]", "'id'"]),
    "job entry extra key": (
        raw(body_of("submit", jobs=[{"id": "1", "input": "a", "x": 1}])),
        ["jobs[0]", "'x'"],
    ),
    "job entry bad output": (
        raw(body_of("submit", jobs=[{"id": "1", "input": "a", "output": 3}])),
        ["jobs[0]", "output"],
    ),
    "busy not str": (raw(body_of("heartbeat", busy=["a", 1])), ["busy[1]", "str"]),
    "unknown event kind": (raw(body_of("event", kind="exploded")), ["event kind", "exploded"]),
    "bytes in data": (raw(body_of("reply", data={"x": b""})), ["bytes"]),
    "non-str nested key": (
        raw(body_of("reply", data={"x": {1: 2}})),
        ["invalid msgpack", "int is not allowed for map key"],
    ),
    "empty bytes key": (raw(body_of("reply", data={b"": 1})), ["non-str map key", "bytes"]),
    "empty bytes value": (raw(body_of("reply", data={"x": [b""]})), ["holds bytes"]),
    "too deep": (
        raw(
            body_of(
                "reply",
                data={"x": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]},
            )
        ),
        ["deeper"],
    ),
    "body not a map": (raw([1, "hello"]), ["must be a map", "list"]),
    "body is nil": ([b"\xc0"], ["must be a map"]),
    "invalid msgpack": ([b"\xc1"], ["invalid msgpack"]),
    "truncated msgpack": ([msgpack.packb(body_of("hello"))[:-3]], ["invalid msgpack"]),
    "trailing bytes": ([msgpack.packb(body_of("hello")) + b"\x00"], ["invalid msgpack"]),
    "non-utf-8 key is an unknown field": (
        [_plus_field(msgpack.packb(body_of("abort")), b"\xa2\xff\xfe\x01")],
        ["unexpected field", "\\udcff"],
    ),
    "ext type": ([b"\xd4\x05\x00"], ["invalid msgpack"]),
    "bin in body": ([b"\x81\xa1x\xc4\x03abc"], ["invalid msgpack", "bin"]),
    "array32 bomb": ([BOMB_ARRAY32], ["invalid msgpack", "max_array_len"]),
    "map32 bomb": ([BOMB_MAP32], ["invalid msgpack", "max_map_len"]),
    "str32 bomb": ([BOMB_STR32], ["invalid msgpack"]),
    "array bomb in a field": ([_in_body(BOMB_ARRAY32)], ["max_array_len"]),
    "array one over the limit": (
        [_in_body(b"\xdd" + struct.pack(">I", MAX_ARRAY_LEN + 1) + b"\xa1j" * (MAX_ARRAY_LEN + 1))],
        ["max_array_len"],
    ),
    "oversize body": ([b"\xc0" * (MAX_BODY_BYTES + 1)], ["exceeds", "MAX_BODY_BYTES"]),
    "bulk on a type without bulk": (raw(body_of("hello"), b"x"), ["no bulk frames", "hello"]),
    "two bulk frames on job": (raw(body_of("job"), b"a", b"b"), ["at most 1"]),
    "too many bulk frames": (raw(body_of("job"), b"a", b"b", b"c"), ["too many bulk frames"]),
    "inline job without bulk": (raw(body_of("job")), ["inline", "bulk"]),
    "path job with bulk": (raw(body_of("job", inline=False), b"x"), ["not inline", "bulk"]),
    "no frames": ([], ["empty"]),
    "frames not a list": (b"\x80", ["list of frames"]),
    "frame not bytes": (["hello"], ["frame 0", "str"]),
}


@pytest.mark.parametrize("case", sorted(REJECTIONS))
def test_protocol_decode_rejects(case):
    frames, words = REJECTIONS[case]
    err = refused(frames)
    for w in words:
        assert w in err.message, (w, err.message)


def test_protocol_array_of_max_length_is_accepted():
    frames = [_in_body(b"\xdd" + struct.pack(">I", MAX_ARRAY_LEN) + b"\xa1j" * MAX_ARRAY_LEN)]
    assert len(decode(frames)["busy"]) == MAX_ARRAY_LEN


@pytest.mark.parametrize("bomb", [BOMB_ARRAY32, BOMB_MAP32, BOMB_STR32, _in_body(BOMB_ARRAY32)])
def test_protocol_container_bomb_allocates_nothing(bomb):
    tracemalloc.start()
    try:
        refused([bomb])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024, peak  # 10**9 list slots would be 8 GB


def test_protocol_limits_are_the_documented_ones():
    assert (VERSION, MAX_BODY_BYTES, MAX_MESSAGE_BYTES, MAX_BULK_FRAMES) == (
        1,
        4 * 1024 * 1024,
        300 * 1024 * 1024,
        2,
    )


def _refused_encode(msg_type, bulk=(), **fields) -> ProtocolError:
    with pytest.raises(ProtocolError) as err:
        encode(msg_type, bulk, **fields)
    assert err.value.code == "protocol_error"
    return err.value


def test_protocol_encode_refuses_what_decode_would():
    assert "unknown message type" in _refused_encode("launch").message
    assert "pid" in _refused_encode("hello", client="c", pid=True).message
    assert "missing field 'pid'" in _refused_encode("hello", client="c").message
    assert "colour" in _refused_encode("hello", client="c", pid=1, colour="red").message
    assert "no bulk frames" in _refused_encode("hello", [b"x"], client="c", pid=1).message
    assert "'v' and 't'" in _refused_encode("hello", client="c", pid=1, v=2).message
    job = VALID["job"][0]
    assert "inline" in _refused_encode("job", **job).message  # inline without its frame
    assert "max_bin_len" in _refused_encode("reply", req="r", ok=True, data={"x": b"raw"}).message
    assert "bulk" in _refused_encode("result", b"abc", job="j", attempt=0, result={}).message


def test_protocol_encode_refuses_non_plain_and_oversize_values():
    err = _refused_encode("job", **{**VALID["job"][0], "settings": Settings(), "inline": False})
    assert "plain data" in err.message
    err = _refused_encode("reply", req="r", ok=True, data={"n": 2**70})
    assert "plain data" in err.message
    err = _refused_encode("reply", req="r", ok=True, data={"s": "\ud800"})
    assert "plain data" in err.message
    big = ["x" * 1000] * 5000  # 5 MB body
    assert "MAX_BODY_BYTES" in _refused_encode("reply", req="r", ok=True, data={"l": big}).message
    many = {str(i): i for i in range(5000)}
    assert "max_map_len" in _refused_encode("reply", req="r", ok=True, data=many).message


def test_protocol_unpack_settings_wraps_the_settings_message():
    with pytest.raises(ProtocolError) as err:
        unpack_settings({**Settings().to_dict(), "quality": 0})
    assert err.value.code == "protocol_error"
    assert "quality" in err.value.message and "between 1 and 100" in err.value.message
    for bad in ({"colour": 1}, {1: 2, "a": 3}, [], None, {"format": ["x"]}):
        with pytest.raises(ProtocolError):
            unpack_settings(bad)


@pytest.mark.parametrize(
    "bad, word",
    [
        ([], "dict"),
        ({"input": "a", "output": None}, "status"),
        ({"input": "a", "output": None, "status": "great"}, "status"),
        ({"input": "a", "output": None, "status": "skipped", "x": 1}, "'x'"),
        ({"input": 1, "output": None, "status": "skipped"}, "input"),
        ({"input": "a", "output": None, "status": "skipped", "frames": True}, "frames"),
        ({"input": "a", "output": None, "status": "skipped", "stages": {"a": "1"}}, "stages"),
        ({"input": "a", "output": None, "status": "skipped", "notes": [1]}, "notes[0]"),
        ({"input": "a", "output": None, "status": "failed", "error": {"code": 1}}, "code"),
    ],
)
def test_protocol_unpack_result_rejects(bad, word):
    with pytest.raises(ProtocolError) as err:
        unpack_result(bad)
    assert word in err.value.message


@pytest.mark.parametrize(
    "bad",
    [
        None,
        [],
        {"message": "m"},
        {"code": "x"},
        {"code": "x", "message": "m", "extra": 1},
        {"code": "x", "message": "m", "retryable": "yes"},
        {"code": "x", "message": "m", "path": 3},
    ],
)
def test_protocol_unpack_error_rejects(bad):
    with pytest.raises(ProtocolError):
        unpack_error(bad)


def test_protocol_pack_rejects_wrong_objects():
    with pytest.raises(ProtocolError):
        pack_settings({"format": "png"})
    with pytest.raises(ProtocolError):
        pack_result({"status": "failed"})


# ---------------------------------------------------------------- fuzz

plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=5))
def test_protocol_fuzz_arbitrary_frames(frames):
    decodes_or_refuses(frames)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(sorted(TYPES)),
    st.dictionaries(
        st.sampled_from(sorted({f for s in SCHEMAS.values() for f in s} | {"x"})), plain, max_size=9
    ),
    st.lists(st.binary(max_size=8), max_size=3),
)
def test_protocol_fuzz_well_formed_msgpack_bodies(msg_type, fields, bulk):
    frames = raw({"v": 1, "t": msg_type, **fields}, *bulk)
    msg = decodes_or_refuses(frames)
    if msg is not None:  # whatever decode accepts, encode can send again
        assert decode(encode(msg.type, msg.bulk, **msg.fields)) == msg


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(TYPES)), st.data())
def test_protocol_fuzz_mutated_valid_messages(msg_type, data):
    fields, bulk = VALID[msg_type]
    body = bytearray(encode(msg_type, bulk, **fields)[0])
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(body) - 1))
        body[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(body)))
    decodes_or_refuses([bytes(body[:cut]), *bulk])


@settings(max_examples=50, deadline=None)
@given(st.one_of(st.none(), st.integers(), st.text(), st.binary(), st.lists(st.integers())))
def test_protocol_fuzz_non_frame_inputs(value):
    decodes_or_refuses(value)


# ---------------------------------------------------------------- sockets


@pytest.fixture
def zctx():
    ctx = zmq.Context()
    try:
        yield ctx
    finally:
        ctx.destroy(linger=0)


def test_protocol_configure_socket_sets_limits(zctx):
    sock = zctx.socket(zmq.ROUTER)
    try:
        configure_socket(sock)
        assert sock.getsockopt(zmq.MAXMSGSIZE) == MAX_MESSAGE_BYTES
        assert sock.getsockopt(zmq.LINGER) == 0
    finally:
        sock.close()


def test_protocol_oversize_frame_is_dropped_by_zeromq(zctx, tmp_path, monkeypatch):
    # A small limit keeps the test cheap; configure_socket reads the module constant.
    monkeypatch.setattr(protocol, "MAX_MESSAGE_BYTES", 64 * 1024)
    router = zctx.socket(zmq.ROUTER)
    bad = zctx.socket(zmq.DEALER)
    good = zctx.socket(zmq.DEALER)
    try:
        configure_socket(router)
        for s in (bad, good):
            s.setsockopt(zmq.LINGER, 0)
        endpoint = f"ipc://{tmp_path}/r.sock"
        router.bind(endpoint)
        bad.connect(endpoint)
        bad.send(b"x" * (100 * 1024))
        assert router.poll(300, zmq.POLLIN) == 0  # dropped, peer disconnected

        good.connect(endpoint)
        good.send_multipart(encode("hello", client="good", pid=1))
        assert router.poll(3000, zmq.POLLIN) == zmq.POLLIN
        frames = router.recv_multipart(copy=False)
        msg = decode(frames[1:])  # strip the routing identity
        assert msg.type == "hello" and msg["client"] == "good"
    finally:
        for s in (router, bad, good):
            s.close()


# ---------------------------------------------------------------- batch_jobs pages

PAGE = {"batch": "b1", "total": 3, "offset": 1, "next": 2, "hidden": 0, "state": "active",
        "in_place": False, "priority": 0, "settings": pack_settings(Settings()), "options": {},
        "jobs": [{"id": "b1:2", "input": "/in/b.jpg", "output": "/out/b.jpg", "state": "done",
                  "status": "optimized", "code": None}]}


def test_protocol_jobs_page_round_trips_through_a_reply():
    from pyimgopt.protocol import unpack_jobs_page

    msg = decode(encode("reply", req="r7", ok=True, data=PAGE))
    assert unpack_jobs_page(msg["data"]) == PAGE
    last = {**PAGE, "next": None, "jobs": [{"id": "b1:3", "input": "/in/c.jpg", "output": None,
                                            "state": "queued"}]}
    assert unpack_jobs_page(last)["jobs"][0] == {**last["jobs"][0], "status": None, "code": None}


@pytest.mark.parametrize("change", [
    {"jobs": None}, {"total": "3"}, {"state": "exploded"}, {"next": 1}, {"next": 4}, {"offset": -1},
    {"hidden": -2}, {"jobs": ["/in/b.jpg"]}, {"jobs": [{"id": "j", "input": "/in/b.jpg", "output": None}]},
    {"jobs": [{"id": "j", "input": None, "output": None, "state": "queued"}]},
    {"jobs": [{"id": "j", "input": "/in/b.jpg", "output": None, "state": 3}]},
])
def test_protocol_jobs_page_refuses_a_malformed_page(change):
    from pyimgopt.protocol import unpack_jobs_page

    with pytest.raises(ProtocolError):
        unpack_jobs_page({**PAGE, **change})


def test_protocol_jobs_page_from_a_later_router_is_read_not_refused():
    """Fields a later router adds are dropped and a job state this client does not know
    reads as "other": one new job state must not hide a whole batch from an older client."""
    from pyimgopt.protocol import OTHER_JOB_STATE, unpack_jobs_page

    later = {**PAGE, "updated": 1.5, "jobs": [{**PAGE["jobs"][0], "attempts": 2},
                                             {"id": "b1:3", "input": "/in/c.jpg", "output": None,
                                              "state": "leased", "code": None}]}
    page = unpack_jobs_page(later)
    assert "updated" not in page and page["jobs"][0] == PAGE["jobs"][0]
    assert page["jobs"][1] == {"id": "b1:3", "input": "/in/c.jpg", "output": None,
                               "state": OTHER_JOB_STATE, "status": None, "code": None}
    assert OTHER_JOB_STATE == "other"


def test_protocol_an_unknown_type_keeps_its_request_id_on_the_error():
    err = refused(raw({"v": VERSION, "t": "frobnicate", "req": "r9"}))
    assert err.req == "r9" and "frobnicate" in err.message
    assert refused(raw({"v": VERSION, "t": "frobnicate", "req": 9})).req is None
