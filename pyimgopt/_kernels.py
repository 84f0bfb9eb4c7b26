"""Pick the pixel-kernel backend: the compiled ``pyimgopt._native`` or the
pure NumPy/Pillow ``pyimgopt._fallback``.

The environment variable ``PYIMGOPT_PURE`` decides, once, at import (the
build in setup.py honours the same variable):

- unset, ``""`` or ``"0"``: native if the extension imports, else pure
  (only an ``ImportError`` falls back; any other failure is a real bug and
  propagates);
- ``"1"``: pure, even where the extension is built;
- anything else: ``ValueError`` listing the valid values.

``backend`` says which one is live ("native" or "pure"); the functions in
``PUBLIC_API`` are re-exported from it. Every backend must export all of
``PUBLIC_API``; that is checked here, at import.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

PUBLIC_API = [
    "chroma_error",
    "premultiply",
    "unpremultiply",
    "resize",
    "ssim",
    "ssim_luma",
    "reduce_box",
    "FILTERS",
]

ENV_VAR = "PYIMGOPT_PURE"
VALID_VALUES = ("", "0", "1")

_MODULES = {"native": "pyimgopt._native", "pure": "pyimgopt._fallback"}


def native_available() -> bool:
    """Return True if the compiled extension ``pyimgopt._native`` can be imported."""
    try:
        importlib.import_module(_MODULES["native"])
    except ImportError:
        return False
    return True


def load_backend(name: str) -> ModuleType:
    """Import backend *name* ("native" or "pure") and check it exports ``PUBLIC_API``.

    Raises ``ImportError`` if the module cannot be imported or lacks a name.
    """
    if name not in _MODULES:
        raise ValueError(f"Expected one of {sorted(_MODULES)} for backend but received {name!r}")
    module = importlib.import_module(_MODULES[name])
    missing = [attr for attr in PUBLIC_API if not hasattr(module, attr)]
    if missing:
        raise ImportError(f"{module.__name__} does not export {', '.join(missing)}")
    return module


def select_backend(value: str | None = None) -> tuple[str, ModuleType]:
    """Resolve a ``PYIMGOPT_PURE`` value (default: the environment's) to a backend.

    Returns ``(name, module)`` with name "native" or "pure".
    """
    if value is None:
        value = os.environ.get(ENV_VAR, "")
    if value not in VALID_VALUES:
        valid = ", ".join(repr(v) for v in VALID_VALUES)
        raise ValueError(f"Expected one of {valid} for {ENV_VAR} but received {value!r}")
    if value == "1":
        return "pure", load_backend("pure")
    try:
        return "native", load_backend("native")
    except ImportError:
        return "pure", load_backend("pure")


backend, _impl = select_backend()

premultiply = _impl.premultiply
unpremultiply = _impl.unpremultiply
resize = _impl.resize
ssim = _impl.ssim
ssim_luma = _impl.ssim_luma
reduce_box = _impl.reduce_box
chroma_error = _impl.chroma_error
FILTERS: tuple[str, ...] = _impl.FILTERS

__all__ = [
    "FILTERS",
    "PUBLIC_API",
    "chroma_error",
    "backend",
    "load_backend",
    "native_available",
    "premultiply",
    "reduce_box",
    "resize",
    "select_backend",
    "ssim",
    "ssim_luma",
    "unpremultiply",
]
