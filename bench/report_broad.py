"""The broad-corpus tables of ``bench/README.md``: per-category encoder
comparisons (``bench_broad.py``), the default-output check, and the per-stage
profile and step prices (``bench_stages.py``).

Used by ``report.py``, which writes these tables between the
``<!-- broad:begin -->`` and ``<!-- broad:end -->`` markers (the rest of the
README is left alone). Only the standard library is used; rows come from each
benchmark's ``extra_info``.
"""

from __future__ import annotations

import json
import os
import pathlib
import statistics
from collections import Counter, defaultdict
from typing import Any

BEGIN = "<!-- broad:begin -->"
END = "<!-- broad:end -->"

PNG_CATS = ("icon", "screenshot", "graphic", "photo-png")
JPEG_CATS = ("photo-jpeg", "graphic-jpeg")
STAGES = ("read", "probe", "decode", "resize", "encode", "write")

#: Targets of the compression and price issues, measured on the broad corpus.
PNG_BYTES_TARGET = 0.85  # default <= 0.85x Pillow optimize=True bytes in every category
PNG_WORST_TARGET = 1.01  # no single file more than 1 % above Pillow optimize=True
PNG_TIME_TARGET = 0.5  # default <= 0.5x Pillow optimize=True time in total
PNG_E9_TARGET = 0.80  # effort 9 <= 0.80x Pillow optimize=True bytes in every category
JPEG_GAIN_TARGET = 0.06  # >= 6 % fewer bytes than Pillow q80 at equal SSIM, photo categories
JPEG_TIME_TARGET = 3.0  # <= 3x Pillow q80 time
AUTO_TIME_TARGET = 3.0  # auto <= 3x keep time


def _t(header: list[str], rows: list[list[str]], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    return "\n".join(["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
                     + ["| " + " | ".join(r) + " |" for r in rows])


def _med(b: dict[str, Any]) -> float:
    return float(b["stats"]["median"])


def _x(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}x"


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:+.1f} %"


def _met(ok: bool | None) -> str:
    return "not measured" if ok is None else ("**met**" if ok else "not met")


def _short(path: str) -> str:
    return "`" + path.split("/", 2)[-1] + "`"


def _views(cats: tuple[str, ...]) -> list[tuple[str, Any]]:
    """(label, predicate) rows: each category, then "large" (again), then all."""
    rows: list[tuple[str, Any]] = [(c, lambda e, c=c: e["category"] == c) for c in cats]
    rows.append(("large ≥ 8 MP (again)", lambda e: e.get("large")))
    rows.append(("**all**", lambda e: True))
    return rows


def _held_out(e: dict[str, Any]) -> bool:
    """Whether a corpus file is in the held-out half (SHA-256 starting 8-f; the JPEG and
    ``auto`` defaults of issue 17 were tuned on 0-7 only). Files are named ``<sha256[:10]>-…``."""
    return e["file"].rsplit("/", 1)[-1][:1] in "89abcdef"


def _jpeg_views() -> list[tuple[str, Any]]:
    """The JPEG rows: every category, large, all; then the same on the held-out half."""
    rows = _views(JPEG_CATS)
    held = [(f"{label} · held-out", lambda e, pred=pred: pred(e) and _held_out(e))
            for label, pred in rows]
    return rows + held


def _by_file(benches: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    out: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for b in benches:
        out[b["extra_info"]["file"]][b["extra_info"]["impl"]] = b
    return out


# --------------------------------------------------------------------------- PNG


def png_section(benches: list[dict[str, Any]]) -> tuple[str, list[list[str]]]:
    files = _by_file(benches)
    full = {f: c for f, c in files.items() if all(k in c for k in ("pyimgopt", "pillow-optimize"))}
    rows, targets, worst_all = [], [], None
    per_cat_ok, e9_ok = [], []
    for label, pred in _views(PNG_CATS):
        sel = [c for c in full.values() if pred(c["pyimgopt"]["extra_info"])]
        if not sel:
            continue
        n = len(sel)
        bin_ = sum(c["pyimgopt"]["extra_info"]["bytes_in"] for c in sel)
        ours = sum(c["pyimgopt"]["extra_info"]["bytes_out"] for c in sel)
        pil = sum(c["pillow-optimize"]["extra_info"]["bytes_out"] for c in sel)
        oxi = sum(c["oxipng-alone"]["extra_info"]["bytes_out"] for c in sel if "oxipng-alone" in c)
        t_ours = sum(_med(c["pyimgopt"]) for c in sel)
        t_pil = sum(_med(c["pillow-optimize"]) for c in sel)
        t_oxi = sum(_med(c["oxipng-alone"]) for c in sel if "oxipng-alone" in c)
        skipped = sum(c["pyimgopt"]["extra_info"].get("status") == "skipped" for c in sel)
        above_n = sum(c["pyimgopt"]["extra_info"]["bytes_out"]
                      > PNG_WORST_TARGET * c["pillow-optimize"]["extra_info"]["bytes_out"] for c in sel)
        worst = max(sel, key=lambda c: c["pyimgopt"]["extra_info"]["bytes_out"]
                    / c["pillow-optimize"]["extra_info"]["bytes_out"])
        wr = worst["pyimgopt"]["extra_info"]["bytes_out"] / worst["pillow-optimize"]["extra_info"]["bytes_out"]
        rows.append([label, str(n), f"{bin_:,}", f"{ours:,}", f"{pil:,}", f"{oxi:,}",
                     _x(ours / pil), _x(oxi / pil), f"{t_ours:.1f}", f"{t_pil:.1f}", f"{t_oxi:.1f}",
                     _x(t_ours / t_pil), str(skipped), str(above_n),
                     f"{wr:.3f}x {_short(worst['pyimgopt']['extra_info']['file'])}"])
        if label in PNG_CATS:
            per_cat_ok.append((label, ours / pil))
        if label == "**all**":
            worst_all = (wr, worst["pyimgopt"]["extra_info"]["file"])
            above = sum(c["pyimgopt"]["extra_info"]["bytes_out"]
                        > PNG_WORST_TARGET * c["pillow-optimize"]["extra_info"]["bytes_out"] for c in sel)
            time_ratio = t_ours / t_pil
    text = ("Bytes out (a `skipped` file counts at its input size: what the user gets); CPU seconds "
            "summed over the files (median of 3 rounds under 0.25 MP, else one round); ratios "
            "against Pillow `optimize=True`; worst = the file with the largest pyimgopt / Pillow "
            "bytes ratio.\n\n"
            + _t(["category", "files", "bytes in", "pyimgopt (effort 6)", "Pillow optimize",
                  "oxipng alone", "pyimgopt / Pillow", "oxipng / Pillow", "pyimgopt s", "Pillow s",
                  "oxipng s", "time pyimgopt / Pillow", "skipped", "> 1.01x Pillow", "worst file vs Pillow"], rows))
    # effort 9 on the sample, against the others on the same files
    srows = []
    for label, pred in _views(PNG_CATS):
        sel = [c for c in full.values() if "pyimgopt-effort9" in c and pred(c["pyimgopt"]["extra_info"])]
        if not sel:
            continue
        tot = {k: sum(c[k]["extra_info"]["bytes_out"] for c in sel) for k in ("pyimgopt", "pillow-optimize", "pyimgopt-effort9")}
        sec = {k: sum(_med(c[k]) for c in sel) for k in ("pyimgopt", "pillow-optimize", "pyimgopt-effort9")}
        of = sum(1 for c in full.values() if pred(c["pyimgopt"]["extra_info"]))
        r9 = tot["pyimgopt-effort9"] / tot["pillow-optimize"]
        if label in PNG_CATS:
            e9_ok.append((label, r9))
        srows.append([label, f"{len(sel)} of {of}", f"{tot['pillow-optimize']:,}",
                      _x(tot["pyimgopt"] / tot["pillow-optimize"]), _x(r9),
                      f"{sec['pyimgopt-effort9']:.1f}", _x(sec["pyimgopt-effort9"] / sec["pillow-optimize"]),
                      _x(sec["pyimgopt"] / sec["pillow-optimize"])])
    text += ("\n\nEffort 9 (slow) runs on the deterministic sample (per category a megapixel budget, "
             "files in SHA-256 order; `bench/_broad.py`); every ratio here is on that same sample.\n\n"
             + _t(["category", "files", "Pillow optimize bytes", "effort 6 / Pillow", "effort 9 / Pillow",
                   "effort 9 s", "effort 9 time / Pillow", "effort 6 time / Pillow"], srows))
    if per_cat_ok:
        bad = [c for c, r in per_cat_ok if r > PNG_BYTES_TARGET]
        targets.append([f"PNG default ≤ {PNG_BYTES_TARGET}x Pillow optimize bytes in every category",
                        ", ".join(f"{c} {r:.3f}x" for c, r in per_cat_ok), _met(not bad)])
    if worst_all:
        targets.append([f"no PNG more than {100 * (PNG_WORST_TARGET - 1):.0f} % above Pillow optimize",
                        f"worst {worst_all[0]:.3f}x ({_short(worst_all[1])}); {above} files above",
                        _met(worst_all[0] <= PNG_WORST_TARGET)])
        targets.append([f"PNG default ≤ {PNG_TIME_TARGET}x Pillow optimize time (total)",
                        _x(time_ratio), _met(time_ratio <= PNG_TIME_TARGET)])
    if e9_ok:
        bad = [c for c, r in e9_ok if r > PNG_E9_TARGET]
        targets.append([f"PNG effort 9 ≤ {PNG_E9_TARGET}x Pillow optimize bytes in every category (sample)",
                        ", ".join(f"{c} {r:.3f}x" for c, r in e9_ok), _met(not bad)])
    return text, targets


# --------------------------------------------------------------------------- JPEG


def _interp(points: list[tuple[float, float]], ssim: float) -> tuple[float, bool]:
    """Bytes at ``ssim`` on the piecewise-linear (SSIM, bytes) curve; True when extrapolated."""
    pts = sorted(points)
    for (s0, b0), (s1, b1) in zip(pts, pts[1:]):
        if s0 <= ssim <= s1 and s1 > s0:
            return b0 + (b1 - b0) * (ssim - s0) / (s1 - s0), False
    (s0, b0), (s1, b1) = (pts[0], pts[1]) if ssim < pts[0][0] else (pts[-2], pts[-1])
    if s1 == s0:
        return b0, True
    return b0 + (b1 - b0) * (ssim - s0) / (s1 - s0), True


def jpeg_section(benches: list[dict[str, Any]]) -> tuple[str, list[list[str]]]:
    files = _by_file(benches)
    full = {f: c for f, c in files.items() if all(k in c for k in ("pyimgopt", "pillow-q80"))}
    rows, targets = [], []
    for label, pred in _jpeg_views():
        sel = [c for c in full.values() if pred(c["pyimgopt"]["extra_info"])]
        if not sel:
            continue
        e_o = [c["pyimgopt"]["extra_info"] for c in sel]
        e_p = [c["pillow-q80"]["extra_info"] for c in sel]
        ours, pil = sum(e["bytes_out"] for e in e_o), sum(e["bytes_out"] for e in e_p)
        s_o, s_p = statistics.fmean(e["ssim"] for e in e_o), statistics.fmean(e["ssim"] for e in e_p)
        curve = [(s_p, pil)] + [(statistics.fmean(e[f"q{q}_ssim"] for e in e_p), sum(e[f"q{q}_bytes"] for e in e_p))
                                for q in (75, 85) if all(f"q{q}_bytes" in e for e in e_p)]
        at, extrap = _interp(curve, s_o) if len(curve) > 1 else (float(pil), True)
        gain = 1 - ours / at
        t_o, t_p = sum(_med(c["pyimgopt"]) for c in sel), sum(_med(c["pillow-q80"]) for c in sel)
        kept = sum("lossless metadata strip" in " ".join(e.get("notes", [])) for e in e_o)
        rows.append([label, str(len(sel)), f"{sum(e['bytes_in'] for e in e_o):,}", f"{ours:,}",
                     f"{s_o:.4f}", f"{pil:,}", f"{s_p:.4f}", f"{at:,.0f}{' (extrap.)' if extrap else ''}",
                     _pct(ours / at - 1), f"{t_o:.1f}", f"{t_p:.1f}", _x(t_o / t_p), str(kept)])
        # every view gets the target, the held-out ones too: a miss there is news, not noise
        targets.append([f"JPEG default ≥ {100 * JPEG_GAIN_TARGET:.0f} % fewer bytes than Pillow q80 at "
                        f"equal mean SSIM ({label})",
                        f"{100 * gain:.1f} % fewer (SSIM {s_o:.4f}; Pillow q80 {s_p:.4f})",
                        _met(gain >= JPEG_GAIN_TARGET)])
        if label.startswith("**all**"):
            targets.append([f"JPEG default ≤ {JPEG_TIME_TARGET:g}x Pillow q80 time ({label.replace('*', '')}, one process)",
                            _x(t_o / t_p), _met(t_o / t_p <= JPEG_TIME_TARGET)])
    text = ("Luma SSIM against the input as a viewer shows it (orientation applied, ICC profile "
            "converted to sRGB); Pillow q80 keeps the ICC profile. \"Pillow at equal SSIM\" "
            "interpolates Pillow's total bytes over its q75/q80/q85 encodes at pyimgopt's mean SSIM; "
            "the gain is against that. \"strip wins\" counts files where the default kept the lossless "
            "metadata strip instead of a re-encode.\n\n"
            + _t(["category", "files", "bytes in", "pyimgopt", "SSIM", "Pillow q80", "SSIM",
                  "Pillow at equal SSIM", "pyimgopt bytes vs that", "pyimgopt s", "Pillow s",
                  "time pyimgopt / Pillow", "strip wins"], rows))
    low = [c for c in full.values() if "lossless-only" in c
           and (c["pyimgopt"]["extra_info"].get("quality_estimate") or 101) <= 80]
    if low:
        lo_rows = []
        for label, pred in _views(JPEG_CATS):
            sel = [c for c in low if pred(c["pyimgopt"]["extra_info"])]
            if not sel:
                continue
            b_in = sum(c["pyimgopt"]["extra_info"]["bytes_in"] for c in sel)
            ll = sum(c["lossless-only"]["extra_info"]["bytes_out"] for c in sel)
            ours = sum(c["pyimgopt"]["extra_info"]["bytes_out"] for c in sel)
            reenc = [c for c in sel if c["pyimgopt"]["extra_info"]["ssim"] < 1.0]
            gain_re = sum(c["lossless-only"]["extra_info"]["bytes_out"] - c["pyimgopt"]["extra_info"]["bytes_out"]
                          for c in reenc)
            worst = min((c for c in reenc), default=None,
                        key=lambda c: c["lossless-only"]["extra_info"]["bytes_out"] - c["pyimgopt"]["extra_info"]["bytes_out"])
            lo_rows.append([label, str(len(sel)), f"{b_in:,}", f"{ll:,}", f"{ours:,}", _x(ours / ll),
                            f"{len(reenc)}",
                            f"{gain_re:,}" + (f" ({100 * gain_re / max(1, sum(c['lossless-only']['extra_info']['bytes_out'] for c in reenc)):.1f} %)" if reenc else ""),
                            "–" if not reenc else f"{statistics.fmean(c['pyimgopt']['extra_info']['ssim'] for c in reenc):.4f}",
                            "–" if worst is None else _short(worst["pyimgopt"]["extra_info"]["file"])])
        text += ("\n\nJPEGs already at or below q80 (IJG quality estimated from the luma table by "
                 "`broad_corpus.py`): the default against jpegoptim-style lossless-only optimisation "
                 "(metadata stripped but the ICC profile, mozjpeg's lossless pass). \"re-encoded\" = "
                 "files the default wrote at SSIM < 1, with the bytes that re-encode saved over the "
                 "lossless-only result and their mean SSIM.\n\n"
                 + _t(["category", "files", "bytes in", "lossless-only", "pyimgopt", "pyimgopt / lossless-only",
                       "re-encoded", "bytes saved by re-encoding", "their SSIM", "least-gain re-encode"], lo_rows))
    return text, targets


# --------------------------------------------------------------------------- check


def check_section(benches: list[dict[str, Any]]) -> tuple[str, list[list[str]]]:
    rows, bad = [], []
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for b in benches:
        e = b["extra_info"]
        if e["impl"] == "pyimgopt":
            by[e["kind"]].append(e)
    for kind in ("png", "jpeg", "webp", "gif"):
        es = by.get(kind, [])
        if not es:
            continue
        failed = [e for e in es if e.get("status") == "failed"]
        larger = [e for e in es if e["bytes_out"] > e["bytes_in"]]
        st = Counter(e.get("status") for e in es)
        rows.append([kind, str(len(es)), str(st.get("optimized", 0)), str(st.get("skipped", 0)),
                     str(len(failed)), str(len(larger)),
                     f"{sum(e['bytes_out'] for e in es) / sum(e['bytes_in'] for e in es):.1%}"])
        bad += [f"{_short(e['file'])} {e.get('error')}: {e.get('message', '')}" for e in failed]
        bad += [f"{_short(e['file'])} larger: {e['bytes_in']:,} → {e['bytes_out']:,}" for e in larger]
    text = ("Every file through `optimize_bytes` with the default settings.\n\n"
            + _t(["format", "files", "optimized", "skipped", "failed", "larger than input", "out / in"], rows))
    if bad:
        text += "\n\nProblems:\n\n" + "\n".join(f"- {x}" for x in bad)
    nfail = sum(int(r[4]) for r in rows)
    nlarge = sum(int(r[5]) for r in rows)
    targets = [["no default output larger than its input, none failed (broad corpus)",
                f"{nlarge} larger, {nfail} failed", _met(nlarge == 0 and nfail == 0)]]
    return text, targets


# --------------------------------------------------------------------------- profile


def profile_section(benches: list[dict[str, Any]]) -> tuple[str, list[list[str]]]:
    parts, targets = [], []
    keep = [dict(b["extra_info"], cpu=_med(b)) for b in benches if b["extra_info"]["kind"] == "keep"]
    cats = list(PNG_CATS + JPEG_CATS + ("webp", "gif"))
    if keep:
        rows = []
        for label, pred in [(c, lambda e, c=c: e["category"] == c) for c in cats] + [
                ("large ≥ 8 MP (again)", lambda e: e["large"]), ("**all**", lambda e: True)]:
            sel = [e for e in keep if pred(e)]
            if not sel:
                continue
            tot = sum(e["cpu"] for e in sel)
            st = {s: sum(e["stages"].get(s, 0.0) for e in sel) for s in STAGES}
            wall = sum(st.values()) or 1.0
            mp = sum(e["megapixels"] for e in sel)
            rows.append([label, str(len(sel)), f"{mp:.1f}", f"{tot:.1f}", f"{tot / mp:.2f}"]
                        + [f"{100 * st[s] / wall:.0f} %" for s in STAGES])
        parts.append("Default settings (`format=\"keep\"`), `optimize_file` to a temporary folder, every "
                     "file three times: CPU seconds (median per file, summed); the stage columns are "
                     "each `Result.stages` entry's share of the stage time (the pipeline's wall-clock "
                     "laps, median per file and stage). `encode` holds every encoder candidate, the "
                     "lossless-strip candidate and the pick.\n\n"
                     + _t(["category", "files", "MP", "CPU s", "CPU s / MP"] + list(STAGES), rows))
    auto = [dict(b["extra_info"], cpu=_med(b)) for b in benches if b["extra_info"]["kind"] == "auto"]
    if auto:
        kmap = {e["file"]: e for e in keep}
        rows = []
        cand_t: dict[str, list[float]] = defaultdict(lambda: [0.0, 0, 0, 0])
        probes, enc = [0, 0.0], {"fast": [0, 0.0], "final": [0, 0.0]}
        missing = set()
        for label, pred in [(c, lambda e, c=c: e["category"] == c) for c in cats] + [("**all**", lambda e: True)]:
            sel = [e for e in auto if pred(e) and e["file"] in kmap]
            if not sel:
                continue
            ta, tk = sum(e["cpu"] for e in sel), sum(kmap[e["file"]]["cpu"] for e in sel)
            ba, bk = sum(e["bytes_out"] for e in sel), sum(kmap[e["file"]]["bytes_out"] for e in sel)
            bi = sum(e["bytes_in"] for e in sel)
            chosen = Counter(e["format_out"] for e in sel)
            fails = sum(e["status"] == "failed" for e in sel)
            below = sum(1 for e in sel if e.get("ssim") is not None and e["ssim"] < 0.985 - 1e-9)
            rows.append([label, str(len(sel)), f"{tk:.1f}", f"{ta:.1f}", _x(ta / tk), f"{bk / bi:.1%}",
                         f"{ba / bi:.1%}", ", ".join(f"{k} {v}" for k, v in chosen.most_common()),
                         str(fails), str(below)])
            if label == "**all**":
                targets.append([f"`auto` ≤ {AUTO_TIME_TARGET:g}x the keep-format time (sample, one process)",
                                _x(ta / tk), _met(ta / tk <= AUTO_TIME_TARGET)])
                targets.append(["`auto` ≤ 0.30x the input bytes (sample)", f"{ba / bi:.2f}x", _met(ba / bi <= 0.30)])
                for e in sel:
                    for c in e.get("candidates", []):
                        key = f"{c['format']}{'-lossless' if c['lossless'] else ''}"
                        slot = cand_t[key]
                        slot[0] += c["seconds"]
                        slot[1] += 1
                        slot[2] += bool(c.get("won"))
                        slot[3] += c["bytes"] or 0
                    probes[0] += e["ssim_probes"][0]
                    probes[1] += e["ssim_probes"][1]
                    for k in enc:
                        enc[k][0] += e["search_encodes"][k][0]
                        enc[k][1] += e["search_encodes"][k][1]
                    missing.update(e.get("not_measured", []))
        parts.append("`format=\"auto\"` on the sample against the keep run of the same files (from the "
                     "table above); bytes as a share of the input; \"below target\" = outputs whose "
                     "reported SSIM is under 0.985.\n\n"
                     + _t(["category", "files", "keep CPU s", "auto CPU s", "auto / keep", "keep out/in",
                           "auto out/in", "auto chose", "failed", "below target"], rows))
        total_auto = sum(e["cpu"] for e in auto if e["file"] in kmap)
        crow = [[k, str(v[1]), f"{v[0]:.1f}", f"{100 * v[0] / total_auto:.0f} %", str(v[2])]
                for k, v in sorted(cand_t.items(), key=lambda kv: -kv[1][0])]
        parts.append("Inside `auto` (all sample files): each candidate format's search, from outside "
                     "(wrapped `pipeline._encode_one`, now `pipeline.choose.encode_one`), and the SSIM probes and encodes of the "
                     "quality search (wrapped `quality.measure` and `search.measure` / `search.encode`).\n\n"
                     + _t(["candidate", "searches", "CPU s", "share of auto CPU time", "won"], crow)
                     + f"\n\nSSIM probes: {probes[0]:,} taking {probes[1]:.1f} CPU s "
                     f"({100 * probes[1] / total_auto:.0f} % of auto time); quality-search encodes: "
                     f"{enc['fast'][0]:,} fast probes ({enc['fast'][1]:.1f} s), {enc['final'][0]:,} final "
                     f"({enc['final'][1]:.1f} s)."
                     + (f" Not measured (function missing): {', '.join(sorted(missing))}." if missing else ""))
    steps = [b for b in benches if b["extra_info"]["kind"] == "step"]
    if steps:
        parts.append(_steps_table(steps))
    return "\n\n".join(parts), targets


_STEP_LABELS = {
    "jpeg-effort4": ("JPEG table 8 (mozjpeg, no trellis)", "libjpeg-turbo q80, Annex K tables, at `effort=4` instead of the default"),
    "jpeg-effort7": ("JPEG scan search", "`effort=7` adds mozjpeg's scan search to the default encoder"),
    "jpeg-effort8": ("JPEG trellis + scan search", "`effort=8` adds trellis quantisation and the scan search (old default + search)"),
    "jpeg-lossless": ("JPEG lossless-strip candidate", "`lossless=True`: the strip + lossless pass alone"),
    "jpeg-420": ("JPEG 4:4:4 check", "`chroma_subsampling=\"4:2:0\"`: no check, always 4:2:0"),
    "jpeg-keepmeta": ("JPEG lossless-strip candidate (time)",
                      "`keep_metadata=True`: the default without the strip candidate (bytes include metadata)"),
    "png-effort0": ("PNG oxipng (all of it)", "`effort=0`: Pillow alone, no oxipng"),
    "png-effort4": ("PNG plan vs the libdeflate-5 preset", "`effort=4`: level-2 filters with libdeflate 5"),
    "png-effort8": ("PNG effort 8", "`effort=8`: libdeflate 12 on large PNGs, every filter on small ones"),
}


def _steps_table(steps: list[dict[str, Any]]) -> str:
    by: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for b in steps:
        by[b["extra_info"]["file"]][b["extra_info"]["impl"]] = b
    rows = []
    for impl, (step, how) in _STEP_LABELS.items():
        fmt = impl.split("-")[0]
        base = f"{fmt}-default"
        sel = [v for v in by.values() if impl in v and base in v]
        if not sel:
            continue
        bd = sum(v[base]["extra_info"]["bytes_out"] for v in sel)
        bv = sum(v[impl]["extra_info"]["bytes_out"] for v in sel)
        td = sum(_med(v[base]) for v in sel)
        tv = sum(_med(v[impl]) for v in sel)
        ssim = ""
        if fmt == "jpeg":
            sd = statistics.fmean(v[base]["extra_info"]["ssim"] for v in sel)
            sv = statistics.fmean(v[impl]["extra_info"]["ssim"] for v in sel)
            ssim = f"{sv:.4f} vs {sd:.4f}"
        changed = sum(v[impl]["extra_info"]["bytes_out"] != v[base]["extra_info"]["bytes_out"] for v in sel)
        rows.append([step, how, str(len(sel)), str(changed), f"{bv:,} vs {bd:,}", _pct(bv / bd - 1),
                     f"{tv:.1f} vs {td:.1f}", _pct(tv / td - 1), ssim or "–"])
    return ("Step prices on the sample: each variant run beside the default on the same files "
            "(`optimize_bytes`, median of three rounds). Bytes and seconds of the variant vs the default; a "
            "negative bytes change means the variant writes less; \"changed\" = files whose "
            "output size differs.\n\n"
            + _t(["step", "variant (vs default)", "files", "changed", "bytes", "bytes change",
                  "seconds", "time change", "mean SSIM (variant vs default)"], rows, "llrrrrrrr"))


# --------------------------------------------------------------------------- all


def corpus_section() -> str:
    """The corpus summary from its manifest (if the corpus is on this machine)."""
    import sys

    here = pathlib.Path(__file__).resolve().parent
    sys.path.insert(0, str(here))
    try:
        import broad_corpus
    finally:
        sys.path.pop(0)
    dest = broad_corpus.dest_dir(os.environ.get(broad_corpus.ENV_DEST))
    man = dest / broad_corpus.MANIFEST
    if not man.is_file():
        return "Corpus summary: not available on this machine (no manifest)."
    doc = json.loads(man.read_text())
    return broad_corpus.summary(doc["images"], doc["packages"])


def render(benches: list[dict[str, Any]], header: str) -> str:
    """All broad-corpus tables, or a note when the runs hold none."""
    broad = [b for b in benches if b["extra_info"].get("suite") == "broad"]
    stages = [b for b in benches if b["extra_info"].get("suite") == "stages"]
    parts, targets = [header, "#### The corpus", corpus_section()], []
    png = [b for b in broad if b["extra_info"]["kind"] == "png"]
    jpeg = [b for b in broad if b["extra_info"]["kind"] == "jpeg"]
    if png:
        text, t = png_section(png)
        parts += ["#### PNG per category", text]
        targets += t
    if jpeg:
        text, t = jpeg_section(jpeg)
        parts += ["#### JPEG per category", text]
        targets += t
    if broad:
        text, t = check_section(broad)
        parts += ["#### Default outputs: never larger, never failed", text]
        targets += t
    if stages:
        text, t = profile_section(stages)
        parts += ["#### Where the time goes (per-stage profile and step prices)", text]
        targets += t
    parts += ["#### Targets on the broad corpus", _t(["target", "measured", "status"], targets, "lll")]
    return "\n\n".join(parts) + "\n"
