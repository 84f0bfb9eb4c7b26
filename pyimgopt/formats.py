"""What an input is from its first bytes, and what its output is called.

Owns format sniffing by magic bytes (never the file name) and output file
names — the header helpers the client needs to plan a batch. They sit below
the pixel pipeline (which re-exports them) so that the client, the web UI
and a command line that only drives a pool never load the pipeline, NumPy
or the codecs: those load in the sidecars.
"""

from __future__ import annotations

import os

from .files import EXTENSIONS
from .settings import Settings

__all__ = ["HEIF_BRANDS", "is_heif_brand", "output_name", "sniff"]

#: ``ftyp`` brands of HEIF files pyimgopt reads (AVIF brands are sniffed first as AVIF).
HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"heif", b"mif1",
               b"mif2", b"msf1")


def is_heif_brand(head: bytes) -> bool:
    """Whether an ISOBMFF ``ftyp`` at the start of ``head`` names a HEIF brand."""
    if head[4:8] != b"ftyp":
        return False
    size = int.from_bytes(head[:4], "big")
    major = head[8:12]
    compat = head[16:max(16, min(size, len(head)))]
    brands = {major} | {compat[i:i + 4] for i in range(0, len(compat) - 3, 4)}
    return any(b in brands for b in HEIF_BRANDS)


def sniff(head: bytes) -> str | None:
    """Return the pyimgopt format name for the leading bytes, or ``None``.

    Names: ``JPEG PNG WEBP GIF TIFF BMP AVIF HEIF JXL``. Decided by content
    alone (whether the optional HEIF/JPEG XL codecs are installed or not).
    """
    if head[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if head[:2] == b"BM" and len(head) >= 26:
        return "BMP"
    if head[4:8] == b"ftyp":
        box = int.from_bytes(head[:4], "big")
        brands = head[8 : max(16, min(box, len(head)))]
        if b"avif" in brands or b"avis" in brands:
            return "AVIF"
        if is_heif_brand(head):
            return "HEIF"
    if head[:2] == b"\xff\x0a" or head[:12] == b"\x00\x00\x00\x0cJXL \r\n\x87\n":
        return "JXL"
    return None


def output_name(path: str, settings: Settings) -> str:
    """The file name an output of ``path`` gets: same name, or new extension if converting."""
    if settings.format in ("keep", "auto"):  # auto: optimize_file sets the extension
        return os.path.basename(path)
    stem, _ = os.path.splitext(os.path.basename(path))
    return stem + EXTENSIONS[settings.format]
