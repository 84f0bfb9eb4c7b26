"""JPEG XL on the corpus (issue 19): lossless JPEG -> JPEG XL per corpus JPEG,
and JPEG XL lossy at the SSIM target against AVIF and WebP.

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


def report(path: str) -> str:
    """Markdown tables from a ``--benchmark-json`` file of this module."""
    rows = json.loads(open(path).read())["benchmarks"]
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
    lines += ["", "| image | JPEG XL bytes (q, s) | AVIF bytes (q, s) | WebP bytes (q, s) |",
              "|---|---:|---:|---:|"]
    sums = {f: [0, 0.0] for f in ("jxl", "avif", "webp")}
    for name, by in lossy.items():
        cells = []
        for f in ("jxl", "avif", "webp"):
            b, t, _ssim, q = by.get(f, (0, 0.0, None, None))
            sums[f][0] += b
            sums[f][1] += t
            cells.append(f"{b:,} (q{q}, {t:.1f})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| **total** | " + " | ".join(f"{sums[f][0]:,} ({sums[f][1]:.1f} s)"
                                                 for f in ("jxl", "avif", "webp")) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(sys.argv[1]))
