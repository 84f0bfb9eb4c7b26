"""Assemble the broad benchmark corpus: real PNGs, JPEGs, WebPs and GIFs from Debian packages.

This corpus is *not* the test corpus (``../shared/corpus``): it exists so that
encoder defaults are measured on images they were not tuned on. It is built
from a fixed list of Debian 12 packages (icon themes, wallpapers, manuals with
screenshots, scientific sample data, games), downloaded with ``apt-get
download`` (nothing is installed) and unpacked with ``dpkg-deb -x`` into a
temporary folder that is deleted package by package. Images are found by
content (magic bytes, then a full Pillow decode), not by file name, and
deduplicated by SHA-256. Nothing here is committed to the repository.

Usage::

    python bench/broad_corpus.py                 # build or complete the corpus
    python bench/broad_corpus.py --dest DIR      # elsewhere (or PYIMGOPT_BROAD_CORPUS=DIR)
    python bench/broad_corpus.py --rebuild       # start again from an empty folder
    python bench/broad_corpus.py --summary       # print what the manifest holds

The corpus lands in ``$PYIMGOPT_BROAD_CORPUS`` or ``~/.cache/pyimgopt/bench-corpus``:
``files/<package>/<sha256[:10]>-<name>``, ``licenses/<package>.copyright``
and ``manifest.json`` (one entry per image: package, version, licence,
category, kind, large, path inside the package, size, bytes, sha256 and
format traits). A package already in the manifest at the pinned version is
not downloaded again; a package whose rules changed is rebuilt alone (an
image it gives up or takes could change what a later package deduplicates
against, so for the exact clean-build selection use ``--rebuild``).

Selection is deterministic. Each package has rules (globs on the path inside
the package, first match wins) giving each image a *kind* — ``icon``,
``screenshot``, ``graphic``, ``photo`` — or excluding it, caps per format so
that no package dominates, and optionally a *group* pattern (one image per
group, e.g. one resolution per wallpaper). Within a package the candidates are
put in strata by (kind, size class, pixel traits: 16-bit, ICC profile,
palette, gray, alpha, interlaced) and taken round-robin over the kinds and,
within a kind, over its strata, each stratum in SHA-256 order, until the cap:
so the selection covers kinds, sizes and traits rather than the first files
of a folder. Screenshots and photos must be at least 48 px a side. Files the test corpus was
made from are excluded (:data:`TEST_CORPUS_SOURCES`).

The *category* an image is reported under follows from format and kind:
PNG ``icon`` / ``screenshot`` / ``graphic`` / ``photo-png``; JPEG
``photo-jpeg`` (photographs) or ``graphic-jpeg`` (screenshots, renders,
textures); ``webp`` and ``gif``. Independently, ``large`` is true for images
of at least 8 megapixels: the benchmarks report a "large" row that counts
such files *again*, beside their own category (totals count each file once).

Package versions are pinned (:data:`PACKAGES`); when the archive no longer
serves a pinned version the current one is used, recorded in the manifest,
and a warning is printed (``--strict`` makes that an error).
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import io
import json
import os
import pathlib
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from PIL import Image

DEFAULT_DEST = pathlib.Path.home() / ".cache" / "pyimgopt" / "bench-corpus"
ENV_DEST = "PYIMGOPT_BROAD_CORPUS"
MANIFEST = "manifest.json"
#: Megapixels from which an image also counts as ``large``.
LARGE_PIXELS = 8_000_000
#: Smaller images are not benchmark material (1-pixel strips, 4x4 swatches).
MIN_SIDE = 8
#: A toolbar icon in a manual is no screenshot, nor a 32 px swatch a photo.
KIND_MIN_SIDE = {"screenshot": 48, "photo": 48}
#: Above this the pipeline's default ``max_pixels`` refuses the image anyway.
MAX_PIXELS = 100_000_000

#: Bumped when the selection algorithm changes, so every package is rebuilt.
SELECTION_VERSION = 2
KINDS = ("icon", "screenshot", "graphic", "photo")
CATEGORIES = ("icon", "screenshot", "graphic", "photo-png", "photo-jpeg", "graphic-jpeg",
              "webp", "gif")


def category(fmt: str, kind: str) -> str:
    """The category an image of ``fmt`` (PNG/JPEG/WEBP/GIF) and ``kind`` is reported under."""
    if fmt == "PNG":
        return "photo-png" if kind == "photo" else kind
    if fmt == "JPEG":
        return "photo-jpeg" if kind == "photo" else "graphic-jpeg"
    return fmt.lower()


@dataclass(frozen=True)
class Package:
    """One Debian package and how images are taken from it.

    ``rules``: ``(glob, kind)`` pairs matched against the path inside the
    package (``fnmatch``: ``*`` also crosses ``/``); the first match wins and
    kind ``None`` excludes the file. Unmatched files get ``kind`` (``None``:
    excluded). ``caps``: most images taken per format (``png``, ``jpeg``,
    ``webp``, ``gif``; absent = 0). ``group``: a regular expression; images
    whose paths give the same first group count once.
    """

    name: str
    version: str
    kind: str | None
    caps: dict[str, int]
    rules: tuple[tuple[str, str | None], ...] = ()
    group: str | None = None
    min_side: int = MIN_SIDE


def _p(name: str, version: str, kind: str | None, caps: dict[str, int],
       *rules: tuple[str, str | None], group: str | None = None, min_side: int = MIN_SIDE) -> Package:
    return Package(name, version, kind, caps, tuple(rules), group, min_side)


#: Where the test corpus came from (its MANIFEST.json ``source_files``): never
#: taken here, nor other resolutions of the same wallpaper. Globs on
#: ``package:path``.
TEST_CORPUS_SOURCES = (
    "mate-backgrounds:*/nature/Storm*", "mate-backgrounds:*/nature/Blinds*",
    "mate-backgrounds:*/nature/Garden*", "mate-backgrounds:*/nature/LadyBird*",
    "mate-backgrounds:*/nature/Dune*", "mate-backgrounds:*/desktop/Stripes.png",
    "mate-backgrounds:*/abstract/Flow.png",
    "plasma-workspace-wallpapers:*/wallpapers/Path/*",
    "plasma-workspace-wallpapers:*/wallpapers/EveningGlow/*",
    "plasma-workspace-wallpapers:*/wallpapers/FallenLeaf/*",
    "plasma-workspace-wallpapers:*/wallpapers/Grey/*",
    "plasma-workspace-wallpapers:*/wallpapers/ColorfulCups/*",
    "plasma-workspace-wallpapers:*/wallpapers/Kite/*",
    "lomiri-wallpapers-16.04:*/sunset_by_Aitzol_Berasategi.jpg",
    "lomiri-wallpapers-16.04:*/Bridge_by_Sander_Klootwijk.jpg",
    "lomiri-wallpapers-16.04:*/picosdeeuropa_by_Aitzol_Berasategi.jpg",
    "lomiri-wallpapers-16.04:*/friends_by_Aitzol_Berasategi.jpg",
    "lomiri-wallpapers-16.04:*/aitzgorri_by_Aitzol_Berasategi.jpg",
    "lomiri-wallpapers-16.04:*/Wine_by_Jakkub_Mede.jpg",
    "gnome-user-docs:*/figures/shell-appts.png", "gnome-user-docs:*/figures/screenshot-tool.png",
    "adwaita-icon-theme:*/512x512/places/folder-pictures.png",
    "adwaita-icon-theme:*/512x512/devices/printer.png",
    "tango-icon-theme:*/32x32/actions/document-save.png",
    "desktop-base:*/plymouth/themes/emerald/logo+emerald.png",
    "desktop-base:*/debian-logos/logo-256.png",
    "desktop-base:*/plymouth/themes/spacefun/earth*.png",
    "desktop-base:*/futureprototype-theme/grub/grub-4x3.png",
    "desktop-base:*/homeworld-theme/grub/grub-4x3.png",
    "sway-backgrounds:*/Sway_Wallpaper_Blue_2048x1536.png",
    "gnome-backgrounds:*/truchet-l.webp",
    "python3-skimage:*/skimage/data/astronaut.png", "python3-skimage:*/skimage/data/camera.png",
    "python3-skimage:*/skimage/data/coffee.png", "python3-skimage:*/skimage/data/rocket.jpg",
    "python-matplotlib-data:*/sample_data/grace_hopper.jpg",
)

_HELP = "*/doc/HTML/en/*"  # KDE manuals: the English screenshots; other languages repeat them
_OTHER_HELP = "*/doc/HTML/*"

#: The fixed package list (Debian 12 "bookworm" versions). Order matters only
#: for deduplication: an image found in an earlier package is not taken again.
PACKAGES: tuple[Package, ...] = (
    # --- icon themes: PNG icons at 8-512 px, RGBA, palette + tRNS, 16-bit, gray + alpha
    _p("adwaita-icon-theme", "43-1", "icon", {"png": 12}, ("*/cursors/*", None)),
    _p("gnome-icon-theme", "3.12.0-5", "icon", {"png": 14}),
    _p("tango-icon-theme", "0.8.90-11", "icon", {"png": 10}),
    _p("oxygen-icon-theme", "5:5.103.0-1", "icon", {"png": 16}),
    _p("mate-icon-theme", "1.26.0-1", "icon", {"png": 12}),
    _p("lxde-icon-theme", "0.5.1-2.1", "icon", {"png": 8}),
    _p("gimp-data", "2.10.34-1+deb12u10", "graphic", {"png": 8},
       ("*/icons/*", "icon"), ("*/themes/*", "graphic"), ("*/images/*", "graphic")),
    _p("rawtherapee-data", "5.9-1", "icon", {"png": 3}),
    # --- manuals: screenshots with text (RGB, RGBA, palette, ICC-tagged), some photos
    _p("gimp-help-en", "2.10.34-2", "screenshot", {"png": 36, "jpeg": 22},
       ("*/images/filters/examples/*.jpg", "photo"), ("*/images/filters/examples/*taj*", "photo"),
       ("*/images/filters/examples/*zinnias*", "photo"),
       ("*/images/filters/examples/*cosmos*", "photo"),
       ("*/images/filters/examples/*", "graphic"), ("*/images/tutorials/*.jpg", "photo"),
       ("*/images/using/*.jpg", "photo"), ("*/images/math/*", "graphic"),
       ("*/images/glossary/*", "graphic"), ("*.jpg", "photo"), min_side=48),
    _p("kicad-doc-en", "6.0.11+dfsg-1", "screenshot", {"png": 16}, min_side=64),
    _p("wireshark-doc", "4.0.17-0+deb12u3", "screenshot", {"png": 16}, min_side=64),
    _p("gnome-user-docs", "43.0-2", "screenshot", {"png": 14}, min_side=64),
    _p("kstars-data", "5:3.6.2-2", "graphic", {"png": 22, "jpeg": 2},
       (_HELP, "screenshot"), (_OTHER_HELP, None), ("*/textures/moon*", "photo"),
       ("*/textures/jupiter*", "photo"), ("*/textures/mars*", "photo"),
       ("*/textures/mercury*", "photo"), group=r"textures/(moon)\d+"),
    _p("kdenlive-data", "22.12.3-2+deb12u2", "graphic", {"png": 6},
       (_HELP, "screenshot"), (_OTHER_HELP, None), ("*/icons/*", "icon")),
    _p("kgeography-data", "4:22.12.3-1", "graphic", {"png": 8},
       (_HELP, "screenshot"), (_OTHER_HELP, None)),
    _p("hugin-data", "2022.0.0+dfsg-2", "graphic", {"png": 8, "jpeg": 10, "gif": 2},
       ("*/help_en_EN/*.jpg", "photo"), ("*/help_en_EN/*", "screenshot"),
       ("*/icons/*", "icon"), ("*/xrc/data/*", "icon"), min_side=16),
    _p("tuxpaint-data", "1:0.9.28-sdl2-1", "graphic", {"png": 8, "jpeg": 10},
       ("*/html/*", "screenshot"), ("*/templates/*", "photo")),
    _p("fotoxx-common", "20.08-2", "graphic", {"png": 6, "jpeg": 12},
       ("*/images/blur2.jpg", "photo"), ("*/images/sharp-comp.jpg", "photo"),
       ("*/images/*", "screenshot"), ("*/patterns/*", "graphic")),
    _p("imagemagick-6-doc", "8:6.9.11.60+dfsg-1.6+deb12u11", "graphic",
       {"png": 6, "jpeg": 6, "gif": 2}, ("*/bluebells*", "photo"), ("*/wizard*", "graphic"),
       ("*.jpg", "photo")),
    # --- wallpapers and artwork: huge PNGs (opaque RGBA, 8-15 MP renders), photos as PNG and JPEG
    _p("desktop-base", "12.0.6+nmu1~deb12u1", "graphic", {"png": 10, "jpeg": 3},
       ("*/icons/*", "icon"), ("*/login/*.jpg", "screenshot"), ("*/previews/*", "screenshot")),
    _p("sway-backgrounds", "1.7-6", "graphic", {"png": 4}),
    _p("plasma-workspace-wallpapers", "4:5.27.5-2", "graphic", {"png": 8, "jpeg": 10},
       ("*/contents/screenshot.*", None),
       ("*/wallpapers/BytheWater/*", "photo"), ("*/wallpapers/ColdRipple/*", "photo"),
       ("*/wallpapers/DarkestHour/*", "photo"), ("*/wallpapers/OneStandsOut/*", "photo"),
       ("*/wallpapers/Volna/*", "photo"), ("*/wallpapers/summer_1am/*", "photo"),
       group=r"wallpapers/([^/]+)/"),
    _p("mate-backgrounds", "1.26.0-1", "graphic", {"png": 8, "jpeg": 10},
       ("*/nature/*", "photo"), ("*/Ubuntu-Mate-*", "photo"),
       group=r"/([A-Za-z-]+?)(?:_\d+x\d+)?\.\w+$"),
    _p("ukui-wallpapers", "20.04.3-1.1", "graphic", {"png": 4, "jpeg": 3}),
    _p("lxqt-themes", "1.2.0-1", "graphic", {"png": 10, "jpeg": 5},
       *[(f"*/wallpapers/{n}", "photo") for n in (
           "Butterfly-Kenneth-Wimer.jpg", "Valendas.png", "after-the-rain.jpg", "appleflower.png",
           "beam.png", "butterfly.png", "cloud.png", "drop.png", "flowers.png", "fog.jpg",
           "this-is-not-windows.jpg")]),
    _p("lomiri-wallpapers-16.04", "20.04.0-2", "photo", {"jpeg": 9},
       ("*/Painting-Colors*", "graphic")),
    _p("lomiri-wallpapers-20.04", "20.04.0-2", "photo", {"jpeg": 4},
       ("*/Fossa_*", "graphic"), ("*/Painting-Colors*", "graphic")),
    _p("lomiri-wallpapers", "20.04.0-2", "graphic", {"png": 1}),
    _p("gnome-backgrounds", "43.1-1", "graphic", {"webp": 5}),
    # --- scientific sample data and test images
    _p("python3-skimage", "0.19.3-8", "graphic", {"png": 14, "jpeg": 3, "gif": 1},
       *[(f"*/skimage/data/{n}", "photo") for n in (
           "chelsea.png", "motorcycle_*.png", "brick.png", "grass.png", "gravel.png", "coins.png",
           "moon.png", "cell.png", "ihc.png", "microaneurysms.png", "page.png", "text.png",
           "hubble_deep_field.jpg", "retina.jpg", "lbp_frontal_face.jpg", "lily.*",
           "phantom.png")]),
    _p("python-matplotlib-data", "3.6.3-1", "graphic", {"png": 4}),
    _p("octave-doc", "7.3.0-2", "graphic", {"png": 6}),
    _p("xplanet-images", "1.3.1-3", "graphic", {"png": 2, "jpeg": 2},
       ("*/earth.jpg", "photo"), ("*/night.jpg", "photo")),
    _p("golang-1.19-src", "1.19.8-2", "graphic", {"png": 10, "jpeg": 8, "gif": 2},
       ("*/testdata/video-*", "photo")),
    _p("digikam-data", "4:7.9.0-1", "graphic", {"png": 8, "jpeg": 3, "gif": 2},
       ("*/icons/*", "icon"), ("*/about/images/*.jpg", "photo")),
    _p("scribus-data", "1.5.8+dfsg-4", "graphic", {"png": 6, "jpeg": 4},
       ("*/icons/*", "icon"), ("*.jpg", "photo"), ("*/templates/*/map.*", "graphic")),
    _p("krita-data", "1:5.1.5+dfsg-2+deb12u1", "graphic", {"png": 8}),
    _p("darktable", "4.2.1-4", "graphic", {"png": 3, "gif": 2}, ("*/icons/*", "icon")),
    # --- games: sprites (palette, RGBA, 16-bit), tiles, textures, level shots
    _p("frozen-bubble-data", "2.212-11", "graphic", {"png": 8, "gif": 3}),
    _p("pingus-data", "0.7.6-5.1", "graphic", {"png": 8, "jpeg": 5}),
    _p("teeworlds-data", "0.7.5-2", "graphic", {"png": 6}),
    _p("crawl-tiles-data", "2:0.28.0-1.1", "graphic", {"png": 5}),
    _p("freeciv-data", "3.0.6-1+deb12u1", "graphic", {"png": 8}, ("*/icons/*", "icon")),
    _p("chromium-bsu-data", "0.9.16.1-3", "graphic", {"png": 4, "jpeg": 2}),
    _p("neverball-data", "1.6.0+git20180603-3", "graphic", {"png": 3, "jpeg": 10}),
    _p("extremetuxracer-data", "0.8.2-1", "graphic", {"png": 14},
       ("*/env/*", "photo"), ("*/terrains/*", "photo")),
    _p("ri-li-data", "2.0.1+ds2-2", "graphic", {"png": 2}),
)


# --------------------------------------------------------------------------- facts


_MAGIC = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF87a", "GIF"),
          (b"GIF89a", "GIF"))


def sniff(head: bytes) -> str | None:
    """The image format from the first 16 bytes (PNG, JPEG, GIF, WEBP), else ``None``."""
    for magic, fmt in _MAGIC:
        if head.startswith(magic):
            return fmt
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


def png_traits(data: bytes) -> dict:
    """Bit depth, colour type, interlace and the ancillary chunks that matter to an optimiser."""
    depth, ctype, interlace = data[24], data[25], data[28]
    chunks: set[str] = set()
    pos = 8
    while pos + 8 <= len(data):
        length, name = struct.unpack(">I4s", data[pos:pos + 8])
        chunks.add(name.decode("latin-1"))
        if name == b"IEND":
            break
        pos += 12 + length
    return {"bit_depth": depth, "color_type": ctype, "interlaced": bool(interlace),
            "trns": "tRNS" in chunks, "gama": "gAMA" in chunks, "apng": "acTL" in chunks,
            "text_chunks": bool(chunks & {"tEXt", "zTXt", "iTXt"})}


# IJG (Annex K) luminance table: a JPEG's quality is estimated against it scaled.
_ANNEX_K_LUMA = (16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24,
                 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77,
                 24, 35, 55, 64, 81, 104, 113, 92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95,
                 98, 112, 100, 103, 99)


def ijg_quality(im: Image.Image) -> int | None:
    """The IJG quality whose scaled luma table is closest to the file's (a rough estimate)."""
    tables = getattr(im, "quantization", None)
    if not tables or 0 not in tables:
        return None
    luma = sorted(tables[0])  # order-free comparison: zigzag or not does not matter
    best, best_err = None, None
    for q in range(1, 101):
        scale = 5000 / q if q < 50 else 200 - 2 * q
        ref = sorted(min(255, max(1, (v * scale + 50) // 100)) for v in _ANNEX_K_LUMA)
        err = sum(abs(a - b) for a, b in zip(luma, ref))
        if best_err is None or err < best_err:
            best, best_err = q, err
    return best


def facts(data: bytes, fmt: str) -> dict | None:
    """What the manifest records of one image, after a full decode; ``None`` if it does not decode."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = Image.open(io.BytesIO(data))
            im.load()
            width, height = im.size
            info = {
                "format": fmt, "width": width, "height": height, "mode": im.mode,
                "icc": "icc_profile" in im.info and bool(im.info["icc_profile"]),
                "frames": getattr(im, "n_frames", 1),
            }
            if info["frames"] > 1:  # decode every frame: a broken later frame is no benchmark input
                for i in range(info["frames"]):
                    im.seek(i)
                    im.load()
            if fmt == "PNG":
                info.update(png_traits(data))
            elif fmt == "JPEG":
                info.update(progressive=bool(im.info.get("progressive") or im.info.get("progression")),
                            quality_estimate=ijg_quality(im), exif="exif" in im.info,
                            subsampling=_subsampling(im))
    except Exception:
        return None
    info["megapixels"] = round(width * height / 1e6, 3)
    return info


def _subsampling(im: Image.Image) -> str | None:
    try:
        from PIL import JpegImagePlugin

        return {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}.get(JpegImagePlugin.get_sampling(im), "other")
    except Exception:
        return None


def traits(f: dict) -> str:
    """The stratum trait of an image: the property most likely to change an encoder's behaviour."""
    if f.get("bit_depth") == 16:
        return "16bit"
    if f["icc"]:
        return "icc"
    if f["mode"] in ("P", "1") or f.get("color_type") == 3:
        return "palette-trns" if f.get("trns") else "palette"
    if f["mode"] in ("L", "LA", "I;16", "I"):
        return "gray"
    if f.get("interlaced"):
        return "interlaced"
    if f.get("progressive"):
        return "progressive"
    return "alpha" if "A" in f["mode"] else "plain"


def size_class(f: dict) -> int:
    """0: <= 32 px, 1: <= 128, 2: <= 512, 3: <= 2 MP, 4: <= 8 MP, 5: larger."""
    side, px = max(f["width"], f["height"]), f["width"] * f["height"]
    if side <= 32:
        return 0
    if side <= 128:
        return 1
    if side <= 512:
        return 2
    if px <= 2_000_000:
        return 3
    return 4 if px < LARGE_PIXELS else 5


# --------------------------------------------------------------------------- licences


def parse_dep5(text: str) -> list[dict[str, str]]:
    """The paragraphs of a machine-readable (DEP-5) copyright file, as field dicts."""
    paras, cur, last = [], {}, None
    for line in text.splitlines():
        if not line.strip():
            if cur:
                paras.append(cur)
            cur, last = {}, None
        elif line[0] in " \t" and last:
            cur[last] += "\n" + line.strip()
        elif ":" in line:
            key, value = line.split(":", 1)
            last = key.strip().lower()
            cur[last] = value.strip()
    if cur:
        paras.append(cur)
    return paras


def licence_for(path: str, copyright_text: str | None) -> tuple[str, str]:
    """(licence, how it was matched) for a file at ``path`` inside its package.

    DEP-5 ``Files:`` patterns name paths in the source tree, not the installed
    ones, so a pattern matches when it, or any tail of it, matches a tail of
    the installed path; the most specific match wins (``dep5-file``), else the
    ``Files: *`` paragraph (``dep5-default``). A free-form copyright file gives
    the licences it mentions (``text``), to be read by a person.
    """
    if not copyright_text:
        return "unknown (no copyright file)", "none"
    if not copyright_text.lstrip().lower().startswith("format:"):
        found = [name for name, pat in (
            ("GPL-3+", r"GPL.{0,30}version 3"), ("GPL-2+", r"GPL.{0,40}version 2|GPL-2"),
            ("LGPL", r"LGPL|Lesser General"), ("CC-BY-SA", r"CC-BY-SA|Attribution-ShareAlike"),
            ("CC-BY", r"CC-BY(?!-SA)|Creative Commons Attribution(?!-ShareAlike)"),
            ("public-domain", r"public domain"), ("BSD", r"BSD"), ("MIT", r"\bMIT\b"),
            ("Apache-2.0", r"Apache"))
            if re.search(pat, copyright_text, re.I | re.S)]
        return ("mentions " + ", ".join(found)) if found else "see copyright file", "text"
    paras = [p for p in parse_dep5(copyright_text) if "files" in p and "license" in p]
    best, best_score, default = None, -1, None
    parts = path.split("/")
    tails = ["/".join(parts[i:]) for i in range(len(parts))]
    for para in paras:
        lic = para["license"].split("\n")[0].strip()
        for pat in para["files"].split():
            if pat == "*":
                default = lic
                continue
            if pat.startswith("debian/"):
                continue
            pparts = pat.split("/")
            for j in range(len(pparts)):
                sub = "/".join(pparts[j:])
                if sub.strip("*.") == "" or re.fullmatch(r"\*(\.\w+)?", sub):
                    break  # "*" or "*.png" alone says nothing about this file
                if any(fnmatch.fnmatchcase(t, sub) for t in tails):
                    score = len(sub.replace("*", ""))
                    if score >= best_score:
                        best, best_score = lic, score
                    break
    if best is not None:
        return best, "dep5-file"
    return (default or "see copyright file"), "dep5-default"


# --------------------------------------------------------------------------- apt


def _run(cmd: list[str], cwd: pathlib.Path | None = None) -> str:
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip()[-500:]}")
    return res.stdout


def download(name: str, version: str | None, into: pathlib.Path, strict: bool) -> pathlib.Path:
    """``apt-get download`` one package (the pinned version if the archive has it)."""
    before = set(into.glob("*.deb"))
    try:
        _run(["apt-get", "download", f"{name}={version}" if version else name], cwd=into)
    except RuntimeError as exc:
        if version is None or strict:
            raise
        print(f"  warning: {name}={version} not available ({exc}); taking the current version",
              file=sys.stderr)
        _run(["apt-get", "download", name], cwd=into)
    new = sorted(set(into.glob("*.deb")) - before)
    if len(new) != 1:
        raise RuntimeError(f"apt-get download {name}: expected one new .deb, found {new}")
    return new[0]


def deb_field(deb: pathlib.Path, fld: str) -> str:
    return _run(["dpkg-deb", "-f", str(deb), fld]).strip()


def read_copyright(name: str, tree: pathlib.Path, work: pathlib.Path) -> str | None:
    """The package's copyright file; where ``/usr/share/doc/NAME`` is a symlink to
    another package's folder (``gimp-help-en`` → ``gimp-help-common``), that
    package is downloaded too, for its copyright file only."""
    doc = tree / "usr" / "share" / "doc" / name
    if doc.is_symlink():
        owner = os.readlink(doc).rstrip("/").split("/")[-1]
        sub = work / f"copyright-{owner}"
        sub.mkdir()
        try:
            deb = download(owner, None, sub, strict=False)
            _run(["dpkg-deb", "-x", str(deb), str(sub / "x")])
            f = sub / "x" / "usr" / "share" / "doc" / owner / "copyright"
            return f.read_text(errors="replace") if f.is_file() else None
        except RuntimeError as exc:
            print(f"  warning: no copyright file for {name} via {owner}: {exc}", file=sys.stderr)
            return None
        finally:
            shutil.rmtree(sub, ignore_errors=True)
    f = doc / "copyright"
    return f.read_text(errors="replace") if f.is_file() else None


# --------------------------------------------------------------------------- selection


@dataclass
class Candidate:
    path: str  # inside the package
    sha256: str
    data: bytes = field(repr=False)
    facts: dict
    kind: str


def kind_of(pkg: Package, path: str) -> str | None:
    for pattern, kind in pkg.rules:
        if fnmatch.fnmatchcase(path, pattern):
            return kind
    return pkg.kind


def excluded(pkg: str, path: str) -> bool:
    key = f"{pkg}:{path}"
    return any(fnmatch.fnmatchcase(key, g) for g in TEST_CORPUS_SOURCES)


def scan(pkg: Package, tree: pathlib.Path, seen: set[str]) -> list[Candidate]:
    """Every image in the unpacked package that decodes, by content, not yet seen elsewhere."""
    out: list[Candidate] = []
    local: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(tree):
        dirnames.sort()
        for fname in sorted(filenames):
            full = pathlib.Path(dirpath) / fname
            if full.is_symlink() or not full.is_file():
                continue
            rel = full.relative_to(tree).as_posix()
            with open(full, "rb") as fh:
                fmt = sniff(fh.read(16))
            if fmt is None or kind_of(pkg, rel) is None or excluded(pkg.name, rel):
                continue
            data = full.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            if digest in seen or digest in local:
                continue
            local.add(digest)
            out.append(Candidate(rel, digest, data, {}, kind_of(pkg, rel) or ""))
    return out


def select(pkg: Package, cands: list[Candidate]) -> list[Candidate]:
    """Stratified, deterministic choice of at most ``pkg.caps[fmt]`` images per format.

    Strata are (kind, size class, trait); strata are visited in a fixed order
    and one image is taken from each in turn (SHA-256 order inside a stratum),
    so a capped package contributes a spread of sizes and traits. An image is
    decoded fully before it is taken; one that does not decode is skipped.
    """
    chosen: list[Candidate] = []
    by_fmt: dict[str, list[Candidate]] = defaultdict(list)
    for c in cands:
        fmt = sniff(c.data[:16]) or "?"
        by_fmt[fmt].append(c)
    for fmt in sorted(by_fmt):
        cap = pkg.caps.get(fmt.lower(), 0)
        if cap <= 0:
            continue
        # Header-level facts for stratifying (cheap); the full decode comes when taken.
        strata: dict[tuple, list[Candidate]] = defaultdict(list)
        for c in by_fmt[fmt]:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    im = Image.open(io.BytesIO(c.data))
                    head = {"width": im.width, "height": im.height, "mode": im.mode,
                            "icc": bool(im.info.get("icc_profile")),
                            "progressive": bool(im.info.get("progressive"))}
            except Exception:
                continue
            if fmt == "PNG":
                head.update(png_traits(c.data))
            least = max(pkg.min_side, KIND_MIN_SIDE.get(c.kind, 0))
            if min(head["width"], head["height"]) < least:
                continue
            if head["width"] * head["height"] > MAX_PIXELS:
                continue
            strata[(c.kind, size_class(head), traits(head))].append(c)
        for members in strata.values():
            members.sort(key=lambda c: c.sha256)
        # Round-robin over kinds, and within a kind over its strata, so that a
        # package's screenshots get as many turns as its many icon strata.
        rotation: dict[str, list[tuple]] = defaultdict(list)
        for key in sorted(strata):
            rotation[key[0]].append(key)
        turn = {kind: 0 for kind in rotation}
        groups: set[str] = set()
        taken = 0
        while taken < cap and any(strata[k] for k in strata):
            for kind in sorted(rotation):
                if taken >= cap:
                    break
                keys = [k for k in rotation[kind] if strata[k]]
                if not keys:
                    continue
                key = keys[turn[kind] % len(keys)]
                turn[kind] += 1
                while strata[key]:
                    c = strata[key].pop(0)
                    g = None
                    if pkg.group:
                        m = re.search(pkg.group, c.path)
                        g = m.group(1) if m else None
                        if g is not None and g in groups:
                            continue
                    f = facts(c.data, fmt)
                    if f is None:
                        continue
                    if g is not None:
                        groups.add(g)
                    c.facts = f
                    chosen.append(c)
                    taken += 1
                    break
    return chosen


# --------------------------------------------------------------------------- build


def dest_dir(arg: str | None) -> pathlib.Path:
    """The corpus folder: ``--dest``, else ``$PYIMGOPT_BROAD_CORPUS``, else the user cache."""
    return pathlib.Path(arg or os.environ.get(ENV_DEST) or DEFAULT_DEST).expanduser()


def load_manifest(dest: pathlib.Path) -> list[dict]:
    """The manifest's entries (empty when the corpus is absent)."""
    path = dest / MANIFEST
    if not path.is_file():
        return []
    return json.loads(path.read_text())["images"]


def _fingerprint(pkg: Package) -> str:
    """A digest of a package's selection rules: a changed rule rebuilds that package."""
    key = (pkg, TEST_CORPUS_SOURCES, MIN_SIDE, KIND_MIN_SIDE, LARGE_PIXELS, SELECTION_VERSION)
    return hashlib.sha256(repr(key).encode()).hexdigest()[:16]


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]", "_", name)[-80:]


def build(dest: pathlib.Path, *, strict: bool, rebuild: bool, only: set[str] | None) -> dict:
    """Download, select and copy every package's images; write the manifest."""
    if rebuild and dest.exists():
        shutil.rmtree(dest)
    (dest / "files").mkdir(parents=True, exist_ok=True)
    (dest / "licenses").mkdir(exist_ok=True)
    entries = load_manifest(dest)
    packages_meta = {}
    if (dest / MANIFEST).is_file():
        packages_meta = json.loads((dest / MANIFEST).read_text()).get("packages", {})
    with tempfile.TemporaryDirectory(prefix="broad-corpus-", dir=dest) as tmp:
        work = pathlib.Path(tmp)
        for index, pkg in enumerate(PACKAGES):
            if only and pkg.name not in only:
                continue
            have = [e for e in entries if e["package"] == pkg.name]
            meta = packages_meta.get(pkg.name, {})
            if (not only and have and all((dest / e["file"]).is_file() for e in have)
                    and meta.get("config") == _fingerprint(pkg)):
                continue
            entries = [e for e in entries if e["package"] != pkg.name]
            # Deduplicate against the packages listed before this one only, so an
            # incremental rebuild selects exactly what a clean build would.
            earlier = {p.name for p in PACKAGES[:index]}
            seen = {e["sha256"] for e in entries if e["package"] in earlier}
            print(f"{pkg.name} ...", flush=True)
            pdir = work / pkg.name
            pdir.mkdir()
            deb = download(pkg.name, pkg.version, pdir, strict)
            version = deb_field(deb, "Version")
            if version != pkg.version:
                print(f"  warning: {pkg.name} is {version}, pinned {pkg.version}", file=sys.stderr)
            tree = pdir / "x"
            _run(["dpkg-deb", "-x", str(deb), str(tree)])
            deb_bytes = deb.stat().st_size
            deb_sha = hashlib.sha256(deb.read_bytes()).hexdigest()
            deb.unlink()
            text = read_copyright(pkg.name, tree, work)
            if text is not None:
                (dest / "licenses" / f"{pkg.name}.copyright").write_text(text)
            cands = scan(pkg, tree, seen)
            chosen = select(pkg, cands)
            out_dir = dest / "files" / pkg.name
            if out_dir.exists():
                shutil.rmtree(out_dir)
            out_dir.mkdir(parents=True)
            for c in chosen:
                name = f"{c.sha256[:10]}-{_safe_name(pathlib.PurePosixPath(c.path).name)}"
                (out_dir / name).write_bytes(c.data)
                lic, how = licence_for(c.path, text)
                f = c.facts
                entries.append({
                    "file": f"files/{pkg.name}/{name}", "package": pkg.name, "version": version,
                    "path": c.path, "licence": lic, "licence_match": how,
                    "category": category(f["format"], c.kind), "kind": c.kind,
                    "large": f["width"] * f["height"] >= LARGE_PIXELS,
                    "bytes": len(c.data), "sha256": c.sha256, **f,
                })
                seen.add(c.sha256)
            packages_meta[pkg.name] = {"version": version, "pinned": pkg.version,
                                       "config": _fingerprint(pkg),
                                       "deb_bytes": deb_bytes, "deb_sha256": deb_sha,
                                       "images": len(chosen), "candidates": len(cands)}
            print(f"  {len(chosen)} of {len(cands)} candidate images", flush=True)
            shutil.rmtree(pdir)
            _write(dest, entries, packages_meta)
    _write(dest, entries, packages_meta)
    return {"images": entries, "packages": packages_meta}


def _write(dest: pathlib.Path, entries: list[dict], packages: dict) -> None:
    order = {p.name: i for i, p in enumerate(PACKAGES)}
    entries = sorted(entries, key=lambda e: (order.get(e["package"], 999), e["file"]))
    doc = {"about": "pyimgopt broad benchmark corpus: bench/broad_corpus.py", "large_pixels":
           LARGE_PIXELS, "packages": packages, "images": entries}
    tmp = dest / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=False))
    os.replace(tmp, dest / MANIFEST)


def summary(entries: list[dict], packages: dict | None = None) -> str:
    """Counts per category and format, bytes, traits: the README's corpus table."""
    lines = []
    cats = Counter(e["category"] for e in entries)
    size = defaultdict(int)
    for e in entries:
        size[e["category"]] += e["bytes"]
    lines.append("| category | files | bytes | of which ≥ 8 MP |")
    lines.append("| --- | ---: | ---: | ---: |")
    for cat in CATEGORIES:
        if cats.get(cat):
            large = sum(1 for e in entries if e["category"] == cat and e["large"])
            lines.append(f"| {cat} | {cats[cat]} | {size[cat]:,} | {large} |")
    lines.append(f"| **all** | {len(entries)} | {sum(size.values()):,} | "
                 f"{sum(e['large'] for e in entries)} |")
    fmts = Counter(e["format"] for e in entries)
    t = Counter()
    for e in entries:
        if e["format"] == "PNG":
            t["16-bit"] += e.get("bit_depth") == 16
            t["palette"] += e.get("color_type") == 3
            t["palette + tRNS"] += e.get("color_type") == 3 and e.get("trns")
            t["gray (+alpha)"] += e.get("color_type") in (0, 4)
            t["RGBA"] += e.get("color_type") == 6
            t["ICC-tagged"] += e["icc"]
            t["interlaced"] += e.get("interlaced")
        if e["format"] == "JPEG":
            t["JPEG progressive"] += e.get("progressive")
            t["JPEG ICC-tagged"] += e["icc"]
            t["JPEG gray"] += e["mode"] == "L"
            t["JPEG CMYK"] += e["mode"] == "CMYK"
            t["JPEG 4:4:4"] += e.get("subsampling") == "4:4:4"
            t["JPEG quality ≤ 80 (estimate)"] += (e.get("quality_estimate") or 101) <= 80
    lines.append("")
    lines.append("Formats: " + ", ".join(f"{k} {v}" for k, v in sorted(fmts.items()))
                 + ". PNG traits: " + ", ".join(f"{k} {v}" for k, v in t.items()
                                                 if not k.startswith("JPEG"))
                 + ". JPEG traits: " + ", ".join(f"{k[5:]} {v}" for k, v in t.items()
                                                  if k.startswith("JPEG")) + ".")
    if packages:
        deb = sum(p["deb_bytes"] for p in packages.values())
        lines.append(f"{len(packages)} packages, {deb / 1e6:.0f} MB of .deb files downloaded.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", help=f"corpus folder (default ${ENV_DEST} or {DEFAULT_DEST})")
    parser.add_argument("--rebuild", action="store_true", help="delete the folder and start again")
    parser.add_argument("--strict", action="store_true",
                        help="fail when a pinned package version is no longer available")
    parser.add_argument("--only", action="append", help="(re)build only this package (repeatable)")
    parser.add_argument("--summary", action="store_true", help="print the manifest's summary and exit")
    args = parser.parse_args(argv)
    dest = dest_dir(args.dest)
    if args.summary:
        doc = json.loads((dest / MANIFEST).read_text())
        print(summary(doc["images"], doc["packages"]))
        return 0
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        print("needs apt-get and dpkg-deb (a Debian or Ubuntu machine)", file=sys.stderr)
        return 2
    doc = build(dest, strict=args.strict, rebuild=args.rebuild,
                only=set(args.only) if args.only else None)
    print(summary(doc["images"], doc["packages"]))
    _check_against_test_corpus(doc["images"])
    print(f"corpus: {dest}")
    return 0


def _check_against_test_corpus(entries: list[dict]) -> None:
    """Warn (never change the selection) if an image is byte-identical to a test-corpus file."""
    here = pathlib.Path(__file__).resolve().parent
    corpus = pathlib.Path(os.environ.get("PYIMGOPT_CORPUS", here.parents[1] / "shared" / "corpus"))
    man = corpus / "MANIFEST.json"
    if not man.is_file():
        return
    test = {e["sha256"]: e["file"] for e in json.loads(man.read_text())}
    for e in entries:
        if e["sha256"] in test:
            print(f"warning: {e['file']} is the test corpus's {test[e['sha256']]}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
