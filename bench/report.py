"""Turn a pytest-benchmark JSON file (``--benchmark-json``) from the suites in
``bench/`` into the markdown tables of ``bench/README.md``.

Usage::

    python bench/report.py .benchmarks/bench.json                      # print the tables
    python bench/report.py .benchmarks/bench.json --update bench/README.md
    python bench/report.py .benchmarks/bench.json .benchmarks/pool.json    # several runs, merged

``--update`` replaces what lies between the ``<!-- report:begin -->`` and
``<!-- report:end -->`` lines of that file, and nothing else; the benchmarks
of the broad-corpus suites (``bench_broad.py``, ``bench_stages.py``) go
between ``<!-- broad:begin -->`` and ``<!-- broad:end -->`` instead
(``report_broad.py``), so either kind of run updates only its own tables. Rows are read
from each benchmark's ``extra_info`` (``suite``, ``impl``, ...), not parsed
from test names, so new parameters (a format case, a target size) show up
without changes here. Only the standard library is used.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
from collections import defaultdict
from typing import Any

BEGIN = "<!-- report:begin -->"
END = "<!-- report:end -->"

#: Targets from the project issue.
RESIZE_TARGET = 8.0  # pyimgopt native MP/s >= 8x Pillow's, lanczos3 and bicubic, one thread (issue 16)
SHARP_TARGET = 1.5  # sharp task: pyimgopt >= 1.5x as fast as pyvips (both one thread)
POOL_VS_INPROCESS = 1.8  # pool of 2 sidecars >= 1.8x optimize_file in a loop
POOL_VS_PILLOW = 3.0  # pool of 2 sidecars >= 3x a naive Pillow loop
DISPATCH_MS = 2.0  # dispatch overhead < 2 ms per job (pool of 1 minus in-process)
RSS_FLAT_PCT = 15.0  # a sidecar's RSS after 2,000 jobs within +-15 % of after 200

RESIZE_IMPLS = [
    ("native", "pyimgopt native"),
    ("pillow", "Pillow"),
    ("pillow-simd", "Pillow-SIMD"),
    ("pure", "pyimgopt pure"),
]
PIPELINE_IMPLS = [
    ("pyimgopt", "pyimgopt `optimize_bytes` (default effort 6: mozjpeg table 8, no trellis)"),
    ("pyimgopt-effort4", "pyimgopt `optimize_bytes`, `effort=4` (libjpeg-turbo)"),
    ("pillow", "Pillow plain"),
    ("pillow-draft", "Pillow + `draft`"),
    ("pyvips", "pyvips `thumbnail_buffer`"),
]


def _ms(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds * 1e3:.1f}"


def _ratio(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}x"


def _met(value: float | None, target: float) -> str:
    if value is None:
        return "not measured"
    return "**met**" if value >= target else "not met"


def _table(header: list[str], rows: list[list[str]], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _median(b: dict[str, Any]) -> float:
    return float(b["stats"]["median"])


def header(data: dict[str, Any]) -> str:
    m = data.get("machine_info", {})
    cpu = m.get("cpu", {})
    v = m.get("bench_versions", {})
    commit = data.get("commit_info", {})
    rounds = sorted({b["stats"]["rounds"] for b in data["benchmarks"]})
    sources = sorted({b["extra_info"].get("source") for b in data["benchmarks"]} - {None})
    dirty = " (with uncommitted changes)" if commit.get("dirty") else ""
    return "\n".join(
        [
            f"Run {data.get('datetime', '?')[:19]} UTC on commit "
            f"`{str(commit.get('id', '?'))[:10]}`{dirty}; "
            f"{cpu.get('brand_raw', '?')}, {cpu.get('count', '?')} cores, "
            f"Python {m.get('python_version', '?')}, Pillow {v.get('pillow', '?')}, "
            f"NumPy {v.get('numpy', '?')}, pyvips {v.get('pyvips') or 'not installed'}"
            f" (libvips {v.get('libvips', '–')}, VIPS_CONCURRENCY={v.get('VIPS_CONCURRENCY')}). "
            f"Rounds per benchmark: {', '.join(map(str, rounds))}; "
            f"source image: {', '.join(sources) or '?'}.",
        ]
    )


def resize_section(benches: list[dict[str, Any]]) -> tuple[str, dict[str, float | None]]:
    cells: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = defaultdict(dict)
    for b in benches:
        e = b["extra_info"]
        cells[(e["filter"], e["mode"], e["target"])][e["impl"]] = b
    rows = []
    worst: dict[str, float | None] = {}
    for (filt, mode, target), by_impl in sorted(
        cells.items(), key=lambda kv: (kv[0][0] != "lanczos3", kv[0][0], kv[0][1], kv[0][2])
    ):
        # Pillow-SIMD runs in its own interpreter: its own timing of the
        # resize call, not the round trip through the pipe.
        med = {
            impl: statistics.median(b["extra_info"]["inner_seconds"])
            if b.get("extra_info", {}).get("inner_seconds")
            else _median(b)
            for impl, b in by_impl.items()
        }
        mpix = {impl: b["extra_info"].get("mpix_per_s") for impl, b in by_impl.items()}
        speedup = med["pillow"] / med["native"] if med.get("native") and med.get("pillow") else None
        if speedup is not None:
            prev = worst.get(filt)
            worst[filt] = speedup if prev is None else min(prev, speedup)
        else:
            worst.setdefault(filt, None)
        rows.append(
            [filt, mode, f"→ {target}"]
            + [_ms(med.get(impl)) for impl, _ in RESIZE_IMPLS]
            + [
                str(mpix.get("native", "–")),
                str(mpix.get("pillow", "–")),
                _ratio(speedup),
                _ratio(med["pillow-simd"] / med["native"])
                if med.get("pillow-simd") and med.get("native")
                else "–",
                _ratio(med["pillow"] / med["pillow-simd"])
                if med.get("pillow-simd") and med.get("pillow")
                else "–",
                _ratio(med["pillow"] / med["pure"])
                if med.get("pure") and med.get("pillow")
                else "–",
            ]
        )
    head = (
        ["filter", "mode", "2725x2225"]
        + [f"{label} ms" for _, label in RESIZE_IMPLS]
        + ["native MP/s", "Pillow MP/s", "native vs Pillow", "native vs Pillow-SIMD",
           "Pillow-SIMD vs Pillow", "pure vs Pillow"]
    )
    text = (
        "Median milliseconds per call; MP/s = source megapixels (6.06) / median seconds; "
        '"A vs B" = B median / A median (above 1 = A is faster). Pillow-SIMD runs in its own '
        "interpreter and times its own `Image.resize` calls (– when it is not built).\n\n"
        + _table(head, rows, "lll" + "r" * (len(head) - 3))
    )
    return text, worst


def pipeline_section(benches: list[dict[str, Any]]) -> tuple[str, float | None]:
    by_impl = {b["extra_info"]["impl"]: b for b in benches}
    ours = by_impl.get("pyimgopt")
    rows = []
    for impl, label in PIPELINE_IMPLS:
        b = by_impl.get(impl)
        if b is None:
            rows.append([label, "skipped", "–", "–", "–", "–"])
            continue
        rel = _median(b) / _median(ours) if ours else None
        ssim = b["extra_info"].get("ssim_vs_full")
        rows.append(
            [
                label,
                _ms(_median(b)),
                str(b["extra_info"].get("mpix_per_s", "–")),
                f"{b['extra_info'].get('bytes_out', 0):,}",
                "–" if ssim is None else f"{ssim:.4f}",
                _ratio(rel),
            ]
        )
    vs_vips = _median(by_impl["pyvips"]) / _median(ours) if ours and "pyvips" in by_impl else None
    fast = by_impl.get("pyimgopt-effort4")
    if fast is not None and "pyvips" in by_impl:
        vs_vips = (vs_vips, _median(by_impl["pyvips"]) / _median(fast))
    text = (
        "Median milliseconds per image (bytes in → bytes out, one thread each); "
        '"pyimgopt speed-up" = contender median / pyimgopt median '
        '(above 1 = pyimgopt is faster); "SSIM" = luma SSIM of the output against the '
        "source decoded at full size and resized with Pillow's LANCZOS (no DCT shrink).\n\n"
        + _table(["contender", "median ms", "MP/s", "bytes out", "SSIM", "pyimgopt speed-up"], rows)
    )
    return text, vs_vips


def formats_section(benches: list[dict[str, Any]]) -> str:
    cases: list[str] = []
    grid: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for b in benches:
        e = b["extra_info"]
        if e["case"] not in cases:
            cases.append(e["case"])
        grid[e["image"]][e["case"]] = b
    rows = []
    for image, by_case in grid.items():
        bytes_in = next(iter(by_case.values()))["extra_info"]["bytes_in"]
        row = [f"`{image}`", f"{bytes_in:,}"]
        for case in cases:
            b = by_case.get(case)
            if b is None:
                row.append("–")
                continue
            e = b["extra_info"]
            out = e["bytes_out"]
            status = "" if e.get("status") == "optimized" else f" ({e.get('status')})"
            ssim = f" · SSIM {e['ssim']:.3f}" if e.get("ssim") is not None else ""
            row.append(f"{out:,} ({100 * out / bytes_in:.0f} %) · {_ms(_median(b))} ms{ssim}{status}")
        rows.append(row)
    return (
        "pyimgopt default settings but for the output format; bytes out "
        "(percent of input) · median milliseconds · luma SSIM of the output against the "
        "decoded input (target 0.985 for the `ssim` and `auto` columns).\n\n"
        + _table(["image", "bytes in"] + cases, rows)
    )


def pool_section(benches: list[dict[str, Any]]) -> tuple[str, list[list[str]]]:
    by_kind: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for b in benches:
        by_kind[b["extra_info"]["kind"]][b["extra_info"]["impl"]] = b
    runs = sorted({b.get("run", "?") for b in benches})
    parts: list[str] = [f"Measured in the run of {', '.join(runs)} UTC."]
    targets: list[list[str]] = []

    tp = by_kind.get("throughput", {})
    med = {impl: _median(b) for impl, b in tp.items()}
    if tp:
        pools = sorted((i for i in tp if i.startswith("pool-")), key=lambda i: int(i[5:]))
        labels = {
            "pillow": "Pillow loop (open, `thumbnail`, save)",
            "inprocess": "`optimize_file` loop",
        }
        rows = []
        for impl in [i for i in ("pillow", "inprocess") if i in tp] + pools:
            e = tp[impl]["extra_info"]
            label = (
                labels.get(impl) or f"pool, {e['workers']} sidecar{'s' if e['workers'] > 1 else ''}"
            )
            out = e.get("bytes_out")
            rows.append(
                [
                    label,
                    f"{med[impl]:.2f}",
                    f"{e['images'] / med[impl]:.1f}",
                    "–" if out is None else f"{out:,}",
                    _ratio(med["inprocess"] / med[impl]) if "inprocess" in med else "–",
                    _ratio(med["pillow"] / med[impl]) if "pillow" in med else "–",
                ]
            )
        e = next(iter(tp.values()))["extra_info"]
        parts.append(
            f"The whole corpus ({e['images']} files, {e['bytes_in']:,} bytes) fit inside "
            "1600x1600 per round; median seconds per round; submit + wait for the pools "
            "(started outside the timed region). Speed-ups = other median / this median.\n\n"
            + _table(
                [
                    "contender",
                    "median s",
                    "images/s",
                    "bytes out",
                    "vs `optimize_file` loop",
                    "vs Pillow loop",
                ],
                rows,
            )
        )
    two = med.get("pool-2")
    vs_in = med["inprocess"] / two if two and "inprocess" in med else None
    vs_pil = med["pillow"] / two if two and "pillow" in med else None
    targets += [
        [
            f"pool of 2 ≥ {POOL_VS_INPROCESS:g}x `optimize_file` loop",
            _ratio(vs_in),
            _met(vs_in, POOL_VS_INPROCESS),
        ],
        [
            f"pool of 2 ≥ {POOL_VS_PILLOW:g}x naive Pillow loop",
            _ratio(vs_pil),
            _met(vs_pil, POOL_VS_PILLOW),
        ],
    ]

    dp = by_kind.get("dispatch", {})
    overhead = None
    if dp:
        rows = []
        for impl, label in (("inprocess", "`optimize_file` loop"), ("pool-1", "pool, 1 sidecar")):
            if impl in dp:
                n = dp[impl]["extra_info"]["images"]
                rows.append([label, _ms(_median(dp[impl])), f"{_median(dp[impl]) / n * 1e3:.2f}"])
        if "inprocess" in dp and "pool-1" in dp:
            n = dp["pool-1"]["extra_info"]["images"]
            overhead = (_median(dp["pool-1"]) - _median(dp["inprocess"])) / n * 1e3
        parts.append(
            f"{n} 1x1 PNGs per round; the dispatch overhead is the pool's time per job minus "
            "the in-process time per job.\n\n"
            + _table(["contender", "median ms per round", "ms per job"], rows)
            + ("" if overhead is None else f"\n\nDispatch overhead: **{overhead:.2f} ms per job**.")
        )
    targets.append(
        [
            f"dispatch overhead < {DISPATCH_MS:g} ms per job",
            "–" if overhead is None else f"{overhead:.2f} ms",
            "not measured"
            if overhead is None
            else ("**met**" if overhead < DISPATCH_MS else "not met"),
        ]
    )

    mem = by_kind.get("memory", {}).get("pool-1")
    change = None
    if mem:
        e = mem["extra_info"]
        change = e["rss_change_pct"]
        parts.append(
            f"One sidecar, never recycled, serves {e['images']:,} small images (64-160 px JPEG, "
            f"PNG, WebP); RSS from `/proc/PID/statm`.\n\n"
            + _table(
                [
                    f"RSS after {e['first_images']}",
                    f"RSS after {e['images']:,}",
                    "change",
                    f"median s for the last {e['images'] - e['first_images']:,}",
                ],
                [
                    [
                        f"{e['rss_after_first'] / 2**20:.1f} MiB",
                        f"{e['rss_after_all'] / 2**20:.1f} MiB",
                        f"{change:+.1f} %",
                        f"{_median(mem):.2f}",
                    ]
                ],
                "rrrr",
            )
        )
    targets.append(
        [
            f"sidecar RSS flat within ±{RSS_FLAT_PCT:g} % (200 → 2,000 images)",
            "–" if change is None else f"{change:+.1f} %",
            "not measured"
            if change is None
            else ("**met**" if abs(change) <= RSS_FLAT_PCT else "not met"),
        ]
    )
    return "\n\n".join(parts), targets


def encoders_section(benches: list[dict[str, Any]]) -> tuple[str, list[list[str]]]:
    """Totals per contender for PNG and JPEG, lossless JPEG mode, and their targets."""
    by: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for b in benches:
        e = b["extra_info"]
        by[(e["kind"], e["impl"])].append(b)
    rows, targets = [], []
    totals: dict[tuple[str, str], int] = {}
    for (kind, impl), group in sorted(by.items()):
        bytes_in = sum(b["extra_info"]["bytes_in"] for b in group)
        bytes_out = sum(b["extra_info"]["bytes_out"] for b in group)
        totals[(kind, impl)] = bytes_out
        ssims = [b["extra_info"]["ssim"] for b in group if b["extra_info"].get("ssim") is not None]
        secs = sum(_median(b) for b in group)
        rows.append([kind, impl, str(len(group)), f"{bytes_in:,}", f"{bytes_out:,}",
                     f"{100 * bytes_out / bytes_in:.1f} %", f"{secs:.2f}",
                     f"{sum(ssims) / len(ssims):.4f}" if ssims else "–"])
    text = _table(["kind", "contender", "files", "bytes in", "bytes out", "out/in", "seconds (sum)",
                   "mean luma SSIM"], rows, "llrrrrrr")
    png_ours, png_opt = totals.get(("png", "pyimgopt")), totals.get(("png", "pillow-optimize"))
    if png_ours and png_opt:
        gain = 1 - png_ours / png_opt
        targets.append(["PNG lossless ≥ 10 % smaller than Pillow optimize=True (total)",
                        f"{100 * gain:.1f} % smaller", "**met**" if gain >= 0.10 else "not met"])
        t_ours = sum(_median(b) for b in by[("png", "pyimgopt")])
        t_opt = sum(_median(b) for b in by[("png", "pillow-optimize")])
        speed = t_opt / t_ours if t_ours else None
        targets.append([
            "PNG default path ≥ 2x faster than Pillow optimize=True at no more bytes (total)",
            f"{_ratio(speed)} ({t_ours:.2f} s vs {t_opt:.2f} s), {100 * gain:.1f} % fewer bytes",
            "**met**" if speed is not None and speed >= 2.0 and gain >= 0 else "not met"])

    def mean_ssim(impl: str) -> float:
        vals = [b["extra_info"]["ssim"] for b in by[("jpeg", impl)]]
        return sum(vals) / len(vals)

    j_opt = totals.get(("jpeg", "pillow-optimize"))
    ours_impl = "pyimgopt-encoder" if ("jpeg", "pyimgopt-encoder") in totals else "pyimgopt"
    j_ours = totals.get(("jpeg", ours_impl))
    if j_ours and j_opt:
        gain = 1 - j_ours / j_opt
        d_ssim = mean_ssim(ours_impl) - mean_ssim("pillow-optimize")
        equal = d_ssim >= 0  # at least Pillow's mean SSIM: no bytes bought with quality
        t_ours = sum(_median(b) for b in by[("jpeg", ours_impl)])
        t_opt = sum(_median(b) for b in by[("jpeg", "pillow-optimize")])
        targets.append([
            "JPEG ≥ 5 % smaller than Pillow optimize+progressive at equal mean SSIM",
            f"`{ours_impl}` {100 * gain:.1f} % smaller at q80, mean SSIM {d_ssim:+.4f} vs Pillow; "
            f"encode time {t_ours / t_opt:.1f}x Pillow's",
            "**met**" if gain >= 0.05 and equal else
            ("not met (smaller, but at lower mean SSIM)" if gain >= 0.05 else "not met"),
        ])
    lossless = by.get(("jpeg-lossless", "pyimgopt"), [])
    if lossless:
        worst = min(1 - b["extra_info"]["bytes_out"] / b["extra_info"]["bytes_in"] for b in lossless)
        same = all(b["extra_info"].get("identical") for b in lossless)
        targets.append(["lossless JPEG mode ≥ 3 % smaller than each camera JPEG, pixels identical",
                        f"worst {100 * worst:.1f} % smaller; identical: {same}",
                        "**met**" if worst >= 0.03 and same else "not met"])
    return text, targets


def render(data: dict[str, Any]) -> str:
    suites: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for b in data["benchmarks"]:
        suites[b["extra_info"].get("suite", "other")].append(b)
    parts = [header(data)]
    worst: dict[str, float | None] = {}
    vs_vips = None
    if suites["resize"]:
        text, worst = resize_section(suites["resize"])
        parts += ["### Resize", text]
    if suites["pipeline"]:
        text, vs_vips = pipeline_section(suites["pipeline"])
        parts += ["### The sharp task: JPEG 2725x2225 → 720x588 lanczos3 → JPEG q80", text]
    if suites["formats"]:
        parts += ["### Bytes per format (corpus images)", formats_section(suites["formats"])]
    else:
        parts += ["### Bytes per format (corpus images)", "Skipped: no corpus."]
    targets = [
        [
            f"resize {filt}: native ≥ {RESIZE_TARGET:g}x Pillow MP/s, one thread",
            _ratio(worst.get(filt))
            + (" (worst case over modes and sizes)" if worst.get(filt) is not None else ""),
            _met(worst.get(filt), RESIZE_TARGET),
        ]
        for filt in ("lanczos3", "bicubic")
    ]
    default_vs, fast_vs = vs_vips if isinstance(vs_vips, tuple) else (vs_vips, None)
    targets.append(
        [
            f"sharp task: pyimgopt ≥ {SHARP_TARGET:g}x pyvips (VIPS_CONCURRENCY=1)",
            _ratio(default_vs) + " at the default effort"
            + (f"; {_ratio(fast_vs)} at `effort=4`" if fast_vs is not None else ""),
            _met(max(v for v in (default_vs, fast_vs) if v is not None)
                 if default_vs is not None else None, SHARP_TARGET),
        ]
    )
    if suites["pool"]:
        text, pool_targets = pool_section(suites["pool"])
        parts += ["### Sidecar pool", text]
        targets += pool_targets
    if suites["encoders"]:
        text, enc_targets = encoders_section(suites["encoders"])
        parts += ["### Encoders (corpus, one round each)", text]
        targets += enc_targets
    parts += [
        "### Targets",
        _table(["target (project issue)", "measured", "status"], targets, "lll"),
    ]
    return "\n\n".join(parts) + "\n"


def update(path: pathlib.Path, tables: str, begin: str = BEGIN, end: str = END) -> None:
    text = path.read_text(encoding="utf-8")
    try:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
    except ValueError:
        sys.exit(f"{path}: expected one {begin!r} line and one {end!r} line after it")
    path.write_text(f"{head}{begin}\n\n{tables}\n{end}{tail}", encoding="utf-8")


def broad_header(data: dict[str, Any]) -> str:
    """The run line of the broad-corpus tables."""
    m = data.get("machine_info", {})
    v = m.get("bench_versions", {})
    commit = data.get("commit_info", {})
    dirty = " (with uncommitted changes)" if commit.get("dirty") else ""
    runs = sorted({b.get("run", "?") for b in data["benchmarks"]})
    return (f"Runs of {', '.join(runs)} UTC on commit `{str(commit.get('id', '?'))[:10]}`{dirty}; "
            f"{m.get('cpu', {}).get('brand_raw', '?')}, a **shared 2-core VM** (other jobs were "
            f"running: read ratios between contenders of the same run, not absolute seconds); "
            f"Python {m.get('python_version', '?')}, Pillow {v.get('pillow', '?')}, "
            f"pyvips {v.get('pyvips') or '–'}; one codec thread for every contender.")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "json",
        type=pathlib.Path,
        nargs="+",
        help="pytest-benchmark --benchmark-json files (several: their benchmarks are merged; "
        "the first gives the machine and commit)",
    )
    parser.add_argument(
        "--update",
        type=pathlib.Path,
        metavar="MARKDOWN",
        help=f"replace the text between {BEGIN} and {END} in this file instead of printing",
    )
    args = parser.parse_args(argv)
    runs = [json.loads(p.read_text(encoding="utf-8")) for p in args.json]
    for r in runs:  # which run each benchmark came from, for sections measured apart
        for b in r["benchmarks"]:
            b.setdefault("run", str(r.get("datetime", "?"))[:19])
    data = {**runs[0], "benchmarks": [b for r in runs for b in r["benchmarks"]]}
    broad_suites = ("broad", "stages")
    main_benches = [b for b in data["benchmarks"]
                    if b["extra_info"].get("suite") not in broad_suites]
    broad_benches = [b for b in data["benchmarks"] if b["extra_info"].get("suite") in broad_suites]
    out: list[tuple[str, str, str]] = []
    if main_benches or not broad_benches:
        out.append((render({**data, "benchmarks": main_benches}), BEGIN, END))
    if broad_benches:
        import report_broad

        text = report_broad.render(broad_benches, broad_header({**data, "benchmarks": broad_benches}))
        out.append((text, report_broad.BEGIN, report_broad.END))
    for tables, begin, end in out:
        if args.update:
            update(args.update, tables, begin, end)
        else:
            sys.stdout.write(tables)


if __name__ == "__main__":
    main()
