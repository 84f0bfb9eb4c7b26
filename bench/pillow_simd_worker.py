"""Resize with Pillow-SIMD for ``bench_resize.py``, in its own interpreter.

Pillow-SIMD installs itself as ``PIL``, so it cannot share a process (or a
venv) with the Pillow that pyimgopt uses. ``bench/conftest.py`` starts this
script with the Pillow-SIMD venv's Python (see bench/README.md for how that
venv is built) and keeps it for the session::

    python bench/pillow_simd_worker.py DIR

DIR holds ``RGB.npy`` and ``RGBA.npy``, the benchmark's source image. The
script answers one JSON line on stdout when ready (``{"ok": true,
"version": ...}``, or ``{"ok": false, "reason": ...}`` if this interpreter
has no Pillow-SIMD), then one line per request read from stdin::

    {"mode": "RGB", "size": [720, 588], "filter": "lanczos3"}
    -> {"seconds": 0.0081, "size": [720, 588], "mode": "RGB"}

``seconds`` times ``Image.resize`` alone, on an ``Image`` built at start-up,
exactly as the Pillow contender is timed in the main process. It exits at
end of input. Standard library, NumPy and PIL only: never pyimgopt.
"""

from __future__ import annotations

import json
import pathlib
import sys
import time
from importlib import metadata


def _reply(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    try:
        version = metadata.version("pillow-simd")
    except metadata.PackageNotFoundError:
        _reply({"ok": False, "reason": f"{sys.executable} has no pillow-simd distribution"})
        return 1
    import numpy as np
    from PIL import Image

    filters = {"lanczos3": Image.Resampling.LANCZOS, "bicubic": Image.Resampling.BICUBIC}
    folder = pathlib.Path(argv[1])
    images = {mode: Image.fromarray(np.load(folder / f"{mode}.npy")) for mode in ("RGB", "RGBA")}
    _reply({"ok": True, "version": version, "python": sys.version.split()[0]})
    for line in sys.stdin:
        req = json.loads(line)
        im = images[req["mode"]]
        size, resample = tuple(req["size"]), filters[req["filter"]]
        start = time.perf_counter()
        out = im.resize(size, resample)
        seconds = time.perf_counter() - start
        _reply({"seconds": seconds, "size": list(out.size), "mode": out.mode})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
