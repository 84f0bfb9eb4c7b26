"""pyimgopt: make large batches of images smaller, fast, without losing a file.

The public Python API: :func:`optimize_file`, :func:`optimize_bytes`,
:class:`Settings`, :class:`Result`, the error tree in :mod:`pyimgopt.errors`,
the resize kernel :func:`resize`, and :data:`backend` (``"native"`` when the
Cython core is live, ``"pure"`` when the Pillow/NumPy fallback is — chosen by
``PYIMGOPT_PURE``).

:func:`optimize_file` and :func:`optimize_bytes` are loaded on first use, so
importing ``pyimgopt.router`` does not load the pixel pipeline (the
one-way flow: the router never imports it; ``pyimgopt.client`` still does);
``backend`` and ``resize`` too, so that the command line can start its
pool's zygote before NumPy loads.
"""

from __future__ import annotations

from . import errors
from ._version import __version__
from .errors import PyimgoptError
from .result import Result
from .settings import Settings


def __getattr__(name: str):
    """``optimize_file``/``optimize_bytes`` (from :mod:`.pipeline`) and ``backend``/``resize``
    (from :mod:`._kernels`, which loads NumPy): imported when first asked for."""
    if name in ("optimize_file", "optimize_bytes", "backend", "resize"):
        if name in ("backend", "resize"):
            from . import _kernels as module
        else:
            from . import pipeline as module

        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
