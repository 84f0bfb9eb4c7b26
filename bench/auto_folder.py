"""``format="auto"`` against ``keep`` on a mixed folder, as a user runs it: the CLI with
the default pool (issue 17's target: auto <= 3x keep's wall-clock time, <= 0.30x the
input bytes, every output at the SSIM target, no failures).

The folder is taken from the broad corpus (``bench/broad_corpus.py``): ``--count`` files
(default 40) in SHA-256 order from the **held-out half** (SHA-256 starting 8-f; the
defaults were tuned on 0-7), round-robin over the categories so that JPEG photos,
graphics, screenshots, icons, GIFs and WebPs all appear. Both runs see the same
folder; keep runs first, then auto, then keep again (the keep time is the mean of the
two, so a change in the machine's load during the auto run shows as a gap between them).
Both wall-clock seconds (what the user waits, with the pool's two sidecars) and CPU
seconds (of the CLI and every process it started: on a shared machine the steadier
figure) are reported. Every auto output's SSIM is recomputed here (luma SSIM of the output against the input
as a viewer shows it), not only read from the result.

    .venv/bin/python bench/auto_folder.py [--count 40] [--half held-out|tune|all]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter

from _broad import BROAD, available, luma_ssim, viewer_rgb


def pick(count: int, half: str) -> list[dict]:
    images = json.loads((BROAD / "manifest.json").read_text())["images"]
    if half != "all":
        images = [e for e in images if (e["sha256"][0] in "89abcdef") == (half == "held-out")]
    by: dict[str, list[dict]] = {}
    for e in sorted(images, key=lambda e: e["sha256"]):
        by.setdefault(e["category"], []).append(e)
    out: list[dict] = []
    while len(out) < count and any(by.values()):
        for cat in sorted(by):
            if by[cat] and len(out) < count:
                out.append(by[cat].pop(0))
    return out


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run(src: str, out: str, fmt: str) -> tuple[float, float, list[dict]]:
    """One CLI run: (wall-clock s, CPU s of the CLI and every process it started and
    reaped — router and pool sidecars —, result records)."""
    t, c = time.perf_counter(), _children_cpu()
    p = subprocess.run([sys.executable, "-m", "pyimgopt", "optimize", src, "-o", out, "--json",
                        "--format", fmt], capture_output=True, text=True, timeout=3600)
    dt, dc = time.perf_counter() - t, _children_cpu() - c
    recs = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    return dt, dc, [r for r in recs if r.get("type") == "result"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=40)
    ap.add_argument("--half", default="held-out", choices=("held-out", "tune", "all"))
    args = ap.parse_args()
    if not available():
        sys.exit(f"no broad corpus at {BROAD}: build it with bench/broad_corpus.py")
    files = pick(args.count, args.half)
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "in")
        os.mkdir(src)
        for e in files:
            shutil.copy(BROAD / e["file"], os.path.join(src, e["file"].rsplit("/", 1)[-1]))
        bytes_in = sum(e["bytes"] for e in files)
        k1, c1, keep = run(src, os.path.join(tmp, "keep1"), "keep")
        ta, ca, auto = run(src, os.path.join(tmp, "auto"), "auto")
        k2, c2, _ = run(src, os.path.join(tmp, "keep2"), "keep")
        tk, ck = (k1 + k2) / 2, (c1 + c2) / 2
        worst, below = 1.0, []
        for r in auto:
            if r["status"] == "failed" or not r.get("output"):
                continue
            with open(r["input"], "rb") as fh:
                ref = viewer_rgb(fh.read())
            with open(r["output"], "rb") as fh:
                out = fh.read()
            s = luma_ssim(ref, out)
            worst = min(worst, s)
            if s < 0.985 - 1e-3:
                below.append((os.path.basename(r["input"]), round(s, 4), r.get("ssim")))
        out_k = sum(r.get("bytes_out") or 0 for r in keep)
        out_a = sum(r.get("bytes_out") or 0 for r in auto)
        print(json.dumps({
            "files": len(files), "categories": dict(Counter(e["category"] for e in files)),
            "bytes_in": bytes_in, "keep_s": [round(k1, 1), round(k2, 1)], "auto_s": round(ta, 1),
            "auto_over_keep": round(ta / tk, 2),
            "keep_cpu_s": [round(c1, 1), round(c2, 1)], "auto_cpu_s": round(ca, 1),
            "auto_over_keep_cpu": round(ca / ck, 2), "keep_out_in": round(out_k / bytes_in, 3),
            "auto_out_in": round(out_a / bytes_in, 3),
            "auto_failed": sum(r["status"] == "failed" for r in auto),
            "keep_failed": sum(r["status"] == "failed" for r in keep),
            "auto_formats": dict(Counter(r.get("format_out") for r in auto)),
            "auto_min_luma_ssim": round(worst, 4), "auto_below_target": below,
            "slowest_auto": sorted(((round(r.get("seconds") or 0, 1), os.path.basename(r["input"]))
                                    for r in auto), reverse=True)[:5],
        }, indent=1))


if __name__ == "__main__":
    main()
