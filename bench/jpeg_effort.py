"""JPEG efforts side by side on the broad corpus's large (>= 8 MP) JPEGs, against the
Pillow q80/q75/q85 figures of a ``bench_broad.py`` run (issue 17: why the default misses
the 6 % target on that category, and what trellis would cost there).

Each file is optimised once per effort with the default settings otherwise
(``optimize_bytes``, one codec thread) and once by Pillow q80
``optimize+progressive``, side by side in this process. Time is CPU seconds
of this process (libvips' threads included) **plus its reaped children**:
mozjpeg's lossless pass runs in a forked child (``pipeline/isolate.py``),
which ``time.process_time`` — the timer of the pytest-benchmark suites —
does not see. SSIM is luma SSIM against the input as a viewer shows it; the
bytes at equal mean SSIM are interpolated on Pillow's (SSIM, bytes) curve
(q75/q80/q85 from the run's JSON) as ``report_broad.py`` does.

    .venv/bin/python bench/jpeg_effort.py .benchmarks/broad.json [--efforts 6 8] [--all]
"""

from __future__ import annotations

import argparse
import json
import io
import os
import resource
import statistics
import sys

os.environ.setdefault("PYIMGOPT_CODEC_THREADS", "1")
os.environ.setdefault("VIPS_CONCURRENCY", "1")
os.environ.setdefault("RAYON_NUM_THREADS", "1")

import pyimgopt  # noqa: E402
from PIL import Image  # noqa: E402
from _broad import BROAD, luma_ssim, viewer_rgb  # noqa: E402
from report_broad import _interp  # noqa: E402


def cpu() -> float:
    """CPU seconds of this process and of every child it has reaped."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def pillow_q80(data: bytes) -> bytes:
    """The bench's Pillow contender: q80, optimize, progressive, the ICC profile kept."""
    with Image.open(io.BytesIO(data)) as im:  # as bench_broad.py's _pillow
        im.load()
        icc = im.info.get("icc_profile")
        out = io.BytesIO()
        im.save(out, "JPEG", quality=80, optimize=True, progressive=True,
                **({"icc_profile": icc} if icc else {}))
        return out.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("json", help="--benchmark-json of a bench_broad.py run with its JPEG cases")
    ap.add_argument("--efforts", type=int, nargs="+", default=[6, 8])
    ap.add_argument("--all", action="store_true", help="every JPEG, not only the >= 8 MP ones")
    args = ap.parse_args()
    pil: dict[str, tuple[dict, float]] = {}
    for b in json.load(open(args.json))["benchmarks"]:
        e = b["extra_info"]
        if e.get("kind") == "jpeg" and e.get("impl") == "pillow-q80" and (args.all or e.get("large")):
            pil[e["file"]] = (e, b["stats"]["median"])
    if not pil:
        sys.exit(f"no Pillow q80 JPEG rows in {args.json}: run bench_broad.py -k test_jpeg first")
    rows = []
    for f in sorted(pil):
        data = (BROAD / f).read_bytes()
        ref = viewer_rgb(data)
        row = {"file": f, "held_out": f.rsplit("/", 1)[-1][0] in "89abcdef"}
        t = cpu()
        pillow_q80(data)
        row["pillow_s"] = cpu() - t
        for eff in args.efforts:
            t = cpu()
            out, _ = pyimgopt.optimize_bytes(data, pyimgopt.Settings(effort=eff))
            row[eff] = (cpu() - t, len(out), 1.0 if out == data else luma_ssim(ref, out))
        rows.append(row)
    for label, sel in (("all", rows), ("held-out", [r for r in rows if r["held_out"]])):
        ep = [pil[r["file"]][0] for r in sel]
        s_p = statistics.fmean(e["ssim"] for e in ep)
        curve = [(s_p, sum(e["bytes_out"] for e in ep))] + [
            (statistics.fmean(e[f"q{q}_ssim"] for e in ep), sum(e[f"q{q}_bytes"] for e in ep)) for q in (75, 85)]
        t_p = sum(r["pillow_s"] for r in sel)
        for eff in args.efforts:
            b = sum(r[eff][1] for r in sel)
            s = statistics.fmean(r[eff][2] for r in sel)
            at, extrap = _interp(curve, s)
            t = sum(r[eff][0] for r in sel)
            print(f"{label:8} {len(sel):3} files  effort {eff}: {b:,} B, mean SSIM {s:.4f}; Pillow at equal "
                  f"SSIM {at:,.0f} B{' (extrap.)' if extrap else ''}: {100 * (b / at - 1):+.1f} %; "
                  f"{t:.1f} CPU s = {t / t_p:.2f}x Pillow q80's {t_p:.1f} s")


if __name__ == "__main__":
    main()
