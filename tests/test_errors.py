"""The error tree: stable codes, builtin mix-ins, and exact round trips as data."""

from __future__ import annotations

import pickle

import pytest

from pyimgopt import errors
from pyimgopt.errors import CODES, PyimgoptError, from_wire


@pytest.mark.parametrize("code, cls", sorted(CODES.items()))
def test_errors_round_trip_as_wire_data(code, cls):
    e = cls("something broke", path="/x/ä b.jpg", stage="decode")
    back = from_wire(e.to_wire())
    assert type(back) is cls and back == e and back.code == code
    assert back.retryable == cls.default_retryable
    assert pickle.loads(pickle.dumps(e)) == e


def test_errors_codes_are_the_design_set():
    for code in ("decode_failed", "unsupported_format", "too_large", "scope_denied",
                 "capability_denied", "worker_lost", "timeout", "cancelled", "io_error", "internal"):
        assert code in CODES


def test_errors_leaves_inherit_fitting_builtins():
    assert issubclass(errors.DecodeError, ValueError)
    assert issubclass(errors.ScopeDeniedError, PermissionError)
    assert issubclass(errors.JobTimeoutError, TimeoutError)
    assert issubclass(errors.IOFailureError, OSError)
    assert issubclass(errors.InvalidSettingsError, ValueError)
    assert all(issubclass(c, PyimgoptError) for c in CODES.values())


def test_errors_retryable_override_survives_wire():
    e = errors.IOFailureError("disk busy", retryable=True)
    assert from_wire(e.to_wire()).retryable is True


def test_errors_unknown_code_becomes_internal_keeping_code():
    e = from_wire({"code": "martian", "message": "odd", "path": None, "stage": None, "retryable": False})
    assert isinstance(e, errors.InternalError) and "martian" in e.message
