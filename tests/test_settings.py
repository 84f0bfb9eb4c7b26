"""Settings: validation at the edge with messages that name the field, and round trips."""

from __future__ import annotations

import dataclasses

import pytest

from pyimgopt import Result, Settings
from pyimgopt.errors import DecodeError, InvalidSettingsError


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


def test_result_round_trip_with_error():
    r = Result(input="a.jpg", output=None, status="failed",
               error=DecodeError("truncated", path="a.jpg", stage="decode"), stages={"read": 0.1})
    back = Result.from_dict(r.to_dict())
    assert back == r and back.error.code == "decode_failed"
    j = r.to_json()
    assert j["type"] == "result" and j["error"] == {
        "code": "decode_failed", "message": "truncated", "stage": "decode", "retryable": False}
