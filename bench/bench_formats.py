"""Per-format output on a handful of corpus images: ``pyimgopt.optimize_bytes``
with default settings and one fixed output format each; time and
``bytes_out`` (with ``status``) are recorded.

To add a case (``format="auto"``, a ``target_ssim``, an effort level, ...),
append a :class:`FormatCase` to ``FORMAT_CASES``: its ``settings`` are the
keyword arguments of :class:`pyimgopt.Settings`, built inside the benchmark so
a case the installed pyimgopt does not accept fails alone, not the whole
module. ``requires`` names a Pillow feature (``PIL.features.check``) the case
needs; without it the case is skipped with that reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from _common import CORPUS, corpus_available, run
from PIL import features

import pyimgopt


@dataclass(frozen=True)
class FormatCase:
    id: str  # unique: the test id and the column of bench/report.py's table
    settings: dict[str, Any] = field(default_factory=dict)
    requires: str | None = None


FORMAT_CASES = [
    FormatCase("jpeg-q80", {"format": "jpeg", "quality": 80}),
    FormatCase("webp-q80", {"format": "webp", "quality": 80}),
    FormatCase("avif-q60", {"format": "avif", "quality": 60}, requires="avif"),
    FormatCase("jpeg-ssim0.985", {"format": "jpeg", "target_ssim": 0.985}),
    FormatCase("auto-ssim0.985", {"format": "auto", "target_ssim": 0.985}),
]

#: Corpus images (by MANIFEST name): medium and small photos as JPEG and PNG,
#: a UI screenshot and an RGBA icon. The 1920x1200 translucent RGBA wallpaper
#: is left out on purpose: its lossy-with-alpha WebP encode alone takes ~3 s.
IMAGES = [
    "photo_storm_medium_canon_exif.jpg",
    "photo_evening_glow_medium_baseline.jpg",
    "photo_astronaut_as_png.png",
    "screenshot_gnome_calendar.png",
    "icon_adwaita_folder_pictures_512.png",
]
ROUNDS = 3


@pytest.fixture(scope="module")
def corpus_bytes() -> dict[str, bytes]:
    if not corpus_available():
        pytest.skip(f"no image corpus at {CORPUS} (set PYIMGOPT_CORPUS)")
    return {name: (CORPUS / name).read_bytes() for name in IMAGES}


@pytest.mark.parametrize("case_id", [c.id for c in FORMAT_CASES])
@pytest.mark.parametrize("image", IMAGES)
def test_format(benchmark, corpus_bytes, image, case_id):
    case = next(c for c in FORMAT_CASES if c.id == case_id)
    if case.requires and not features.check(case.requires):
        pytest.skip(f"this Pillow build has no {case.requires} support")
    data = corpus_bytes[image]
    settings = pyimgopt.Settings(**case.settings)
    benchmark.group = f"format {image}"
    out, result = run(
        benchmark,
        pyimgopt.optimize_bytes,
        data,
        settings,
        rounds=ROUNDS,
        warmup_rounds=0,
        suite="formats",
        impl="pyimgopt",
        case=case.id,
        image=image,
        bytes_in=len(data),
    )
    benchmark.extra_info.update(
        bytes_out=len(out), status=result.status, format_out=result.format_out,
        ssim=_luma_ssim(data, out),
    )


def _luma_ssim(src: bytes, out: bytes) -> float | None:
    """Luma SSIM of ``out`` against the decoded, upright ``src`` (same size only)."""
    import io

    import numpy as np
    from PIL import Image, ImageOps

    from pyimgopt import _kernels

    def rgb(data: bytes) -> np.ndarray:
        with Image.open(io.BytesIO(data)) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
                base = Image.new("RGB", im.size, (255, 255, 255))
                rgba = im.convert("RGBA")
                base.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
                return np.asarray(base)
            return np.asarray(im.convert("RGB"))

    a, b = rgb(src), rgb(out)
    if a.shape != b.shape or min(a.shape[:2]) < 7:
        return None
    return round(float(_kernels.ssim_luma(a, b)), 4)
