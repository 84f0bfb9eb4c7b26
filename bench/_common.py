"""Plain helpers shared by the bench modules and their conftest: the corpus
path, the source-image constants and :func:`run`, the one way every
benchmark here is timed. (Kept out of conftest.py, which pytest discourages
importing from.)"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
CORPUS = pathlib.Path(os.environ.get("PYIMGOPT_CORPUS", REPO.parent / "shared" / "corpus"))

#: sharp's benchmark input size.
SOURCE_SIZE = (2725, 2225)
SOURCE_MPIX = SOURCE_SIZE[0] * SOURCE_SIZE[1] / 1e6
#: The corpus photo the source image is made from: 3264x2448 (aspect 1.33,
#: the closest large photo to 2725x2225's 1.22), baseline, full of detail.
SOURCE_PHOTO = "photo_picos_large_8mp_baseline.jpg"
SOURCE_JPEG_QUALITY = 90


@dataclass(frozen=True, eq=False)
class Source:
    """The benchmark's source image in every form a contender takes."""

    rgb: np.ndarray  # (2225, 2725, 3) uint8, C-contiguous
    rgba: np.ndarray  # (2225, 2725, 4) uint8, C-contiguous
    jpeg: bytes  # rgb as a JPEG, q90 (Pillow defaults otherwise: 4:2:0, baseline)
    origin: str  # where the pixels came from, for extra_info

    def array(self, mode: str) -> np.ndarray:
        return {"RGB": self.rgb, "RGBA": self.rgba}[mode]


def corpus_available() -> bool:
    return (CORPUS / "MANIFEST.json").is_file()


def synthetic_rgb(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A photo-like RGB array: smooth gradients, edges and soft noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = 128 + 100 * np.sin(x / 23.0) * np.cos(y / 31.0)
    g = 128 + 90 * np.cos((x + y) / 41.0)
    b = 255 * x / max(1, width - 1)
    arr = np.stack([r, g, b], axis=-1)
    arr[(x // 180 + y // 180) % 2 == 0] *= 0.8  # hard edges, as objects in a photo have
    arr += rng.normal(0, 6, arr.shape).astype(np.float32)
    return np.clip(arr, 0, 255).astype(np.uint8)


def soft_alpha(width: int, height: int) -> np.ndarray:
    """An alpha plane with opaque, transparent and soft (vignette) regions, so
    premultiplication does real work rather than a constant-255 plane."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    d = np.hypot((x - width / 2) / (width / 2), (y - height / 2) / (height / 2))
    return np.clip((1.15 - d) * 400, 0, 255).astype(np.uint8)


def run(
    benchmark: Any,
    fn: Callable[..., Any],
    *args: Any,
    rounds: int,
    warmup_rounds: int = 1,
    mpix: float | None = None,
    **extra_info: Any,
) -> Any:
    """Time ``fn(*args)`` for a fixed number of rounds (bounded run time, also
    on a noisy machine), record ``extra_info`` and, given the source
    megapixels ``mpix``, ``mpix_per_s`` = mpix / median seconds. Returns the
    result of the last call."""
    benchmark.extra_info.update(extra_info)
    result = benchmark.pedantic(
        fn, args=args, rounds=rounds, warmup_rounds=warmup_rounds, iterations=1
    )
    stats = getattr(benchmark, "stats", None)
    if mpix is not None and stats is not None:
        benchmark.extra_info["mpix_per_s"] = round(mpix / stats.stats.median, 2)
    return result
