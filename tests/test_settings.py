"""Settings: validation at the edge with messages that name the field, and round trips."""

from __future__ import annotations

import dataclasses

import pytest

import msgpack

from pyimgopt import Result, Settings
from pyimgopt.errors import DecodeError, InvalidSettingsError
from pyimgopt.protocol import pack_settings, unpack_settings
from pyimgopt.settings import parse_size


@pytest.mark.parametrize(
    "kw, words",
    [
        (dict(quality=0), ["quality", "between 1 and 100", "0"]),
        (dict(quality=101), ["quality", "101"]),
        (dict(quality="80"), ["quality", "integer", "'80'"]),
        (dict(max_width=-3), ["max_width", "-3"]),
        (dict(max_height=0), ["max_height", "0"]),
        (dict(format="gif"), ["format", "keep", "'gif'"]),
        (dict(fit="stretch", max_width=5), ["fit", "inside", "'stretch'"]),
        (dict(fit="cover"), ["fit", "max_width"]),
        (dict(filter="sinc"), ["filter", "lanczos3"]),
        (dict(enlarge=1), ["enlarge", "bool"]),
        (dict(background="white"), ["background", "#rrggbb"]),
        (dict(max_pixels=0), ["max_pixels"]),
        (dict(effort=10), ["effort", "10"]),
        (dict(chroma_subsampling="4:1:1"), ["chroma_subsampling"]),
        (dict(target_size="200 XB"), ["target_size", "1 KB = 1000 B", "1 KiB = 1024 B", "'200 XB'"]),
        (dict(target_size=0), ["target_size", "at least 1 byte"]),
        (dict(target_size=True), ["target_size", "True"]),
        (dict(target_size="200KB", min_scale=0), ["min_scale", "(0, 1]"]),
        (dict(target_size="200KB", min_scale=1.5), ["min_scale", "1.5"]),
        (dict(min_scale=0.5), ["min_scale", "target_size"]),
        (dict(mark="yes"), ["mark", "bool"]),
    ],
)
def test_settings_bad_value_names_field_expected_and_received(kw, words):
    with pytest.raises(InvalidSettingsError) as err:
        Settings(**kw)
    assert isinstance(err.value, ValueError)
    for w in words:
        assert w in err.value.message, (w, err.value.message)


def test_settings_frozen_and_aliases():
    s = Settings(format="JPG")
    assert s.format == "jpeg"
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.quality = 5  # type: ignore[misc]


def test_settings_round_trip_and_unknown_keys():
    s = Settings(format="webp", quality=70, max_width=800, fit="cover", max_height=600, keep_metadata=True)
    assert Settings.from_dict(s.to_dict()) == s
    with pytest.raises(InvalidSettingsError, match="colour"):
        Settings.from_dict({"colour": 1})


@pytest.mark.parametrize("text, n", [
    ("200KB", 200_000), ("200kb", 200_000), ("200 kB", 200_000), ("200K", 200_000),
    ("1.5MB", 1_500_000), ("1.5M", 1_500_000), ("200KiB", 204_800), ("200kib", 204_800),
    ("1.5MiB", 1_572_864), ("2GB", 2_000_000_000), ("1GiB", 1 << 30), ("250000", 250_000),
    ("250000B", 250_000), (" 12 ", 12), (4096, 4096),
])
def test_settings_target_size_units_kb_is_1000_kib_is_1024(text, n):
    s = Settings(target_size=text)
    assert s.target_size == n and isinstance(s.target_size, int)
    assert parse_size(text) == n


def test_settings_new_fields_round_trip_through_msgpack():
    s = Settings(format="auto", target_size="1.5MB", min_scale=0.25, mark=True, target_ssim=0.98)
    back = unpack_settings(msgpack.unpackb(msgpack.packb(pack_settings(s))))
    assert back == s and back.target_size == 1_500_000 and back.min_scale == 0.25 and back.mark


def test_result_round_trip_with_error():
    r = Result(input="a.jpg", output=None, status="failed",
               error=DecodeError("truncated", path="a.jpg", stage="decode"), stages={"read": 0.1})
    back = Result.from_dict(r.to_dict())
    assert back == r and back.error.code == "decode_failed"
    j = r.to_json()
    assert j["type"] == "result" and j["error"] == {
        "code": "decode_failed", "message": "truncated", "stage": "decode", "retryable": False}
