"""nclx: colour described by code points (ISO/IEC 23091-2), as an ICC profile LittleCMS can use.

Owns what an AVIF or HEIF ``colr`` box of type ``nclx`` means when the file
has no ICC profile: its colour primaries and transfer characteristics (the
matrix coefficients only concern YUV, which the decoder already undid). A
file that says BT.709/sRGB needs nothing. Otherwise :func:`profile` builds a
small ICC v2 matrix/TRC display profile (D50 PCS, Bradford-adapted
colorants, a sampled tone curve) so the pixels are converted to sRGB like
any other profiled image — a Display P3 AVIF from a phone is shown as a
colour-managed browser shows it, not as sRGB. HDR transfers (PQ, HLG) are not
converted; the caller notes that. :func:`avif_nclx` reads the code points
from an AVIF's ``meta`` box.
"""

from __future__ import annotations

import functools
import struct

import numpy as np

__all__ = ["avif_nclx", "profile", "describe"]

#: Colour primaries: (R, G, B) xy and white xy.
_D65 = (0.3127, 0.3290)
_PRIMARIES = {
    1: (((0.640, 0.330), (0.300, 0.600), (0.150, 0.060)), _D65),  # BT.709 / sRGB
    4: (((0.670, 0.330), (0.210, 0.710), (0.140, 0.080)), (0.310, 0.316)),  # BT.470 M
    5: (((0.640, 0.330), (0.290, 0.600), (0.150, 0.060)), _D65),  # BT.470 BG (601 625)
    6: (((0.630, 0.340), (0.310, 0.595), (0.155, 0.070)), _D65),  # SMPTE 170M (601 525)
    7: (((0.630, 0.340), (0.310, 0.595), (0.155, 0.070)), _D65),  # SMPTE 240M
    9: (((0.708, 0.292), (0.170, 0.797), (0.131, 0.046)), _D65),  # BT.2020
    11: (((0.680, 0.320), (0.265, 0.690), (0.150, 0.060)), (0.314, 0.351)),  # DCI-P3
    12: (((0.680, 0.320), (0.265, 0.690), (0.150, 0.060)), _D65),  # Display P3
    22: (((0.630, 0.340), (0.295, 0.605), (0.155, 0.077)), _D65),  # EBU 3213
}
_NAMES = {1: "BT.709", 9: "BT.2020", 11: "DCI-P3", 12: "Display P3"}
#: Transfer characteristics that are sRGB's curve (as browsers treat them), or a power.
_SRGB_LIKE = {1, 2, 6, 13, 14, 15}
_POWER = {4: 2.2, 5: 2.8, 8: 1.0}
HDR_TRANSFERS = {16: "PQ", 18: "HLG"}

_D50 = np.array([0.9642, 1.0, 0.8249])
_BRADFORD = np.array([[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367],
                      [0.0389, -0.0685, 1.0296]])


def describe(primaries: int, transfer: int) -> str:
    """``"Display P3 primaries"`` and the like, for notes."""
    name = _NAMES.get(primaries, f"nclx primaries {primaries}")
    if transfer in HDR_TRANSFERS:
        return f"{name} with the {HDR_TRANSFERS[transfer]} (HDR) transfer"
    return f"{name} primaries"


def _xyz(x: float, y: float) -> np.ndarray:
    return np.array([x / y, 1.0, (1 - x - y) / y])


def _s15(v: float) -> bytes:
    return struct.pack(">i", int(round(v * 65536)))


def _xyz_tag(v) -> bytes:
    return b"XYZ \0\0\0\0" + b"".join(_s15(x) for x in v)


@functools.lru_cache(maxsize=16)
def profile(primaries: int, transfer: int) -> bytes | None:
    """An ICC profile for nclx ``primaries``/``transfer``; ``None`` when the pixels are sRGB
    already (BT.709 primaries, an sRGB-like curve) or the code points are not known."""
    if primaries in (1, 2) and transfer in _SRGB_LIKE:
        return None
    prims, white = _PRIMARIES.get(1 if primaries == 2 else primaries, (None, None))
    if prims is None or (transfer not in _SRGB_LIKE and transfer not in _POWER):
        return None
    p = np.stack([_xyz(*xy) for xy in prims], axis=1)
    w = _xyz(*white)
    m = p * np.linalg.solve(p, w)
    adapt = np.linalg.inv(_BRADFORD) @ np.diag((_BRADFORD @ _D50) / (_BRADFORD @ w)) @ _BRADFORD
    m = adapt @ m
    if transfer in _POWER:
        curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, int(round(_POWER[transfer] * 256)))
    else:
        v = np.linspace(0, 1, 1024)
        lin = np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)
        curve = b"curv\0\0\0\0" + struct.pack(">I", 1024) + np.round(lin * 65535).astype(">u2").tobytes()
    name = f"nclx {primaries}/{transfer} (pyimgopt)".encode() + b"\0"
    desc = (b"desc\0\0\0\0" + struct.pack(">I", len(name)) + name + bytes(8) + bytes(3) + bytes(67))
    tags = [(b"desc", desc), (b"wtpt", _xyz_tag(_D50)), (b"rXYZ", _xyz_tag(m[:, 0])),
            (b"gXYZ", _xyz_tag(m[:, 1])), (b"bXYZ", _xyz_tag(m[:, 2])),
            (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)]
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for sig, data in tags:
        body += bytes((-len(body)) % 4)
        table += struct.pack(">4sII", sig, offset + len(body), len(data))
        body += data
    body += bytes((-len(body)) % 4)
    header = (struct.pack(">I", offset + len(body)) + b"none" + bytes((2, 0x10, 0, 0)) + b"mntr"
              + b"RGB XYZ " + bytes(12) + b"acsp" + bytes(24) + bytes(4)
              + b"".join(_s15(v) for v in _D50) + bytes(48))
    return header + struct.pack(">I", len(tags)) + table + body


def _boxes(data: bytes, start: int, end: int):
    pos = start
    while pos + 8 <= end:
        size, kind, head = int.from_bytes(data[pos:pos + 4], "big"), data[pos + 4:pos + 8], 8
        if size == 1:
            size, head = int.from_bytes(data[pos + 8:pos + 16], "big"), 16
        elif size == 0:
            size = end - pos
        if size < head or pos + size > end:
            return
        yield kind, pos + head, pos + size
        pos += size


def avif_nclx(data: bytes) -> tuple[int, int] | None:
    """(colour primaries, transfer characteristics) of an AVIF's first ``nclx`` ``colr``
    property, or ``None`` (none, an ICC ``colr`` instead, or a structure that does not parse)."""
    for kind, s, e in _boxes(data, 0, len(data)):
        if kind != b"meta":
            continue
        for kind2, s2, e2 in _boxes(data, s + 4, e):  # meta is a full box
            if kind2 != b"iprp":
                continue
            for kind3, s3, e3 in _boxes(data, s2, e2):
                if kind3 != b"ipco":
                    continue
                for kind4, s4, e4 in _boxes(data, s3, e3):
                    if kind4 == b"colr" and e4 - s4 >= 10:
                        if data[s4:s4 + 4] in (b"prof", b"rICC"):
                            return None
                        if data[s4:s4 + 4] == b"nclx":
                            return struct.unpack(">HH", data[s4 + 4:s4 + 8])
    return None
