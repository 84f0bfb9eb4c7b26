"""Where the time goes: a per-stage profile of the default settings on the broad corpus,
and the price (seconds and bytes) of each optional step.

All in this one process with one codec thread (``bench/conftest.py``); run
with ``--benchmark-timer=time.process_time`` (CPU seconds of this process:
on the shared machine wall-clock times of one file varied 1-4x between runs,
CPU time far less). The pipeline is not changed to be measured:

- ``keep``: ``optimize_file`` with default settings on every file of the
  corpus, writing to a temporary folder; ``Result.stages`` (read, probe,
  decode, resize, encode, write; the pipeline's wall-clock laps, median of
  three rounds per stage) is recorded per file, beside the CPU seconds of the
  whole call (median of three rounds). ``encode`` holds every encoder
  candidate, the lossless-strip candidate and the pick.
- ``auto``: ``Settings(format="auto")`` on the deterministic sample of
  :func:`_broad.sample` (one round), with the stages, plus what happens inside ``encode``,
  seen from outside by wrapping three pipeline functions for the duration of
  the call: each candidate format (``pipeline.choose.encode_one``, before the
  pipeline split ``pipeline._encode_one``: CPU seconds, bytes,
  SSIM, whether it won), each SSIM probe (``quality.measure`` and, since
  the search has its own module, ``search.measure``: count and seconds) and
  each probe/final encode of the quality search (``search.encode``, before
  ``quality.encode``: count and seconds). Where a function is missing (the
  pipeline moved on), that part is reported as not measured.
- step prices, on the same sample, each a variant of the settings run beside
  the default on the same file (three rounds each, median), its bytes, seconds and SSIM (against the
  input as a viewer shows it) compared with the default's:

  ===================  ===================================================
  variant              the step it prices
  ===================  ===================================================
  jpeg ``effort=4``    table 8: libjpeg-turbo q80 with Pillow's Annex K
                       tables, against the default's mozjpeg table 8
                       (before issue 17: against mozjpeg's trellis)
  jpeg ``effort=7``    mozjpeg's progressive scan search (added at 7)
  jpeg ``effort=8``    trellis quantisation (added at 8, with the search;
                       compare with ``effort=7`` for trellis alone)
  jpeg ``lossless``    the lossless-strip candidate alone (metadata strip +
                       mozjpeg's lossless pass), which the default also
                       computes for a JPEG kept as JPEG
  jpeg ``4:2:0``       the 4:4:4 check (``chroma_subsampling="4:2:0"``
                       skips it; the bytes differ where it chose 4:4:4)
  jpeg ``keep_meta``   the lossless-strip candidate's *time* inside the
                       default: with ``keep_metadata=True`` the default
                       skips it (its bytes then include the metadata)
  png ``effort`` 0/4/8 oxipng's presets around the default's 6 (0: Pillow
                       alone, no oxipng); 9 is in ``bench_broad.py``
  ===================  ===================================================

Run (about 25 min on the shared 2-core VM)::

    PYIMGOPT_BENCH_BROAD=1 .venv/bin/python -m pytest bench/bench_stages.py -o python_files='bench_*.py' \\
        --benchmark-only --benchmark-timer=time.process_time -p no:cacheprovider -q \\
        --benchmark-json=.benchmarks/stages.json
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time

import pytest
from _broad import BROAD, entries, ident, luma_ssim, read, sample, skip_reason, viewer_rgb

import pyimgopt
from pyimgopt import Settings

#: Rounds of the keep profile per file (median); auto runs once per file.
KEEP_ROUNDS = 3
ALL = entries()
SAMPLE = sample(ALL)
SAMPLE_FILES = {e["file"] for e in SAMPLE}

JPEG_VARIANTS = {
    "default": Settings(),
    "effort4": Settings(effort=4),
    "effort7": Settings(effort=7),
    "effort8": Settings(effort=8),
    "lossless": Settings(lossless=True),
    "420": Settings(chroma_subsampling="4:2:0"),
    "keepmeta": Settings(keep_metadata=True),
}
PNG_VARIANTS = {
    "default": Settings(),
    "effort0": Settings(effort=0),
    "effort4": Settings(effort=4),
    "effort8": Settings(effort=8),
}


@pytest.fixture(scope="module")
def outdir(tmp_path_factory):
    return tmp_path_factory.mktemp("stages")


def _run_file(e: dict, settings: Settings, outdir) -> pyimgopt.Result:
    src = BROAD / e["file"]
    dst = outdir / os.path.basename(e["file"])
    res = pyimgopt.optimize_file(src, dst, settings)
    if res.output and os.path.exists(res.output):
        os.unlink(res.output)
    return res


def _record(benchmark, e: dict, res: pyimgopt.Result, **extra) -> None:
    benchmark.extra_info.update(
        suite="stages", file=e["file"], category=e["category"], large=e["large"],
        megapixels=e["megapixels"], bytes_in=res.bytes_in or e["bytes"],
        bytes_out=res.bytes_out if res.bytes_out is not None else e["bytes"],
        status=res.status, error=None if res.error is None else res.error.code,
        format_out=res.format_out, stages=dict(res.stages), seconds=res.seconds,
        notes=list(res.notes), **extra)


def _params(items, variants=("-",)):
    out = [pytest.param(e, v, id=f"{ident(e)}-{v}") for e in items for v in variants]
    return out or [pytest.param(None, "-", id="no-corpus")]


@pytest.mark.parametrize("e, variant", _params(ALL, ("keep",)))
def test_keep(benchmark, outdir, e, variant):
    if e is None:
        pytest.skip(skip_reason())
    benchmark.group = f"stages keep {ident(e)}"
    results: list[pyimgopt.Result] = []

    def run():
        res = _run_file(e, Settings(), outdir)
        results.append(res)
        return res

    res = benchmark.pedantic(run, rounds=KEEP_ROUNDS, iterations=1)
    _record(benchmark, e, res, kind="keep", impl="keep", sample=e["file"] in SAMPLE_FILES)
    # Stage times are the pipeline's own wall-clock laps: the median per stage
    # over the rounds, so one stalled round (the machine is shared) does not
    # decide a share.
    benchmark.extra_info["stages"] = {
        stage: statistics.median(r.stages.get(stage, 0.0) for r in results)
        for stage in {k for r in results for k in r.stages}}


class _Probe:
    """Wraps pipeline functions for one call, from outside, and restores them."""

    def __init__(self) -> None:
        self.candidates: list[dict] = []
        self.measure = [0, 0.0]
        self.encodes = {"fast": [0, 0.0], "final": [0, 0.0]}
        self.missing: list[str] = []

    @contextlib.contextmanager
    def installed(self):
        import importlib

        import pyimgopt.pipeline as pipe
        from pyimgopt.pipeline import quality

        try:  # where format="auto" looks its per-format step up (pipeline split or not)
            chooser, chooser_name = importlib.import_module("pyimgopt.pipeline.choose"), "encode_one"
        except ImportError:
            chooser, chooser_name = pipe, "_encode_one"

        saved = []

        def wrap(mod, name, make):
            orig = getattr(mod, name, None)
            if orig is None:
                self.missing.append(f"{mod.__name__}.{name}")
                return
            saved.append((mod, name, orig))
            setattr(mod, name, make(orig))

        def encode_one(orig):
            def inner(*args, **kwargs):
                t = time.process_time()
                cand = orig(*args, **kwargs)
                enc = getattr(cand, "encoded", None)
                self.candidates.append({
                    "format": getattr(enc, "format", args[1] if len(args) > 1 else "?"),
                    "lossless": bool(getattr(enc, "lossless", False)),
                    "seconds": time.process_time() - t,
                    "bytes": len(enc.data) if enc is not None else None,
                    "ssim": getattr(cand, "ssim", None)})
                return cand
            return inner

        def measure(orig):
            def inner(*args, **kwargs):
                t = time.process_time()
                try:
                    return orig(*args, **kwargs)
                finally:
                    self.measure[0] += 1
                    self.measure[1] += time.process_time() - t
            return inner

        def q_encode(orig):
            def inner(*args, **kwargs):
                t = time.process_time()
                try:
                    return orig(*args, **kwargs)
                finally:
                    slot = self.encodes["fast" if kwargs.get("fast") else "final"]
                    slot[0] += 1
                    slot[1] += time.process_time() - t
            return inner

        depth = [0]
        planned: dict[str, float] = {}

        def plan_target(orig):  # the proxy search of a ranked format (pipeline after issue 17)
            def inner(*args, **kwargs):
                t = time.process_time()
                plan = orig(*args, **kwargs)
                planned[plan.fmt] = planned.get(plan.fmt, 0.0) + time.process_time() - t
                if depth[0] == 0 and getattr(plan, "proxy_bytes", None) is not None:
                    self.candidates.append({"format": plan.fmt, "lossless": False, "seconds": 0.0,
                                            "bytes": None, "ssim": None, "ranked_out": True})
                return plan
            return inner

        def confirm_target(orig):  # its full-size encode, when best_auto calls it directly
            def inner(*args, **kwargs):
                t = time.process_time()
                cand = orig(*args, **kwargs)
                if depth[0] == 0:
                    fmt = cand.encoded.format
                    for c in self.candidates:  # the plan's placeholder becomes the candidate
                        if c.get("ranked_out") and c["format"] == fmt:
                            self.candidates.remove(c)
                            break
                    self.candidates.append({
                        "format": fmt, "lossless": bool(cand.encoded.lossless),
                        "seconds": time.process_time() - t + planned.pop(fmt, 0.0),
                        "bytes": len(cand.encoded.data), "ssim": cand.ssim})
                return cand
            return inner

        def counted(make):
            def outer(orig):
                inner = make(orig)

                def run(*args, **kwargs):
                    depth[0] += 1
                    try:
                        return inner(*args, **kwargs)
                    finally:
                        depth[0] -= 1
                return run
            return outer

        try:  # the quality search's own module (pipeline/search.py), else quality.py
            searcher = importlib.import_module("pyimgopt.pipeline.search")
        except ImportError:
            searcher = quality
        wrap(chooser, chooser_name, counted(encode_one))
        if hasattr(searcher, "plan_target"):
            wrap(searcher, "plan_target", plan_target)
            wrap(searcher, "confirm_target", confirm_target)
        wrap(quality, "measure", measure)  # choose's checks of unsearched candidates
        if searcher is not quality:
            wrap(searcher, "measure", measure)  # the search's probes (imported by name)
        wrap(searcher, "encode", q_encode)
        try:
            yield self
        finally:
            for mod, name, orig in reversed(saved):
                setattr(mod, name, orig)


@pytest.mark.parametrize("e, variant", _params(SAMPLE, ("auto",)))
def test_auto(benchmark, outdir, e, variant):
    if e is None:
        pytest.skip(skip_reason())
    benchmark.group = f"stages auto {ident(e)}"
    probe = _Probe()

    def run():
        probe.__init__()
        with probe.installed():
            return _run_file(e, Settings(format="auto"), outdir)

    res = benchmark.pedantic(run, rounds=1, iterations=1)
    fmt_out = res.format_out
    for c in probe.candidates:  # the winner: the candidate whose bytes were written
        c["won"] = c["format"] == fmt_out and c["bytes"] == res.bytes_out
    _record(benchmark, e, res, kind="auto", impl="auto", candidates=probe.candidates,
            ssim_probes=probe.measure, search_encodes=probe.encodes,
            not_measured=probe.missing, ssim=res.ssim)


def _variants():
    out = []
    for e in SAMPLE:
        names = JPEG_VARIANTS if e["format"] == "JPEG" else PNG_VARIANTS if e["format"] == "PNG" else {}
        out += [pytest.param(e, v, id=f"{ident(e)}-{v}") for v in names]
    return out or [pytest.param(None, "-", id="no-corpus")]


_REF: dict[str, object] = {}


@pytest.mark.parametrize("e, variant", _variants())
def test_step(benchmark, outdir, e, variant):
    if e is None:
        pytest.skip(skip_reason())
    settings = (JPEG_VARIANTS if e["format"] == "JPEG" else PNG_VARIANTS)[variant]
    benchmark.group = f"stages step {ident(e)}"

    def run(data):
        try:
            out, res = pyimgopt.optimize_bytes(data, settings)
        except pyimgopt.errors.PyimgoptError as exc:
            return data, exc
        return out, res

    data = read(e)
    # Three rounds (median): a step's price is a difference of two timings,
    # and one round on the shared machine was off by half.
    out, res = benchmark.pedantic(run, args=(data,), rounds=3, iterations=1)
    extra = {}
    if e["format"] == "JPEG":
        if e["file"] not in _REF:
            _REF.clear()
            _REF[e["file"]] = viewer_rgb(data)
        extra["ssim"] = 1.0 if out == data else luma_ssim(_REF[e["file"]], out)
    failed = not isinstance(res, pyimgopt.Result)
    benchmark.extra_info.update(
        suite="stages", kind="step", impl=f"{e['format'].lower()}-{variant}", variant=variant,
        file=e["file"], category=e["category"], large=e["large"], megapixels=e["megapixels"],
        bytes_in=len(data), bytes_out=len(out), status="failed" if failed else res.status,
        stages={} if failed else dict(res.stages), notes=[] if failed else list(res.notes),
        **extra)
