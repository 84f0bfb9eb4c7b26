"""The broad benchmark corpus as the bench suites see it: where it is, its
entries by category, the deterministic samples the slow contenders run on,
and the "what a viewer sees" decode that every SSIM here is measured in.

The corpus is built by ``bench/broad_corpus.py`` (outside the repository);
suites that need it skip with the reason when it is absent.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import resource
import warnings
from typing import Any

import numpy as np
from PIL import Image, ImageCms, ImageOps

HERE = pathlib.Path(__file__).resolve().parent
ENV_DEST = "PYIMGOPT_BROAD_CORPUS"
DEFAULT_DEST = pathlib.Path.home() / ".cache" / "pyimgopt" / "bench-corpus"
BROAD = pathlib.Path(os.environ.get(ENV_DEST) or DEFAULT_DEST).expanduser()
#: The PNG and JPEG categories, in report order; ``large`` is an extra view.
PNG_CATEGORIES = ("icon", "screenshot", "graphic", "photo-png")
JPEG_CATEGORIES = ("photo-jpeg", "graphic-jpeg")
OTHER_CATEGORIES = ("webp", "gif")

#: The deterministic per-category sample the slow contenders run on (PNG
#: effort 9, the ``format="auto"`` profile, the step prices): files in SHA-256
#: order, up to ``SAMPLE_SMALL`` under 1 MP and up to ``SAMPLE_LARGE`` of 1 MP
#: or more, the latter within a megapixel budget per category (a large file
#: that would pass it is passed over). The same subset for every contender it
#: is compared with.
SAMPLE_SMALL = 8
SAMPLE_LARGE = 2
SAMPLE_LARGE_MP = {"icon": 0.0, "screenshot": 4.0, "graphic": 12.0, "photo-png": 8.0,
                   "photo-jpeg": 20.0, "graphic-jpeg": 12.0, "webp": 17.0, "gif": 1.0}


#: The broad suites take tens of minutes: they run only when asked, so that
#: ``make bench`` (``pytest bench``) stays short.
ENV_ENABLE = "PYIMGOPT_BENCH_BROAD"


def cpu_with_children() -> float:
    """CPU seconds of this process plus those of its children already reaped: the broad
    suites' timer (``--benchmark-timer=_broad.cpu_with_children``, with ``bench`` on
    ``PYTHONPATH``). ``time.process_time`` alone misses mozjpeg's lossless pass, which
    runs in a forked child (``pipeline/isolate.py``) and is reaped inside the call."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def enabled() -> bool:
    """Whether the broad-corpus suites were asked for (``PYIMGOPT_BENCH_BROAD=1``)."""
    return os.environ.get(ENV_ENABLE) == "1"


def available() -> bool:
    """Whether the broad corpus has been built (its manifest exists)."""
    return (BROAD / "manifest.json").is_file()


def skip_reason() -> str:
    if not enabled():
        return (f"broad-corpus suites run only with {ENV_ENABLE}=1 (about 40 min; "
                "see bench/README.md)")
    return (f"no broad corpus at {BROAD} (build it: python bench/broad_corpus.py; "
            f"or set {ENV_DEST})")


def entries(formats: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """The manifest's entries (``[]`` without a corpus or when the suites are not
    enabled), optionally of some formats only."""
    if not available() or not enabled():
        return []
    images = json.loads((BROAD / "manifest.json").read_text())["images"]
    return [e for e in images if formats is None or e["format"] in formats]


def sample(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The deterministic per-category sample described at :data:`SAMPLE_SMALL`."""
    out = []
    by: dict[str, list[dict[str, Any]]] = {}
    for e in items:
        by.setdefault(e["category"], []).append(e)
    for cat, group in by.items():
        budget = SAMPLE_LARGE_MP.get(cat, 4.0)
        used, small, large = 0.0, 0, 0
        for e in sorted(group, key=lambda e: e["sha256"]):
            mp = e["width"] * e["height"] / 1e6
            if mp < 1.0 and small < SAMPLE_SMALL:
                out.append(e)
                small += 1
            elif mp >= 1.0 and large < SAMPLE_LARGE and used + mp <= budget:
                out.append(e)
                used += mp
                large += 1
    return sorted(out, key=lambda e: e["file"])


def read(e: dict[str, Any]) -> bytes:
    return (BROAD / e["file"]).read_bytes()


def ident(e: dict[str, Any]) -> str:
    """A short, stable test id for an entry."""
    return e["file"].split("/", 1)[-1].replace("/", "_")


_SRGB = None


def viewer_rgb(data: bytes, background: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """The pixels a viewer shows: EXIF orientation applied, an embedded ICC
    profile converted to sRGB (perceptual), alpha composited on ``background``.
    Every SSIM of the broad-corpus suites compares two such arrays, so a
    contender that drops a colour profile or an orientation is judged by what
    it looks like, not by its raw samples."""
    global _SRGB
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        im = Image.open(io.BytesIO(data))
        im.load()
        im = ImageOps.exif_transpose(im)
        icc = im.info.get("icc_profile")
        if im.mode in ("P", "PA", "LA", "La", "RGBa", "I", "I;16", "F", "1"):
            im = im.convert("RGBA" if im.has_transparency_data else "RGB")
        if icc:
            try:
                if _SRGB is None:
                    _SRGB = ImageCms.createProfile("sRGB")
                src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
                mode = "RGBA" if im.mode in ("RGBA", "LA") else "RGB"
                if im.mode == "CMYK" or im.mode in ("RGB", "RGBA", "L"):
                    im = ImageCms.profileToProfile(im, src, _SRGB, outputMode=mode)
            except Exception:
                pass  # an unusable profile: shown as untagged, as most viewers would
        if im.mode in ("RGBA", "LA"):
            rgba = im.convert("RGBA")
            base = Image.new("RGB", im.size, background)
            base.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
            im = base
        return np.asarray(im.convert("RGB"))


def luma_ssim(ref: np.ndarray, data: bytes) -> float:
    """Luma SSIM of the encoded ``data`` (decoded as a viewer would) against ``ref``;
    0.0 when the shapes differ (an output shown at another size or orientation)."""
    from pyimgopt import _kernels

    got = viewer_rgb(data)
    if got.shape != ref.shape or min(ref.shape[:2]) < 7:
        return 0.0 if got.shape != ref.shape else 1.0
    return float(_kernels.ssim_luma(ref, got))
