"""Deep samples: 16-bit sources under lossless outputs.

Owns what happens to a 16-bit PNG or TIFF when its pixels must survive:
:func:`lossless_16` writes it as a 16-bit PNG or TIFF through libvips (Pillow
reads 16-bit colour as 8 bits), keeping alpha and a non-sRGB ICC profile,
then oxipng for PNG; :func:`refusal` is the clear error for
``lossless=True`` into a format that holds 8 bits per sample (WebP, AVIF and
JPEG here) when the samples really use 16 bits — never a silent downgrade.
(A PNG kept as PNG never comes here: :mod:`.pngfile` optimises the file
itself.)
"""

from __future__ import annotations


from ..errors import UnsupportedFormatError
from ..settings import Settings
from . import boost
from .colour import is_srgb
from .probe import Probe

__all__ = ["lossless_16", "really_16", "refusal"]


def _load(pr: Probe, access: str = "sequential"):
    vips = boost._module("vips")
    if vips is None:
        return None, None
    opts = {"page": 0} if pr.format == "TIFF" else {}
    im = vips.Image.new_from_buffer(pr.data, "", access=access, fail=True, **opts)
    return vips, im


def really_16(pr: Probe) -> bool:
    """Whether a 16-bit source holds values that 8 bits cannot (not all multiples of 257).

    Without libvips (nothing else here reads 16-bit colour) the answer is yes.
    """
    try:
        _, im = _load(pr)
    except Exception:
        return True
    if im is None or im.format != "ushort":
        return im is None
    arr = im.numpy()
    return bool((arr % 257).any())


def lossless_16(pr: Probe, out_fmt: str, s: Settings, orientation: int = 1
                ) -> tuple[bytes, list[str]] | None:
    """The 16-bit image as a 16-bit ``out_fmt`` (png or tiff), or ``None`` without libvips.

    Samples, alpha and bit depth are kept exactly; an EXIF/TIFF ``orientation``
    2-8 is applied by libvips (rotations and flips move samples, they change
    none) and not written again; metadata is dropped except a non-sRGB ICC
    profile (kept, as the values are); with ``keep_metadata`` libvips keeps
    what it read (its orientation reset to 1).
    """
    try:
        vips, im = _load(pr, "sequential" if orientation == 1 else "random")
        if im is None or im.format != "ushort":
            return None
        if orientation != 1:
            im = im.copy()
            im.set_type(vips.GValue.gint_type, "orientation", orientation)
            im = im.autorot()
        if im.get_typeof("orientation"):
            im = im.copy()
            im.set_type(vips.GValue.gint_type, "orientation", 1)
    except Exception:
        return None
    icc = im.get("icc-profile-data") if im.get_typeof("icc-profile-data") else None
    keep = vips.ForeignKeep.ALL if s.keep_metadata else (
        vips.ForeignKeep.ICC if icc and not is_srgb(icc) else vips.ForeignKeep.NONE)
    notes = ["lossless 16-bit route (libvips): every sample and the bit depth kept"]
    if orientation != 1:
        notes.append("EXIF orientation applied by rotating the 16-bit samples (libvips)")
    if out_fmt == "png":
        data = im.pngsave_buffer(bitdepth=16, compression=1, keep=keep)
        if s.effort >= 1 and boost.available("oxipng"):
            opt = boost.png_optimize(data, s.effort)
            data = opt if opt is not None else data
        return data, notes
    data = im.tiffsave_buffer(compression="deflate", predictor="horizontal", keep=keep)
    return data, notes


def refusal(pr: Probe, out_fmt: str, path: str | None) -> UnsupportedFormatError:
    """The error for ``lossless=True`` when ``out_fmt`` cannot hold the 16-bit samples."""
    if out_fmt in ("png", "tiff"):
        why = "pyvips (libvips), which writes them, is unavailable"
    else:
        why = f"{out_fmt.upper()} holds 8 bits per sample"
    return UnsupportedFormatError(
        f"lossless=True cannot keep this {pr.format}'s 16-bit samples as {out_fmt.upper()}: {why}; "
        "write PNG (or keep TIFF), or drop lossless to scale to 8 bits (rounded)",
        path=path, stage="encode")
