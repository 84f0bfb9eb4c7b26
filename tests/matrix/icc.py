"""Hand-built ICC v2 matrix/TRC profiles (display class, D50 PCS).

Written from the ICC.1:2001-04 layout, independently of pyimgopt: header,
tag table, ``desc``/``cprt``/``wtpt``, Bradford-adapted colorants and
``curv`` tone curves (a gamma, or a sampled sRGB curve). Enough to make the
wide-gamut and deliberately misleading profiles the matrix needs: Display P3,
Adobe RGB (1998) compatible, "Linear sRGB" (sRGB primaries, gamma 1.0 — its
name says sRGB, its contents do not), gray gamma 1.8, and an sRGB-equivalent
profile whose name does not say sRGB. These are generated at test time, not
committed.
"""

from __future__ import annotations

import functools
import io
import struct

import numpy as np
from PIL import ImageCms

__all__ = ["rgb_profile", "gray_profile", "PROFILES", "profile", "srgb_lcms"]

_D50 = np.array([0.9642, 1.0, 0.8249])
_BRADFORD = np.array([[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367],
                      [0.0389, -0.0685, 1.0296]])


def _xy_to_xyz(x: float, y: float) -> np.ndarray:
    return np.array([x / y, 1.0, (1 - x - y) / y])


def _colorants(primaries, white) -> np.ndarray:
    """Columns: XYZ of R, G, B, adapted to D50 (Bradford)."""
    p = np.stack([_xy_to_xyz(*xy) for xy in primaries], axis=1)
    w = _xy_to_xyz(*white)
    m = p * np.linalg.solve(p, w)  # scale so R+G+B = white
    src, dst = _BRADFORD @ w, _BRADFORD @ _D50
    adapt = np.linalg.inv(_BRADFORD) @ np.diag(dst / src) @ _BRADFORD
    return adapt @ m


def _s15(v: float) -> bytes:
    return struct.pack(">i", int(round(v * 65536)))


def _xyz_tag(xyz) -> bytes:
    return b"XYZ \0\0\0\0" + b"".join(_s15(v) for v in xyz)


def _desc_tag(text: str) -> bytes:
    a = text.encode("ascii") + b"\0"
    return (b"desc\0\0\0\0" + struct.pack(">I", len(a)) + a + struct.pack(">II", 0, 0)
            + struct.pack(">HB", 0, 0) + bytes(67))


def _text_tag(text: str) -> bytes:
    return b"text\0\0\0\0" + text.encode("ascii") + b"\0"


def _curve_tag(trc) -> bytes:
    if isinstance(trc, (int, float)):
        return b"curv\0\0\0\0" + struct.pack(">IH", 1, int(round(trc * 256)))
    table = np.clip(np.round(np.asarray(trc) * 65535), 0, 65535).astype(">u2")
    return b"curv\0\0\0\0" + struct.pack(">I", len(table)) + table.tobytes()


def srgb_curve(n: int = 1024) -> np.ndarray:
    v = np.linspace(0, 1, n)
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def _build(space: bytes, tags: list[tuple[bytes, bytes]]) -> bytes:
    count = len(tags)
    offset = 128 + 4 + 12 * count
    table, body = [], b""
    for sig, data in tags:
        pad = (-len(body)) % 4
        body += bytes(pad)
        table.append(struct.pack(">4sII", sig, offset + len(body), len(data)))
        body += data
    body += bytes((-len(body)) % 4)
    size = offset + len(body)
    header = (struct.pack(">I", size) + b"none" + bytes((2, 0x10, 0, 0)) + b"mntr" + space
              + b"XYZ " + struct.pack(">6H", 2024, 1, 1, 0, 0, 0) + b"acsp" + b"\0\0\0\0"
              + bytes(4) + b"none" + bytes(4) + bytes(8) + struct.pack(">I", 0)
              + b"".join(_s15(v) for v in _D50) + b"none" + bytes(16) + bytes(28))
    assert len(header) == 128, len(header)
    return header + struct.pack(">I", count) + b"".join(table) + body


def rgb_profile(name: str, primaries, white, trc) -> bytes:
    """An RGB display profile: ``trc`` a gamma (float) or a sampled curve in [0, 1]."""
    m = _colorants(primaries, white)
    curve = _curve_tag(trc)
    return _build(b"RGB ", [
        (b"desc", _desc_tag(name)), (b"cprt", _text_tag("No copyright, test profile")),
        (b"wtpt", _xyz_tag(_D50)),
        (b"rXYZ", _xyz_tag(m[:, 0])), (b"gXYZ", _xyz_tag(m[:, 1])), (b"bXYZ", _xyz_tag(m[:, 2])),
        (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)])


def gray_profile(name: str, trc) -> bytes:
    return _build(b"GRAY", [(b"desc", _desc_tag(name)), (b"cprt", _text_tag("No copyright")),
                           (b"wtpt", _xyz_tag(_D50)), (b"kTRC", _curve_tag(trc))])


_SRGB_P = ((0.64, 0.33), (0.30, 0.60), (0.15, 0.06))
_P3_P = ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060))
_ADOBE_P = ((0.64, 0.33), (0.21, 0.71), (0.15, 0.06))
_D65 = (0.3127, 0.3290)


@functools.lru_cache(maxsize=None)
def profile(key: str) -> bytes:
    """The profile named ``key`` from :data:`PROFILES`."""
    if key == "srgb-lcms":
        return srgb_lcms()
    if key == "prophoto":
        import pathlib
        return (pathlib.Path(__file__).parents[1] / "data" / "ProPhotoRGB.icc").read_bytes()
    if key == "display-p3":
        return rgb_profile("Display P3 (test)", _P3_P, _D65, srgb_curve())
    if key == "adobe-rgb":
        return rgb_profile("Adobe RGB (1998) compatible (test)", _ADOBE_P, _D65, 563 / 256)
    if key == "linear-srgb":
        return rgb_profile("Linear sRGB", _SRGB_P, _D65, 1.0)
    if key == "elle-g10":
        return rgb_profile("sRGB-elle-V2-g10.icc", _SRGB_P, _D65, 1.0)
    if key == "srgb-unnamed":  # sRGB contents, a name without "sRGB"
        return rgb_profile("Monitor 1 (calibrated)", _SRGB_P, _D65, srgb_curve(4096))
    if key == "srgb-big":  # sRGB contents in a > 4 KiB profile (a 4096-entry curve)
        return rgb_profile("big sRGB", _SRGB_P, _D65, srgb_curve(4096))
    if key == "p3-big":  # wide gamut in a > 4 KiB profile
        return rgb_profile("Display P3 big", _P3_P, _D65, srgb_curve(4096))
    if key == "gray-g18":
        return gray_profile("Gray Gamma 1.8", 1.8)
    if key == "gray-srgb":
        return gray_profile("Gray sRGB TRC", srgb_curve())
    raise KeyError(key)


#: Profiles whose contents are sRGB (converting through them is the identity).
SRGB_KEYS = ("srgb-lcms", "srgb-unnamed", "srgb-big")
#: Profiles whose contents are not sRGB, whatever their names say.
WIDE_KEYS = ("display-p3", "adobe-rgb", "prophoto", "linear-srgb", "elle-g10", "p3-big")
PROFILES = SRGB_KEYS + WIDE_KEYS + ("gray-g18", "gray-srgb")


@functools.lru_cache(maxsize=1)
def srgb_lcms() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def check_loads(icc: bytes) -> str:
    """LittleCMS reads it; returns its description (used by a self-test)."""
    prof = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    return ImageCms.getProfileDescription(prof).strip()
