"""Instruction counts of one ``bench_resize.py`` case, for valgrind's callgrind.

Wall time on the shared 2-core machine moves by tens of percent from run to
run; instruction counts do not. Run one case under callgrind, collecting
only inside the C kernel (``pio_resize_u8*``), then read the total::

    valgrind --tool=callgrind --toggle-collect='pio_resize_u8*' \\
        --callgrind-out-file=/tmp/cg.out \\
        .venv/bin/python bench/resize_callgrind.py lanczos3 RGB 720x588
    callgrind_annotate /tmp/cg.out | head -30

Arguments: filter (lanczos3 or bicubic), mode (RGB or RGBA), target size
(WxH), and optionally ``--path`` = auto (default), float (the float32 path
for every image) or portable (no SIMD: what a CPU without AVX2 runs). The source image is the benchmark's:
the corpus photo fitted to 2725x2225 when the corpus is there, else the
synthetic one. Under valgrind the kernel sees valgrind's CPU, which has
AVX2 but not AVX-512, so the counts are those of the AVX2 loops.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from _common import (
    CORPUS,
    SOURCE_PHOTO,
    SOURCE_SIZE,
    corpus_available,
    soft_alpha,
    synthetic_rgb,
)
from PIL import Image, ImageOps

from pyimgopt import _kernels


def source(mode: str) -> np.ndarray:
    """The benchmark's source image (as bench/conftest.py builds it)."""
    if corpus_available() and (CORPUS / SOURCE_PHOTO).is_file():
        with Image.open(CORPUS / SOURCE_PHOTO) as im:
            im = ImageOps.fit(im.convert("RGB"), SOURCE_SIZE, Image.Resampling.LANCZOS)
        rgb = np.asarray(im, dtype=np.uint8).copy()
    else:
        rgb = synthetic_rgb(*SOURCE_SIZE)
    if mode == "RGB":
        return rgb
    return np.ascontiguousarray(np.dstack([rgb, soft_alpha(*SOURCE_SIZE)]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("filter", choices=["lanczos3", "bicubic"])
    parser.add_argument("mode", choices=["RGB", "RGBA"])
    parser.add_argument("target", help="WxH, e.g. 720x588")
    parser.add_argument("--path", choices=["auto", "float", "portable"], default="auto")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.target.split("x"))
    if not _kernels.native_available():
        print("pyimgopt._native is not built", file=sys.stderr)
        return 2
    native = _kernels.load_backend("native")
    arr = source(args.mode)
    if hasattr(native, "_resize_ex"):
        kwargs = {"fixed": False if args.path == "float" else None, "simd": args.path != "portable"}
        out = native._resize_ex(arr, width, height, args.filter, **kwargs)
        level = native._simd_level()
    elif args.path == "auto":  # a build from before the paths could be chosen
        out, level = native.resize(arr, width, height, args.filter), "?"
    else:
        print("this build has no _resize_ex: only --path auto", file=sys.stderr)
        return 2
    print(f"{args.filter} {args.mode} -> {args.target} ({args.path}): {out.shape}, SIMD {level}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
