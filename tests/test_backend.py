"""The backend in use is the one the run asked for (the Makefile sets
PYIMGOPT_EXPECT_BACKEND), so a failed native build can never pass unnoticed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import pyimgopt
from pyimgopt import _kernels


def test_backend_is_the_expected_one():
    expected = os.environ.get("PYIMGOPT_EXPECT_BACKEND")
    if not expected:
        pytest.skip("PYIMGOPT_EXPECT_BACKEND not set (the Makefile sets it)")
    assert pyimgopt.backend == expected


def test_backend_env_value_validated():
    with pytest.raises(ValueError, match="PYIMGOPT_PURE"):
        _kernels.select_backend("yes")
    assert _kernels.select_backend("1")[0] == "pure"


def test_backend_pure_env_selects_fallback_in_a_fresh_process():
    code = "import pyimgopt; print(pyimgopt.backend)"
    env = {**os.environ, "PYIMGOPT_PURE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "pure"
    env["PYIMGOPT_PURE"] = "2"
    bad = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "PYIMGOPT_PURE" in bad.stderr
