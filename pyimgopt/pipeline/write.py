"""Atomic writes and bounded reads, as the pipeline has always named them.

Owns nothing of its own: the code moved to :mod:`pyimgopt.files`, a layer
below both the router and the pipeline (the router must not import the
pixel pipeline). Kept so ``pyimgopt.pipeline.write`` imports keep working.
"""

from __future__ import annotations

from ..files import (
    TEMP_SUFFIX,
    atomic_write,
    expected_parent,
    parent_anchor,
    read_input,
    remove_stale_temps,
)

__all__ = ["parent_anchor", "expected_parent", "read_input", "atomic_write", "remove_stale_temps", "TEMP_SUFFIX"]
