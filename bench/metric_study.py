"""SSIMULACRA2 against pyimgopt's SSIM score (issue 20 item 5): a bounded study.

Not a test and not a benchmark suite: a script that prints the figures quoted
in ``bench/README.md`` ("Perceptual metric (issue 20 item 5)"). It needs the
PyPI package ``ssimulacra2`` (a NumPy/SciPy port of libjxl's
``tools/ssimulacra2.cc``; not a pyimgopt dependency) and the corpus.

For each corpus still (first frame of an animation; alpha flattened on white;
downscaled by pyimgopt itself, lanczos3, to at most ``--max-mp`` megapixels;
colour converted to sRGB by pyimgopt's decoder) the reference is that
image as a lossless PNG. It is encoded by ``pyimgopt.optimize_bytes`` as JPEG,
WebP and AVIF at a ladder of qualities, and every decoded output is scored by

* ``ssim``  — :func:`pyimgopt.pipeline.perceptual.luma_ssim` (luma alone),
* ``score`` — :func:`pyimgopt.pipeline.perceptual.score`, the number
  ``target_ssim`` and ``format="auto"`` compare with 0.985 (luma SSIM held down
  by the chroma floor),
* ``ss2``   — SSIMULACRA2 (0-100, higher is better).

Outputs are forced lossy (``lossless=False``): left to itself pyimgopt keeps a
graphic as lossless WebP when that is smaller, which no metric needs to judge.

It reports (a) where each format lands in SSIMULACRA2 when ``score`` is at the
0.985 target (linear interpolation between adjacent ladder rungs), (b) an
equal-luma red/green checkerboard through 4:2:0 chroma, (c) each metric's cost
in ms per megapixel (median; the machine is shared, so compare the ratio).

    .venv/bin/pip install ssimulacra2
    .venv/bin/python bench/metric_study.py [--max-mp 0.25] [--json out.json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

from pyimgopt import Settings
from pyimgopt.pipeline import optimize_bytes
from pyimgopt.pipeline import perceptual

try:
    from ssimulacra2 import compute_ssimulacra2
except ImportError as exc:  # pragma: no cover - a study dependency only
    raise SystemExit("this study needs `pip install ssimulacra2` (PyPI, BSD-3)") from exc

CORPUS = Path(os.environ.get("PYIMGOPT_CORPUS", "/work/shared/corpus"))
FORMATS = ("jpeg", "webp", "avif")
LADDER = (20, 35, 50, 62, 72, 80, 88, 95)
TARGET = 0.985


def _ppm(a: np.ndarray) -> io.BytesIO:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PPM")
    buf.seek(0)
    return buf


def ss2(ref: np.ndarray, got: np.ndarray) -> float:
    """SSIMULACRA2 of two uint8 RGB arrays (the package reads files: PPM in memory)."""
    return float(compute_ssimulacra2(_ppm(ref), _ppm(got)))


def _rgb(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            im = im.convert("RGBA")
            bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(bg, im)
        return np.asarray(im.convert("RGB"))


def reference(path: Path, max_mp: float) -> np.ndarray:
    """The still as pyimgopt decodes it, on white, at most ``max_mp`` MP."""
    data = path.read_bytes()
    with Image.open(io.BytesIO(data)) as im:
        w, h = im.size
    scale = min(1.0, (max_mp * 1e6 / (w * h)) ** 0.5)
    box = max(8, int(max(w, h) * scale))
    out, _ = optimize_bytes(data, Settings(format="png", lossless=True, first_frame=True,
                                           max_width=box, max_height=box, allow_larger=True))
    return _rgb(out)


def encode(ref: np.ndarray, fmt: str, q: int, subsampling: str = "auto") -> tuple[np.ndarray, int]:
    buf = io.BytesIO()
    Image.fromarray(ref).save(buf, "PNG")
    # lossless=False: WebP would otherwise keep a graphic as lossless WebP when smaller,
    # and the study is about how the metrics judge lossy artefacts.
    out, _ = optimize_bytes(buf.getvalue(), Settings(format=fmt, quality=q, allow_larger=True,
                                                     lossless=False, chroma_subsampling=subsampling))
    return _rgb(out), len(out)


def timed(fn, *args) -> tuple[float, float]:
    t = time.perf_counter()
    v = fn(*args)
    return v, (time.perf_counter() - t) * 1000.0


def at_target(rows: list[dict], key: str, target: float, want: str) -> float | None:
    """``want`` interpolated where ``key`` first reaches ``target`` up the quality ladder."""
    rows = sorted(rows, key=lambda r: r["q"])
    if rows[0][key] >= target:
        return rows[0][want]
    for lo, hi in zip(rows, rows[1:]):
        if lo[key] < target <= hi[key]:
            t = (target - lo[key]) / (hi[key] - lo[key])
            return lo[want] + t * (hi[want] - lo[want])
    return None  # never reached


def corpus_study(max_mp: float, only: str | None) -> list[dict]:
    manifest = json.loads((CORPUS / "MANIFEST.json").read_text())
    rows = []
    for entry in manifest:
        if only and only not in entry["file"]:
            continue
        ref = reference(CORPUS / entry["file"], max_mp)
        mp = ref.shape[0] * ref.shape[1] / 1e6
        kind = entry["file"].split("_")[0]
        for fmt in FORMATS:
            for q in LADDER:
                got, nbytes = encode(ref, fmt, q)
                lssim, t_ssim = timed(perceptual.luma_ssim, ref, got)
                score, t_score = timed(perceptual.score, ref, got)
                s2, t_ss2 = timed(ss2, ref, got)
                rows.append(dict(file=entry["file"], kind=kind, fmt=fmt, q=q, mp=mp, bytes=nbytes,
                                 ssim=lssim, score=score, ss2=s2, ms_ssim=t_ssim, ms_score=t_score,
                                 ms_ss2=t_ss2))
        print(f"  {entry['file']}: {ref.shape[1]}x{ref.shape[0]}", flush=True)
    return rows


def report_a(rows: list[dict]) -> None:
    print(f"\n(a) SSIMULACRA2 where pyimgopt's score reaches {TARGET} (per image, interpolated)")
    groups: dict[tuple[str, str], list[float]] = {}
    gaps: dict[str, list[float]] = {}
    by_img: dict[str, dict[str, float]] = {}
    for (f, fmt) in sorted({(r["file"], r["fmt"]) for r in rows}):
        sub = [r for r in rows if r["file"] == f and r["fmt"] == fmt]
        v = at_target(sub, "score", TARGET, "ss2")
        if v is None:
            continue
        kind = sub[0]["kind"]
        kind = "photo" if kind == "photo" else "screen/graphic/icon"
        groups.setdefault((kind, fmt), []).append(v)
        groups.setdefault(("all", fmt), []).append(v)
        by_img.setdefault(f, {})[fmt] = v
    print(f"  {'kind':22} {'fmt':5} {'n':>3} {'median':>7} {'p10':>6} {'p90':>6}")
    for (kind, fmt), vs in sorted(groups.items()):
        q = statistics.quantiles(vs, n=10) if len(vs) >= 2 else [vs[0]] * 9
        print(f"  {kind:22} {fmt:5} {len(vs):3d} {statistics.median(vs):7.1f} {q[0]:6.1f} {q[-1]:6.1f}")
    for a, b in (("webp", "jpeg"), ("avif", "jpeg"), ("avif", "webp")):
        d = [v[a] - v[b] for v in by_img.values() if a in v and b in v]
        gaps[f"{a}-{b}"] = d
        if d:
            print(f"  per-image gap {a}-{b} at equal score: median {statistics.median(d):+.1f}, "
                  f"{sum(x < 0 for x in d)}/{len(d)} images below")
    print("\n  reverse: pyimgopt score where SSIMULACRA2 reaches 80 / 70")
    for n in (80, 70):
        for fmt in FORMATS:
            vs = []
            for f in sorted({r["file"] for r in rows}):
                sub = [r for r in rows if r["file"] == f and r["fmt"] == fmt]
                v = at_target(sub, "ss2", n, "score")
                if v is not None:
                    vs.append(v)
            if vs:
                print(f"    ss2={n} {fmt:5} n={len(vs):2d} median score {statistics.median(vs):.4f} "
                      f"range {min(vs):.4f}-{max(vs):.4f}")
    # rank agreement within one image and format: does a higher quality ever score lower?
    from itertools import combinations
    agree = total = 0
    for f in sorted({r["file"] for r in rows}):
        sub = [r for r in rows if r["file"] == f]
        for x, y in combinations(sub, 2):
            if x["fmt"] == y["fmt"]:
                continue
            ds, d2 = x["score"] - y["score"], x["ss2"] - y["ss2"]
            if abs(ds) < 1e-9 or abs(d2) < 1e-9:
                continue
            total += 1
            agree += (ds > 0) == (d2 > 0)
    print(f"\n  cross-format pairs of one image the two metrics order the same way: "
          f"{agree}/{total} ({100.0 * agree / max(total, 1):.0f}%)")
    bpp: dict[str, list[float]] = {}
    for n in (TARGET,):
        for fmt in FORMATS:
            for f in sorted({r["file"] for r in rows}):
                sub = [r for r in rows if r["file"] == f and r["fmt"] == fmt]
                v = at_target(sub, "score", n, "bytes")
                if v is not None:
                    bpp.setdefault(fmt, []).append(v * 8 / (sub[0]["mp"] * 1e6))
    print("  median bits/pixel at score 0.985: " +
          ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in bpp.items()))
    # the format="auto" decision: the smallest format at the SSIM target against the smallest
    # at an SSIMULACRA2 target set to the median SSIMULACRA2 the SSIM target lands at
    s2_target = statistics.median(v for vs in by_img.values() for v in vs.values())
    same = n = 0
    ratios = []
    flips: dict[str, int] = {}
    for f in sorted({r["file"] for r in rows}):
        pick = {}
        for key, t in (("score", TARGET), ("ss2", s2_target)):
            sizes = {}
            for fmt in FORMATS:
                sub = [r for r in rows if r["file"] == f and r["fmt"] == fmt]
                v = at_target(sub, key, t, "bytes")
                if v is not None:
                    sizes[fmt] = v
            if sizes:
                pick[key] = min(sizes, key=sizes.get), sizes[min(sizes, key=sizes.get)]
        if len(pick) == 2:
            n += 1
            same += pick["score"][0] == pick["ss2"][0]
            if pick["score"][0] != pick["ss2"][0]:
                k = f"{pick['score'][0]}->{pick['ss2'][0]}"
                flips[k] = flips.get(k, 0) + 1
            ratios.append(pick["ss2"][1] / pick["score"][1])
    print(f"\n  auto's pick (smallest format) at score {TARGET} vs at SSIMULACRA2 {s2_target:.1f}: "
          f"same format for {same}/{n} images; changes {flips}; bytes ss2/score median "
          f"{statistics.median(ratios):.2f} (p10 {statistics.quantiles(ratios, n=10)[0]:.2f}, "
          f"p90 {statistics.quantiles(ratios, n=10)[-1]:.2f})")


def report_c(rows: list[dict]) -> None:
    print("\n(c) cost, ms per megapixel (median over all pairs; shared 2-core machine)")
    for key in ("ms_ssim", "ms_score", "ms_ss2"):
        print(f"  {key[3:]:6} {statistics.median(r[key] / r['mp'] for r in rows):9.1f}")
    ratio = statistics.median(r["ms_ss2"] / r["ms_score"] for r in rows)
    print(f"  ss2 / score, per pair, median: {ratio:.0f}x")


def chroma_case() -> list[dict]:
    print("\n(b) equal-luma red/green checkerboard, 512x512, 4:2:0 where the format allows")
    out = []
    red, green = (255, 0, 0), (0, 130, 0)  # BT.601 luma 76.2 and 76.3
    for sq in (16, 8, 4):
        yy, xx = np.mgrid[0:512, 0:512]
        mask = ((yy // sq + xx // sq) % 2).astype(bool)
        ref = np.empty((512, 512, 3), np.uint8)
        ref[mask], ref[~mask] = red, green
        for fmt, q in (("jpeg", 90), ("webp", 90), ("avif", 80)):
            got, _ = encode(ref, fmt, q, "4:2:0")
            row = dict(square=sq, fmt=fmt, q=q, ssim=perceptual.luma_ssim(ref, got),
                       chroma=perceptual.chroma_error(ref, got), score=perceptual.score(ref, got),
                       ss2=ss2(ref, got))
            out.append(row)
            print(f"  {sq:2d}px {fmt:5} q{q}: luma SSIM {row['ssim']:.4f}  chroma err {row['chroma']:5.1f}"
                  f"  score {row['score']:.4f}  SSIMULACRA2 {row['ss2']:6.1f}")
        got, _ = encode(ref, "jpeg", 90, "4:4:4")
        print(f"  {sq:2d}px jpeg  q90 4:4:4 (control): luma SSIM {perceptual.luma_ssim(ref, got):.4f}"
              f"  score {perceptual.score(ref, got):.4f}  SSIMULACRA2 {ss2(ref, got):6.1f}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--max-mp", type=float, default=0.25)
    ap.add_argument("--only", help="substring of corpus file names to keep")
    ap.add_argument("--json", help="write every row here")
    ap.add_argument("--skip-corpus", action="store_true")
    ap.add_argument("--from-json", help="report on rows a previous --json run wrote")
    args = ap.parse_args()
    if args.from_json:
        rows = json.loads(Path(args.from_json).read_text())["corpus"]
        report_a(rows)
        report_c(rows)
        return
    chroma = chroma_case()
    rows = []
    if not args.skip_corpus:
        if not (CORPUS / "MANIFEST.json").exists():
            raise SystemExit(f"corpus not found at {CORPUS} (set PYIMGOPT_CORPUS)")
        print(f"\ncorpus at <= {args.max_mp} MP, ladder {LADDER}")
        rows = corpus_study(args.max_mp, args.only)
        report_a(rows)
        report_c(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(dict(corpus=rows, chroma=chroma), indent=1))


if __name__ == "__main__":
    main()
