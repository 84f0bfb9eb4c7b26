"""pyimgopt: make large batches of images smaller, fast, without losing a file.

The public Python API: :func:`optimize_file`, :func:`optimize_bytes`,
:class:`Settings`, :class:`Result`, the error tree in :mod:`pyimgopt.errors`,
the resize kernel :func:`resize`, and :data:`backend` (``"native"`` when the
Cython core is live, ``"pure"`` when the Pillow/NumPy fallback is — chosen by
``PYIMGOPT_PURE``).
"""

from __future__ import annotations

from . import errors
from ._version import __version__
from ._kernels import backend, resize
from .errors import PyimgoptError
from .pipeline import optimize_bytes, optimize_file
from .result import Result
from .settings import Settings

__all__ = [
    "__version__",
    "backend",
    "errors",
    "optimize_bytes",
    "optimize_file",
    "PyimgoptError",
    "resize",
    "Result",
    "Settings",
]
