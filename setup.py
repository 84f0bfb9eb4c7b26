"""Build script: compiles the Cython core ``pyimgopt._native`` from
``pyimgopt/_native.pyx`` and the C kernels in ``csrc/``.

``PYIMGOPT_PURE=1`` in the environment skips the extension entirely (the same
variable selects the pure fallback at import time), so the package still
installs where no C compiler is available.
"""

import glob
import os

from setuptools import setup

_VALID = {"", "0", "1"}


def _extensions():
    pure = os.environ.get("PYIMGOPT_PURE", "")
    if pure not in _VALID:
        raise SystemExit(f"PYIMGOPT_PURE must be one of {sorted(_VALID)!r}, got {pure!r}")
    if pure == "1":
        return []
    import numpy
    from Cython.Build import cythonize
    from setuptools import Extension

    # -O3 lets GCC auto-vectorise the kernels; the SIMD variants come from
    # target_clones inside csrc/, never from -march=native, so one build runs
    # on any x86-64.
    ext = Extension(
        "pyimgopt._native",
        sources=["pyimgopt/_native.pyx", *sorted(glob.glob("csrc/*.c"))],
        include_dirs=["csrc", numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O3", "-fno-math-errno", "-std=c11"],
    )
    return cythonize([ext], compiler_directives={"language_level": "3"})


setup(ext_modules=_extensions())
