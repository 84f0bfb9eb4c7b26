"""What the broad corpus records of an image (``broad_corpus.py``): format by
content, the traits an optimiser cares about, a JPEG's IJG quality estimate,
the stratum an image falls in, and its licence from the package's copyright
file.
"""

from __future__ import annotations

import fnmatch
import io
import re
import struct
import warnings

from PIL import Image

#: Megapixels from which an image also counts as ``large``.
LARGE_PIXELS = 8_000_000

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
