"""JPEG XL on the corpus (issue 19): lossless JPEG -> JPEG XL per corpus JPEG,
JPEG XL lossy at the SSIM target against AVIF and WebP, and JPEG XL's default
quality against JPEG's (bytes and luma SSIM).

Each case is one ``pyimgopt.optimize_bytes`` call, timed with one round (the
AVIF searches take seconds); ``extra_info`` records ``bytes_in``,
``bytes_out``, ``ssim`` and ``status``. Codec threads are 1
(``PYIMGOPT_CODEC_THREADS=1``, as in a pool sidecar). Run:

    PYIMGOPT_CODEC_THREADS=1 .venv/bin/python -m pytest bench/bench_jxl.py \
        -o python_files='bench_*.py' --benchmark-only -p no:cacheprovider \
        --benchmark-json=.benchmarks/jxl.json
    .venv/bin/python bench/bench_jxl.py .benchmarks/jxl.json   # the tables in bench/README.md
"""

from __future__ import annotations

import json
import statistics
import sys

import pytest
from _common import CORPUS, corpus_available, run

import pyimgopt

pytestmark = pytest.mark.skipif(not corpus_available(), reason=f"corpus not found at {CORPUS}")


def _manifest() -> list[dict]:
    if not corpus_available():
        return []
    return json.loads((CORPUS / "MANIFEST.json").read_text())


JPEGS = [m["file"] for m in _manifest() if m["format"] == "JPEG"]
#: The lossy comparison: the corpus photos up to 4 MP (the 6-12 MP ones cost
#: minutes of AVIF search on a shared 2-core machine) and the screenshots.
LOSSY = [m["file"] for m in _manifest()
         if (m["category"] == "photo" and m["width"] * m["height"] <= 4_200_000
             and m["format"] in ("JPEG", "PNG", "WEBP") and not m.get("animated"))
         or m["category"] == "screenshot"]
TARGET = 0.985


@pytest.mark.parametrize("name", JPEGS)
@pytest.mark.benchmark(group="jxl-lossless-from-jpeg")
def test_jxl_lossless_from_jpeg(benchmark, name):
    data = (CORPUS / name).read_bytes()
    s = pyimgopt.Settings(format="jxl", lossless=True, keep_metadata=True)
    out, res = run(benchmark, pyimgopt.optimize_bytes, data, s, rounds=1, warmup_rounds=0)
    benchmark.extra_info.update(bytes_in=len(data), bytes_out=len(out), status=res.status,
                                recompressed="byte for byte" in " ".join(res.notes))


@pytest.mark.parametrize("fmt", ["jxl", "avif", "webp"])
@pytest.mark.parametrize("name", LOSSY)
@pytest.mark.benchmark(group="lossy-at-ssim-0.985")
def test_lossy_at_target(benchmark, name, fmt):
    data = (CORPUS / name).read_bytes()
    s = pyimgopt.Settings(format=fmt, target_ssim=TARGET, allow_larger=True)
    out, res = run(benchmark, pyimgopt.optimize_bytes, data, s, rounds=1, warmup_rounds=0)
    benchmark.extra_info.update(bytes_in=len(data), bytes_out=len(out), ssim=res.ssim,
                                quality=res.quality, status=res.status)


#: The default-quality comparison: the corpus JPEG photos up to 4 MP.
DEFAULTS = [n for n in LOSSY if n.endswith(".jpg")]


def _luma_ssim(data: bytes, ref: bytes) -> float:
    """Luma SSIM of ``data`` against ``ref`` (both decoded by Pillow, upright, RGB)."""
    import io

    import numpy as np
    from PIL import Image, ImageOps

    from pyimgopt import _kernels

    def rgb(b: bytes) -> np.ndarray:
        with Image.open(io.BytesIO(b)) as im:
            return np.ascontiguousarray(np.asarray(ImageOps.exif_transpose(im).convert("RGB")))

    return float(_kernels.ssim_luma(rgb(data), rgb(ref)))


@pytest.mark.parametrize("fmt", ["jxl", "jpeg"])
@pytest.mark.parametrize("name", DEFAULTS)
@pytest.mark.benchmark(group="default-quality")
def test_default_quality(benchmark, name, fmt):
    """Each format at its default quality (JPEG XL q75, JPEG q80): bytes and luma SSIM."""
    data = (CORPUS / name).read_bytes()
    ref, _ = pyimgopt.optimize_bytes(data, pyimgopt.Settings(format="png", effort=0))
    s = pyimgopt.Settings(format=fmt, allow_larger=True)
    out, res = run(benchmark, pyimgopt.optimize_bytes, data, s, rounds=1, warmup_rounds=0)
    benchmark.extra_info.update(bytes_in=len(data), bytes_out=len(out), quality=res.quality,
                                ssim=_luma_ssim(out, ref), status=res.status)


def report(*paths: str) -> str:
    """Markdown tables from ``--benchmark-json`` files of this module (merged)."""
    rows = [r for path in paths for r in json.loads(open(path).read())["benchmarks"]]
    lines = ["| JPEG | bytes in | JPEG XL | saving | time (s) |", "|---|---:|---:|---:|---:|"]
    tin = tout = tt = 0.0
    for r in rows:
        if r["group"] != "jxl-lossless-from-jpeg":
            continue
        e, t = r["extra_info"], r["stats"]["median"]
        mark = "" if e["recompressed"] else " (pixels: no reconstruction)"
        lines.append(f"| {r['params']['name']} | {e['bytes_in']:,} | {e['bytes_out']:,}{mark} | "
                     f"{1 - e['bytes_out'] / e['bytes_in']:.1%} | {t:.2f} |")
        if e["recompressed"]:
            tin, tout, tt = tin + e["bytes_in"], tout + e["bytes_out"], tt + t
    lines.append(f"| **total (recompressed)** | {tin:,.0f} | {tout:,.0f} | {1 - tout / tin:.1%} | "
                 f"{tt:.2f} |")
    lossy: dict[str, dict[str, tuple]] = {}
    for r in rows:
        if r["group"] == "lossy-at-ssim-0.985":
            e = r["extra_info"]
            lossy.setdefault(r["params"]["name"], {})[r["params"]["fmt"]] = (
                e["bytes_out"], r["stats"]["median"], e["ssim"], e["quality"])
    lines += ["", "| image | JPEG XL bytes (q, SSIM, s) | AVIF bytes (q, SSIM, s) | "
              "WebP bytes (q, SSIM, s) |", "|---|---:|---:|---:|"]
    sums = {f: [0, 0.0] for f in ("jxl", "avif", "webp")}
    ratios: dict[str, list[tuple[float, float]]] = {"avif": [], "webp": []}
    for name, by in lossy.items():
        cells = []
        for f in ("jxl", "avif", "webp"):
            b, t, ssim, q = by.get(f, (0, 0.0, None, None))
            sums[f][0] += b
            sums[f][1] += t
            cells.append(f"{b:,} (q{q}, {ssim if ssim is None else f'{ssim:.4f}'}, {t:.1f})")
            if f != "jxl" and f in by and "jxl" in by:
                ratios[f].append((by["jxl"][0] / b, by["jxl"][1] / t))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| **total** | " + " | ".join(f"{sums[f][0]:,} ({sums[f][1]:.1f} s)"
                                                 for f in ("jxl", "avif", "webp")) + " |")
    defaults: dict[str, dict[str, tuple]] = {}
    for r in rows:
        if r["group"] == "default-quality":
            e = r["extra_info"]
            defaults.setdefault(r["params"]["name"], {})[r["params"]["fmt"]] = (
                e["bytes_out"], e["ssim"])
    pairs = [(d["jxl"], d["jpeg"]) for d in defaults.values() if {"jxl", "jpeg"} <= set(d)]
    if pairs:
        lines.append(
            f"\nDefault quality on {len(pairs)} corpus JPEG photos: JPEG XL q75 mean luma SSIM "
            f"{statistics.mean(j[1] for j, _ in pairs):.3f}, JPEG (q80, capped at the source's) "
            f"{statistics.mean(p[1] for _, p in pairs):.3f}; JPEG XL bytes / JPEG bytes, median "
            f"{statistics.median(j[0] / p[0] for j, p in pairs):.2f}x.")
    for f, pairs in ratios.items():
        if pairs:
            size = statistics.median(p[0] for p in pairs)
            time = statistics.median(p[1] for p in pairs)
            lines.append(f"\nJPEG XL / {f.upper()} per image, median: bytes {size:.2f}x, "
                         f"time {time:.2f}x ({len(pairs)} images).")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(*sys.argv[1:]))
