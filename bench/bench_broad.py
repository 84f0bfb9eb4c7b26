"""Encoders on the broad corpus (``bench/broad_corpus.py``), per category, side by side.

Every contender gets the same input bytes and runs in this one process with
one codec thread (``bench/conftest.py``); the contenders of one file run one
after the other, so machine noise hits them alike. Files under 0.25 MP are
timed over 3 rounds (median), larger ones once.

PNG (every file): ``pyimgopt`` (``optimize_bytes`` with default settings,
effort 6: what a user gets, so a ``skipped`` file counts at its input size),
``pillow-optimize`` (Pillow ``optimize=True``), ``oxipng-alone`` (pyoxipng's
default preset on the original file); and ``pyimgopt-effort9`` on the
deterministic sample of :func:`_broad.sample` (the report compares it with
the other contenders on that same sample).

JPEG (every file): ``pyimgopt`` (default settings), ``pillow-q80`` (Pillow
``quality=80, optimize=True, progressive=True``, keeping the ICC profile so
that its colours are right; its q75 and q85 bytes and SSIMs are recorded,
untimed, so the report can interpolate Pillow's bytes at pyimgopt's SSIM),
``lossless-only`` (jpegoptim-style: mozjpeg's lossless re-optimisation of the
original with every marker but the ICC profile stripped). SSIM is luma SSIM
against the input as a viewer shows it (:func:`_broad.viewer_rgb`).

WebP and GIF: ``pyimgopt`` default only (the no-larger / no-failure check).

Times are CPU seconds of this process (``--benchmark-timer=time.process_time``):
on the shared machine one file's wall-clock time varied 1-4x between runs,
its CPU time far less; every contender runs on one thread, so CPU time is the
work it did.

Run (about 25 min on the shared 2-core VM)::

    PYIMGOPT_BENCH_BROAD=1 .venv/bin/python -m pytest bench/bench_broad.py -o python_files='bench_*.py' \\
        --benchmark-only --benchmark-timer=time.process_time -p no:cacheprovider -q \\
        --benchmark-json=.benchmarks/broad.json
"""

from __future__ import annotations

import io
import warnings

import pytest
from _broad import entries, ident, luma_ssim, read, sample, skip_reason, viewer_rgb
from PIL import Image

import pyimgopt
from pyimgopt.errors import PyimgoptError

SMALL_MP = 0.25  # below this a file is timed over 3 rounds


def _pyimgopt(settings: pyimgopt.Settings):
    def run(data: bytes) -> tuple[bytes, dict]:
        try:
            out, res = pyimgopt.optimize_bytes(data, settings)
        except PyimgoptError as exc:
            return data, {"status": "failed", "error": exc.code, "message": str(exc)[:200]}
        return out, {"status": res.status, "format_out": res.format_out, "quality": res.quality,
                     "stages": dict(res.stages), "notes": list(res.notes)}
    return run


def _pillow(data: bytes, fmt: str, **params) -> tuple[bytes, dict]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        im = Image.open(io.BytesIO(data))
        im.load()
        if fmt == "JPEG" and im.info.get("icc_profile"):
            params["icc_profile"] = im.info["icc_profile"]
        buf = io.BytesIO()
        im.save(buf, fmt, **params)
    return buf.getvalue(), {"status": "ok"}


def _oxipng(data: bytes) -> tuple[bytes, dict]:
    import oxipng

    return oxipng.optimize_from_memory(data), {"status": "ok"}


def _lossless_only(data: bytes) -> tuple[bytes, dict]:
    import mozjpeg_lossless_optimization as mz

    return mz.optimize(data, copy=mz.COPY_MARKERS.ICC), {"status": "ok"}


PNG_CASES = {
    "pyimgopt": _pyimgopt(pyimgopt.Settings()),
    "pillow-optimize": lambda d: _pillow(d, "PNG", optimize=True),
    "oxipng-alone": _oxipng,
    "pyimgopt-effort9": _pyimgopt(pyimgopt.Settings(effort=9)),
}
JPEG_CASES = {
    "pyimgopt": _pyimgopt(pyimgopt.Settings()),
    "pillow-q80": lambda d: _pillow(d, "JPEG", quality=80, optimize=True, progressive=True),
    "lossless-only": _lossless_only,
}
PILLOW_EXTRA_Q = (75, 85)


def _params(fmt: tuple[str, ...], cases: dict, sampled: set[str]) -> list:
    out = []
    for e in entries(fmt):
        for case in cases:
            if case.endswith("effort9") and e["file"] not in sampled:
                continue
            out.append(pytest.param(e, case, id=f"{ident(e)}-{case}"))
    return out or [pytest.param(None, "-", id="no-corpus")]


_PNG_SAMPLE = {e["file"] for e in sample(entries(("PNG",)))}
_REF: dict[str, object] = {}


def _ref(e: dict):
    """The viewer-space reference of one input, kept for the contenders of that file only."""
    if e["file"] not in _REF:
        _REF.clear()
        _REF[e["file"]] = viewer_rgb(read(e))
    return _REF[e["file"]]


def _measure(benchmark, e: dict, fn) -> tuple[bytes, dict]:
    data = read(e)
    rounds = 3 if e["megapixels"] < SMALL_MP else 1
    out, info = benchmark.pedantic(fn, args=(data,), rounds=rounds, iterations=1, warmup_rounds=0)
    benchmark.extra_info.update(
        suite="broad", file=e["file"], package=e["package"], category=e["category"],
        large=e["large"], megapixels=e["megapixels"], bytes_in=len(data), bytes_out=len(out),
        **info)
    return out, info


@pytest.mark.parametrize("e, case", _params(("PNG",), PNG_CASES, _PNG_SAMPLE))
def test_png(benchmark, e, case):
    if e is None:
        pytest.skip(skip_reason())
    benchmark.group = f"broad png {ident(e)}"
    benchmark.extra_info.update(kind="png", impl=case, sample=e["file"] in _PNG_SAMPLE)
    _measure(benchmark, e, PNG_CASES[case])


@pytest.mark.parametrize("e, case", _params(("JPEG",), JPEG_CASES, set()))
def test_jpeg(benchmark, e, case):
    if e is None:
        pytest.skip(skip_reason())
    benchmark.group = f"broad jpeg {ident(e)}"
    benchmark.extra_info.update(kind="jpeg", impl=case, quality_estimate=e.get("quality_estimate"))
    out, info = _measure(benchmark, e, JPEG_CASES[case])
    ref = _ref(e)
    benchmark.extra_info["ssim"] = 1.0 if out == read(e) else luma_ssim(ref, out)
    if case == "pillow-q80":
        data = read(e)
        for q in PILLOW_EXTRA_Q:
            extra, _ = _pillow(data, "JPEG", quality=q, optimize=True, progressive=True)
            benchmark.extra_info[f"q{q}_bytes"] = len(extra)
            benchmark.extra_info[f"q{q}_ssim"] = luma_ssim(ref, extra)


@pytest.mark.parametrize("e, case", _params(("WEBP", "GIF"), {"pyimgopt": None}, set()))
def test_other(benchmark, e, case):
    if e is None:
        pytest.skip(skip_reason())
    benchmark.group = f"broad {e['format'].lower()} {ident(e)}"
    benchmark.extra_info.update(kind=e["format"].lower(), impl=case)
    _measure(benchmark, e, _pyimgopt(pyimgopt.Settings()))
