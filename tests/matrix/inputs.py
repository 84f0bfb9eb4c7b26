"""The generated inputs: every variant of every format pyimgopt reads.

HEIC/HEIF and JPEG XL inputs are made in :mod:`.heifjxl` (by pillow-heif and
Debian's cjxl) and joined here.

Each :class:`Case` carries the encoded bytes and, where the generator knows
them exactly, the ground truth (``truth``: upright RGBA as float in 0..255,
before any colour profile is applied; ``truth16`` for 16-bit sources).
Nothing here calls pyimgopt.
"""

from __future__ import annotations

import functools
import io
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from . import icc as icclib
from .png import LEGAL_DEPTHS, iccp_chunk, itxt_chunk, text_chunk, write_png, ztxt_chunk

__all__ = ["Case", "png_cases", "jpeg_cases", "webp_cases", "gif_cases", "tiff_cases",
           "avif_cases", "bmp_cases", "all_cases", "exif_block", "JPEGTRAN"]

JPEGTRAN = shutil.which("jpegtran")


@dataclass
class Case:
    id: str
    cls: str                       # png jpeg webp gif tiff avif bmp heif jxl
    data: bytes
    size: tuple[int, int]          # upright (width, height)
    truth: np.ndarray | None = None  # upright RGBA float 0..255, profile not applied
    bits: int = 8                  # source sample depth (16 for anything deeper than 8)
    icc: str | None = None         # key in icc.PROFILES
    orientation: int = 1
    frames: int = 1
    lossy: bool = False            # the source itself is lossy (JPEG, lossy WebP/AVIF/JXL, HEIF)
    alpha: bool = False            # some pixel is not opaque
    patches: bool = False          # flat colour patches (colour checks per patch)
    tags: frozenset = field(default_factory=frozenset)

    def __repr__(self) -> str:
        return self.id


# -- content -------------------------------------------------------------------

def content(w: int, h: int, seed: int = 0) -> np.ndarray:
    """Smooth RGB float content in 0..1 with an asymmetric mark (top-left red block)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 0.5 + 0.4 * np.sin(x / 5.0 + seed) * np.cos(y / 7.0)
    g = 0.5 + 0.4 * np.cos((x + 2 * y) / 9.0 + seed)
    b = (x + 1) / (w + 1) * 0.8 + 0.1
    arr = np.stack([r, g, b], axis=-1)
    mw, mh = max(1, w // 3), max(1, h // 3)
    if w >= 6 and h >= 6:
        arr[:mh, :mw] = (0.9, 0.1, 0.1)
    return np.clip(arr, 0, 1)


def alpha_pattern(w: int, h: int, kind: str) -> np.ndarray:
    """Alpha in 0..1: ``partial`` (a ramp with a hole and an opaque band), ``clear``, ``opaque``."""
    if kind == "clear":
        return np.zeros((h, w))
    if kind == "opaque":
        return np.ones((h, w))
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    a = np.clip((x + y) / max(1, w + h - 2), 0, 1)
    a[h // 2:, :] = 1.0
    a[: max(1, h // 4), : max(1, w // 4)] = 0.0
    return a


def patches(w: int, h: int) -> np.ndarray:
    """A 4 x 3 grid of saturated flat colours (0..1): colour errors show per patch."""
    cols = np.array([[0.9, 0.1, 0.1], [0.1, 0.8, 0.2], [0.15, 0.2, 0.9], [0.95, 0.85, 0.1],
                     [0.1, 0.8, 0.85], [0.8, 0.2, 0.8], [0.5, 0.5, 0.5], [0.95, 0.95, 0.95],
                     [0.05, 0.05, 0.05], [0.6, 0.35, 0.2], [0.3, 0.6, 0.3], [0.25, 0.25, 0.6]])
    y, x = np.mgrid[0:h, 0:w]
    idx = (y * 3 // h) * 4 + (x * 4 // w)
    return cols[idx]


def smooth_palette(n: int, seed: int = 0) -> np.ndarray:
    """``n`` colours along a smooth ramp (dark to light), so palette images look like images."""
    t = np.linspace(0, 1, n)[:, None]
    base = np.array([[0.1, 0.15, 0.4]]) + t * np.array([[0.85, 0.7, 0.5]])
    wobble = 0.08 * np.sin(np.arange(n)[:, None] * 0.7 + seed + np.array([[0, 2, 4]]))
    pal = np.round(np.clip(base + wobble, 0, 1) * 255).astype(np.uint8)
    pal[0] = (200, 30, 30)
    return pal


def to_rgba(rgb01: np.ndarray, a01: np.ndarray | None = None) -> np.ndarray:
    h, w = rgb01.shape[:2]
    a = np.ones((h, w)) if a01 is None else a01
    return np.concatenate([rgb01 * 255.0, a[..., None] * 255.0], axis=-1)


def exif_block(orientation: int | None = None, gps: bool = False, make: str | None = None) -> bytes:
    ex = Image.Exif()
    if orientation is not None:
        ex[0x0112] = orientation
    if make:
        ex[0x010F] = make
        ex[0x0110] = "Model X"
    if gps:
        ex.get_ifd(0x8825).update({1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)})
    return ex.tobytes()


def _pil(im: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


# -- PNG -----------------------------------------------------------------------

_SIZES = ((1, 1), (1, 9), (9, 1), (13, 7), (31, 17), (48, 40), (17, 31), (64, 48))
_CHUNKS = ("none", "gAMA", "sRGB", "iCCP-srgb", "cHRM", "pHYs", "text", "eXIf", "iCCP-wide")


def _chunk_variant(name: str, color_type: int) -> tuple[list, list, str | None, frozenset]:
    """(before_plte, after_plte, icc key, tags) for an ancillary-chunk variant."""
    gray = color_type in (0, 4)
    if name == "gAMA":
        return [(b"gAMA", struct.pack(">I", 45455))], [], None, frozenset({"gAMA"})
    if name == "sRGB":
        return [(b"sRGB", b"\x00")], [], None, frozenset({"sRGB"})
    if name == "iCCP-srgb":
        key = "gray-srgb" if gray else "srgb-unnamed"
        return [iccp_chunk("ICC", icclib.profile(key))], [], key, frozenset({"icc"})
    if name == "iCCP-wide":
        key = "gray-g18" if gray else "display-p3"
        return [iccp_chunk("wide", icclib.profile(key))], [], key, frozenset({"icc", "wide"})
    if name == "cHRM":
        chrm = struct.pack(">8I", 31270, 32900, 64000, 33000, 30000, 60000, 15000, 6000)
        return [(b"gAMA", struct.pack(">I", 45455)), (b"cHRM", chrm)], [], None, frozenset({"cHRM"})
    if name == "pHYs":
        return [], [(b"pHYs", struct.pack(">IIB", 3780, 3780, 1))], None, frozenset({"pHYs"})
    if name == "text":
        return [], [text_chunk("Comment", "hello"), ztxt_chunk("Author", "someone"),
                    itxt_chunk("Title", "t\u00eftle")], None, frozenset({"text"})
    if name == "eXIf":
        exif = exif_block(gps=True, make="CameraMaker")
        return [], [(b"eXIf", exif[6:] if exif.startswith(b"Exif\0\0") else exif)], None, \
            frozenset({"gps"})
    return [], [], None, frozenset()


def _levels(x01: np.ndarray, depth: int) -> np.ndarray:
    top = (1 << depth) - 1
    return np.round(x01 * top).astype(np.uint16 if depth == 16 else np.uint8)


def _png_case(ct: int, depth: int, trans: str, interlace: bool, chunks: str, size, k: int) -> Case:
    w, h = size
    rgb = content(w, h, seed=k)
    top = (1 << depth) - 1
    palette = trns = None
    kind = "partial" if trans == "alpha" else trans
    if ct in (0, 4):
        gray01 = rgb @ np.array([0.299, 0.587, 0.114])
        g = _levels(gray01, depth)
        if ct == 0:
            samples = g
            alpha = np.full((h, w), 255.0)
            if trans == "key":
                key = int(g[h // 2, w // 2])
                trns = struct.pack(">H", key)
                alpha = np.where(g == key, 0.0, 255.0)
        else:
            a = _levels(alpha_pattern(w, h, kind), depth)
            samples = np.stack([g, a], axis=-1)
            alpha = a * 255.0 / top
        gv = g.astype(np.float64) * 255.0 / top
        truth = np.stack([gv, gv, gv, alpha], axis=-1)
    elif ct in (2, 6):
        c = _levels(rgb, depth)
        if ct == 2:
            samples = c
            alpha = np.full((h, w), 255.0)
            if trans == "key":
                key = c[h // 2, w // 2]
                trns = struct.pack(">3H", *(int(v) for v in key))
                alpha = np.where((c == key).all(axis=-1), 0.0, 255.0)
        else:
            a = _levels(alpha_pattern(w, h, kind), depth)
            samples = np.concatenate([c, a[..., None]], axis=-1)
            alpha = a * 255.0 / top
        truth = np.concatenate([c.astype(np.float64) * 255.0 / top, alpha[..., None]], axis=-1)
    else:  # palette
        n = min(1 << depth, 40)
        pal = smooth_palette(n, k)
        lum = (rgb @ np.array([0.299, 0.587, 0.114]))
        idx = np.minimum((lum * n).astype(np.uint8), n - 1)
        if w >= 6 and h >= 6:
            idx[: max(1, h // 3), : max(1, w // 3)] = 0
        samples = idx
        palette = pal
        pal_a = np.full(n, 255)
        if trans == "one":
            pal_a[0] = 0
        elif trans == "many":
            pal_a[: max(2, n // 2): 1] = 0
            pal_a[1::3] = 255
        elif trans == "partial":
            pal_a[: n - 1] = np.linspace(0, 254, n - 1).astype(int)
        if trans != "none":
            last = int(np.nonzero(pal_a != 255)[0].max()) + 1 if (pal_a != 255).any() else 1
            trns = bytes(pal_a[:last].astype(np.uint8))
            if trans in ("one", "many"):
                idx[h // 2:, : max(1, w // 2)] = np.nonzero(pal_a == 0)[0][-1]
        truth = np.concatenate([pal[idx].astype(np.float64), pal_a[idx][..., None].astype(float)],
                               axis=-1)
    before, after, key, tags = _chunk_variant(chunks, ct)
    data = write_png(samples, ct, depth, palette=palette, trns=trns, interlace=interlace,
                     before_plte=before, after_plte=after)
    cid = f"png-ct{ct}-{depth}b-{trans}-{'adam7' if interlace else 'flat'}-{chunks}-{w}x{h}"
    alpha_any = bool((truth[..., 3] < 255).any())
    if trns is not None:
        tags = tags | {"trns"}
    return Case(cid, "png", data, (w, h), truth=truth, bits=16 if depth == 16 else 8, icc=key,
                alpha=alpha_any, tags=tags | {f"ct{ct}"})


def png_cases() -> list[Case]:
    out = []
    trans_for = {0: ("none", "key"), 2: ("none", "key"), 3: ("none", "one", "many", "partial"),
                 4: ("alpha", "clear", "opaque"), 6: ("alpha", "clear", "opaque")}
    k = 0
    for ct, depths in LEGAL_DEPTHS.items():
        local = 0
        for depth in depths:
            for trans in trans_for[ct]:
                for interlace in (False, True):
                    chunks = _CHUNKS[(local + ct) % len(_CHUNKS)]
                    size = _SIZES[(k * 3 + interlace) % len(_SIZES)]
                    if trans in ("key", "one", "many") and size[0] * size[1] < 4:
                        size = (13, 7)
                    out.append(_png_case(ct, depth, trans, interlace, chunks, size, k))
                    k += 1
                    local += 1
    # colour: wide-gamut and misleading profiles on flat patches, every colour type
    # an EXIF orientation in eXIf (browsers apply it): 8- and 16-bit RGB, a turn and a flip
    for depth in (8, 16):
        for o in (5, 6):
            ow, oh = 19, 12
            top = (1 << depth) - 1
            upright = _levels(content(ow, oh, seed=o), depth)
            exif = exif_block(orientation=o)
            exif = exif[6:] if exif.startswith(b"Exif\0\0") else exif
            data = write_png(_stored_for(upright, o), 2, depth, after_plte=[(b"eXIf", exif)])
            out.append(Case(f"png-ct2-{depth}b-orient{o}", "png", data, (ow, oh),
                            truth=to_rgba(upright / top), bits=depth, orientation=o,
                            tags=frozenset({"orient", "ct2"})))
    # APNG: semi-transparent frames blended OVER, every dispose op (Pillow's own compositing
    # blends alpha like a colour)
    rng = np.random.default_rng(21)
    frames = []
    for i in range(4):
        a = np.round(to_rgba(content(24, 18, seed=i), alpha_pattern(24, 18, "partial"))).astype(np.uint8)
        a[..., 3] = np.where(rng.random((18, 24)) < 0.25, 0, a[..., 3])
        if i == 0:
            a[..., 3] = 255
        frames.append(Image.fromarray(np.roll(a, 3 * i, axis=1), "RGBA"))
    buf = io.BytesIO()
    frames[0].save(buf, "PNG", save_all=True, append_images=frames[1:], duration=[40, 60, 80, 100],
                   disposal=[0, 2, 1, 0], blend=[0, 1, 1, 1], loop=0, default_image=False)
    out.append(Case("png-apng-blend-over", "png", buf.getvalue(), (24, 18), frames=4, alpha=True,
                    tags=frozenset({"anim", "apng"})))
    for ct, depth, key in ((2, 8, "display-p3"), (2, 8, "adobe-rgb"), (2, 8, "prophoto"),
                           (2, 8, "linear-srgb"), (2, 8, "elle-g10"), (2, 16, "display-p3"),
                           (6, 8, "display-p3"), (3, 8, "prophoto"), (3, 4, "display-p3"),
                           (0, 8, "gray-g18"), (4, 8, "gray-g18"), (0, 16, "gray-g18"),
                           (2, 8, "srgb-lcms")):
        out.append(_icc_png(ct, depth, key))
    return out


def _icc_png(ct: int, depth: int, key: str) -> Case:
    w, h = 96, 72
    rgb = patches(w, h)
    top = (1 << depth) - 1
    palette = None
    if ct in (0, 4):
        g = _levels(rgb @ np.array([0.299, 0.587, 0.114]), depth)
        a = _levels(alpha_pattern(w, h, "partial"), depth) if ct == 4 else None
        samples = g if ct == 0 else np.stack([g, a], axis=-1)
        gv = g.astype(float) * 255 / top
        alpha = np.full((h, w), 255.0) if a is None else a * 255.0 / top
        truth = np.stack([gv, gv, gv, alpha], axis=-1)
    elif ct == 3:
        cols, idx = np.unique(_levels(rgb, 8).reshape(-1, 3), axis=0, return_inverse=True)
        idx = idx.reshape(h, w).astype(np.uint8)
        samples, palette = idx, cols
        truth = np.concatenate([cols[idx].astype(float), np.full((h, w, 1), 255.0)], axis=-1)
    else:
        c = _levels(rgb, depth)
        a = _levels(alpha_pattern(w, h, "partial"), depth) if ct == 6 else None
        samples = c if a is None else np.concatenate([c, a[..., None]], axis=-1)
        alpha = np.full((h, w), 255.0) if a is None else a * 255.0 / top
        truth = np.concatenate([c.astype(float) * 255 / top, alpha[..., None]], axis=-1)
    data = write_png(samples, ct, depth, palette=palette,
                     before_plte=[iccp_chunk(key, icclib.profile(key))])
    return Case(f"png-icc-{key}-ct{ct}-{depth}b", "png", data, (w, h), truth=truth,
                bits=16 if depth == 16 else 8, icc=key, patches=True,
                alpha=bool((truth[..., 3] < 255).any()),
                tags=frozenset({"icc", f"ct{ct}"} | ({"wide"} if key in icclib.WIDE_KEYS or
                                                      key == "gray-g18" else set())))


# -- JPEG ----------------------------------------------------------------------

_ORIENT = {  # stored = F(upright): the inverse of what a viewer applies
    1: lambda a: a, 2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, 1), 7: lambda a: np.rot90(a, -1)[::-1],
    8: lambda a: np.rot90(a, -1),
}


def _stored_for(upright: np.ndarray, orientation: int) -> np.ndarray:
    """The stored pixels that orientation ``orientation`` turns into ``upright``."""
    return np.ascontiguousarray(_ORIENT[orientation](upright))


def _jpeg_transpose_422_to_440(data: bytes) -> bytes | None:
    if JPEGTRAN is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        src = f"{tmp}/a.jpg"
        with open(src, "wb") as f:
            f.write(data)
        res = subprocess.run([JPEGTRAN, "-transpose", "-perfect", "-copy", "none", src],
                             capture_output=True, timeout=30)
    return res.stdout if res.returncode == 0 else None


def jpeg_cases() -> list[Case]:
    out = []
    w, h = 64, 48
    pw, ph = 96, 72  # flat patches big enough that a resize and 4:2:0 leave their middles flat
    up = content(w, h, seed=3)
    u8 = np.round(up * 255).astype(np.uint8)
    for sub in ("4:4:4", "4:2:2", "4:2:0"):
        for prog in (False, True):
            params = dict(quality=92, subsampling=sub, progressive=prog)
            if prog is False and sub == "4:2:0":
                params["restart_marker_rows"] = 1
            data = _pil(Image.fromarray(u8), "JPEG", **params)
            tag = "rst" if "restart_marker_rows" in params else ""
            out.append(Case(f"jpeg-rgb-{sub}-{'prog' if prog else 'base'}{tag}", "jpeg", data,
                            (w, h), lossy=True, tags=frozenset({"rgb"})))
    # 4:4:0 = the transpose of a 4:2:2 JPEG (jpegtran -transpose, lossless)
    t422 = _pil(Image.fromarray(np.ascontiguousarray(u8.transpose(1, 0, 2))), "JPEG", quality=92,
                subsampling="4:2:2")
    d440 = _jpeg_transpose_422_to_440(t422)
    if d440 is not None:
        out.append(Case("jpeg-rgb-4:4:0", "jpeg", d440, (w, h), lossy=True, tags=frozenset({"440"})))
    gray = np.round(up @ np.array([0.299, 0.587, 0.114]) * 255).astype(np.uint8)
    out.append(Case("jpeg-gray", "jpeg", _pil(Image.fromarray(gray), "JPEG", quality=92), (w, h),
                    lossy=True))
    out.append(Case("jpeg-gray-icc-g18", "jpeg",
                    _pil(Image.fromarray(np.round(patches(pw, ph) @ [0.3, 0.59, 0.11] * 255)
                                         .astype(np.uint8)), "JPEG", quality=95,
                         icc_profile=icclib.profile("gray-g18")), (pw, ph), lossy=True,
                    icc="gray-g18", patches=True, tags=frozenset({"icc", "wide"})))
    # CMYK (Adobe, inverted) and YCCK (the same file with the colour transform flag set to 2
    # and the channels stored as YCC of C, M, Y: byte surgery on Pillow's CMYK writer)
    cmyk = np.stack([255 - u8[..., 0], 255 - u8[..., 1], 255 - u8[..., 2],
                     np.full((h, w), 30, np.uint8)], axis=-1)
    out.append(Case("jpeg-cmyk", "jpeg", _pil(Image.fromarray(cmyk, "CMYK"), "JPEG", quality=95),
                    (w, h), lossy=True, tags=frozenset({"cmyk"})))
    c, m, yy = (cmyk[..., i].astype(float) for i in range(3))
    # stored YCC channels encode R'=C, G'=M, B'=Y (libjpeg: CMY = 255 - RGB of the YCC)
    r_, g_, b_ = 255 - c, 255 - m, 255 - yy
    Y = 0.299 * r_ + 0.587 * g_ + 0.114 * b_
    Cb = 128 - 0.168736 * r_ - 0.331264 * g_ + 0.5 * b_
    Cr = 128 + 0.5 * r_ - 0.418688 * g_ - 0.081312 * b_
    ycck = np.stack([Y, Cb, Cr, 255.0 - cmyk[..., 3]], axis=-1)
    # Pillow writes CMYK inverted: hand it 255 - stored so the file holds ``stored``
    raw = np.clip(np.round(255 - ycck), 0, 255).astype(np.uint8)
    d = bytearray(_pil(Image.fromarray(raw, "CMYK"), "JPEG", quality=95, subsampling="4:4:4"))
    at = d.find(b"Adobe")
    assert at > 0 and d[at + 11] == 0
    d[at + 11] = 2
    out.append(Case("jpeg-ycck", "jpeg", bytes(d), (w, h), lossy=True, tags=frozenset({"ycck"})))
    # CMYK with an embedded CMYK profile (libvips' built-in one: a real press profile; the
    # pipeline converts it with LittleCMS through Pillow, the oracle with libvips)
    import pyvips
    pu8 = np.round(patches(pw, ph) * 255).astype(np.uint8)
    ink = np.dstack([255 - pu8, np.full(pu8.shape[:2], 20, np.uint8)])
    out.append(Case("jpeg-cmyk-icc", "jpeg",
                    _pil(Image.fromarray(ink, "CMYK"), "JPEG", quality=95,
                         icc_profile=bytes(pyvips.Operation.call("profile_load", "cmyk"))),
                    (pw, ph), lossy=True, patches=True, tags=frozenset({"cmyk", "icc"})))
    for o in range(1, 9):
        stored = _stored_for(u8, o)
        ex = exif_block(orientation=o, gps=(o % 2 == 0), make="CameraMaker" if o % 2 == 0 else None)
        data = _pil(Image.fromarray(stored), "JPEG", quality=92, exif=ex)
        out.append(Case(f"jpeg-orient{o}", "jpeg", data, (w, h), orientation=o, lossy=True,
                        tags=frozenset({"orient"} | ({"gps"} if o % 2 == 0 else set()))))
    for key in ("display-p3", "adobe-rgb", "linear-srgb", "srgb-unnamed"):
        pu8 = np.round(patches(pw, ph) * 255).astype(np.uint8)
        data = _pil(Image.fromarray(pu8), "JPEG", quality=95, subsampling="4:4:4",
                    icc_profile=icclib.profile(key))
        out.append(Case(f"jpeg-icc-{key}", "jpeg", data, (pw, ph), icc=key, lossy=True, patches=True,
                        tags=frozenset({"icc"} | ({"wide"} if key in icclib.WIDE_KEYS else set()))))
    tiny = _pil(Image.fromarray(u8[:1, :1]), "JPEG", quality=95)
    out.append(Case("jpeg-1x1", "jpeg", tiny, (1, 1), lossy=True))
    odd = _pil(Image.fromarray(np.ascontiguousarray(u8[:17, :1])), "JPEG", quality=95)
    out.append(Case("jpeg-1x17", "jpeg", odd, (1, 17), lossy=True))
    return out


# -- WebP ----------------------------------------------------------------------

def webp_cases() -> list[Case]:
    w, h = 48, 40
    rgb = content(w, h, seed=5)
    u8 = np.round(rgb * 255).astype(np.uint8)
    a8 = np.round(alpha_pattern(w, h, "partial") * 255).astype(np.uint8)
    rgba = np.concatenate([u8, a8[..., None]], axis=-1)
    truth_rgba = rgba.astype(float)
    out = [
        Case("webp-lossy", "webp", _pil(Image.fromarray(u8), "WEBP", quality=90), (w, h), lossy=True),
        Case("webp-lossy-alpha", "webp", _pil(Image.fromarray(rgba), "WEBP", quality=90), (w, h),
             lossy=True, alpha=True),
        Case("webp-lossless-alpha", "webp",
             _pil(Image.fromarray(rgba), "WEBP", lossless=True, exact=True), (w, h),
             truth=truth_rgba, alpha=True),
        Case("webp-lossless-bigicc-srgb", "webp",
             _pil(Image.fromarray(u8), "WEBP", lossless=True, icc_profile=icclib.profile("srgb-big")),
             (w, h), truth=to_rgba(u8 / 255.0), icc="srgb-big", tags=frozenset({"icc", "bigicc"})),
        Case("webp-lossless-1x1", "webp", _pil(Image.fromarray(rgba[:1, :1]), "WEBP", lossless=True,
                                               exact=True), (1, 1), truth=truth_rgba[:1, :1],
             alpha=bool(a8[0, 0] < 255)),
    ]
    pu8 = np.round(patches(96, 72) * 255).astype(np.uint8)
    out.append(Case("webp-lossless-icc-p3-big", "webp",
                    _pil(Image.fromarray(pu8), "WEBP", lossless=True, icc_profile=icclib.profile("p3-big")),
                    (96, 72), truth=to_rgba(pu8 / 255.0), icc="p3-big", patches=True,
                    tags=frozenset({"icc", "wide", "bigicc"})))
    frames = [Image.fromarray(np.roll(rgba, 7 * i, axis=1)) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "WEBP", save_all=True, append_images=frames[1:], duration=[80, 120, 40],
                   loop=0, lossless=True)
    out.append(Case("webp-animated", "webp", buf.getvalue(), (w, h), frames=3, alpha=True,
                    truth=truth_rgba, tags=frozenset({"anim"})))
    return out


# -- GIF -----------------------------------------------------------------------

def gif_cases() -> list[Case]:
    out = []
    for (w, h) in ((31, 17), (1, 1), (64, 48)):
        rgb = content(w, h, seed=7)
        n = 16
        pal = smooth_palette(n, 1)
        lum = rgb @ np.array([0.299, 0.587, 0.114])
        idx = np.minimum((lum * n).astype(np.uint8), n - 1)
        idx[idx == 5] = 6  # the transparent index only where it is meant to be
        idx[h // 2:, : max(1, w // 2)] = 5
        im = Image.fromarray(idx, "P")
        im.putpalette(pal.reshape(-1).tobytes())
        data = _pil(im, "GIF", transparency=5)
        alpha = np.where(idx == 5, 0.0, 255.0)
        truth = np.concatenate([pal[idx].astype(float), alpha[..., None]], axis=-1)
        out.append(Case(f"gif-trns-{w}x{h}", "gif", data, (w, h), truth=truth, alpha=True,
                        tags=frozenset({"trns"})))
    # animation: local palettes, a transparent index, every disposal method
    w, h = 40, 30
    frames = []
    for i in range(4):
        rgb = content(w, h, seed=i)
        pal = smooth_palette(16, 10 + i)
        idx = np.minimum(((rgb @ [0.3, 0.6, 0.1]) * 16).astype(np.uint8), 15)
        idx[: h // 3, i * 8: i * 8 + 8] = 0
        f = Image.fromarray(idx, "P")
        f.putpalette(pal.reshape(-1).tobytes())
        frames.append(f)
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=[50, 70, 90, 110],
                   disposal=[0, 1, 2, 3], transparency=0, loop=0, optimize=False)
    out.append(Case("gif-animated-local-palettes", "gif", buf.getvalue(), (w, h), frames=4,
                    alpha=True, tags=frozenset({"anim"})))
    # disposal 2 with a transparent index, a frame with holes over the cleared area, frames
    # smaller than the canvas, local palettes (byte by byte: Pillow's writer does not make it)
    from .gifwriter import gif
    w, h = 36, 28
    rng = np.random.default_rng(17)
    p1 = np.full((12, 16), 1, np.uint8)
    p1[3:9, 4:12] = 3
    p2 = rng.integers(1, 4, (10, 14)).astype(np.uint8)
    p2[:4] = 0
    data = gif(w, h, [
        {"pixels": rng.integers(0, 4, (h, w)), "palette": [(255, 0, 0), (0, 255, 0), (0, 0, 255),
                                                         (255, 255, 0)], "delay": 10, "disposal": 1},
        {"pixels": p1, "palette": [(0, 0, 0), (10, 200, 30), (1, 1, 1), (200, 0, 200)], "x": 6,
         "y": 5, "delay": 10, "disposal": 2, "transparent": 3},
        {"pixels": p2, "palette": [(9, 9, 9), (50, 60, 70), (250, 240, 230), (128, 0, 255)],
         "x": 8, "y": 7, "delay": 10, "disposal": 3, "transparent": 0},
        {"pixels": rng.integers(0, 4, (6, 6)), "palette": [(90, 90, 200), (200, 90, 90),
                                                           (90, 200, 90), (0, 0, 0)],
         "x": 20, "y": 15, "delay": 20, "disposal": 1, "transparent": 2},
    ], loop=0)
    out.append(Case("gif-animated-disposal2-holes", "gif", data, (w, h), frames=4, alpha=True,
                    tags=frozenset({"anim", "disposal2"})))
    return out


# -- TIFF ----------------------------------------------------------------------

def _vips_tiff(arr: np.ndarray, interp: str, **kw) -> bytes:
    import pyvips
    fmt = "ushort" if arr.dtype == np.uint16 else "uchar"
    im = pyvips.Image.new_from_array(arr).cast(fmt).copy(interpretation=interp)
    return im.tiffsave_buffer(compression="deflate", **kw)


def tiff_cases() -> list[Case]:
    w, h = 37, 23
    rgb = content(w, h, seed=9)
    u8 = np.round(rgb * 255).astype(np.uint8)
    a01 = alpha_pattern(w, h, "partial")
    a8 = np.round(a01 * 255).astype(np.uint8)
    u16 = np.round(rgb * 65535).astype(np.uint16)
    a16 = np.round(a01 * 65535).astype(np.uint16)
    g16 = np.round((rgb @ [0.299, 0.587, 0.114]) * 65535).astype(np.uint16)
    out = [
        Case("tiff-rgb8", "tiff", _pil(Image.fromarray(u8), "TIFF", compression="tiff_lzw"), (w, h),
             truth=to_rgba(u8 / 255.0)),
        Case("tiff-rgba8", "tiff", _pil(Image.fromarray(np.dstack([u8, a8])), "TIFF"), (w, h),
             truth=np.dstack([u8, a8]).astype(float), alpha=True),
        Case("tiff-gray16", "tiff", _pil(Image.fromarray(g16), "TIFF"), (w, h), bits=16,
             truth=to_rgba(np.repeat(g16[..., None] / 65535.0, 3, axis=-1))),
        Case("tiff-rgb16", "tiff", _vips_tiff(u16, "rgb16"), (w, h), bits=16,
             truth=to_rgba(u16 / 65535.0), tags=frozenset({"16bit"})),
        Case("tiff-rgba16", "tiff", _vips_tiff(np.dstack([u16, a16]), "rgb16"), (w, h), bits=16,
             truth=to_rgba(u16 / 65535.0, a16 / 65535.0), alpha=True, tags=frozenset({"16bit"})),
    ]
    # the TIFF Orientation tag, 1-8, at 8 and 16 bits (libvips writes it; viewers apply it)
    import pyvips
    ow, oh = 17, 11
    up = content(ow, oh, seed=4)
    for bits in (8, 16):
        top = 65535 if bits == 16 else 255
        upright = np.round(up * top).astype(np.uint16 if bits == 16 else np.uint8)
        for o in range(1, 9):
            stored = _stored_for(upright, o)
            im = pyvips.Image.new_from_array(stored).cast("ushort" if bits == 16 else "uchar")
            im = im.copy(interpretation="rgb16" if bits == 16 else "srgb")
            im.set_type(pyvips.GValue.gint_type, "orientation", o)
            out.append(Case(f"tiff-orient{o}-{bits}b", "tiff", im.tiffsave_buffer(compression="none"),
                            (ow, oh), truth=to_rgba(upright / top), bits=bits, orientation=o,
                            tags=frozenset({"orient"} | ({"16bit"} if bits == 16 else set()))))
    pages = [Image.fromarray(np.roll(u8, 5 * i, axis=0)) for i in range(3)]
    buf = io.BytesIO()
    pages[0].save(buf, "TIFF", save_all=True, append_images=pages[1:])
    out.append(Case("tiff-multipage", "tiff", buf.getvalue(), (w, h), frames=3,
                    truth=to_rgba(u8 / 255.0), tags=frozenset({"pages"})))
    pu8 = np.round(patches(96, 72) * 255).astype(np.uint8)
    out.append(Case("tiff-icc-p3", "tiff", _pil(Image.fromarray(pu8), "TIFF",
                                                 icc_profile=icclib.profile("display-p3")),
                    (96, 72), truth=to_rgba(pu8 / 255.0), icc="display-p3", patches=True,
                    tags=frozenset({"icc", "wide"})))
    return out


# -- AVIF ----------------------------------------------------------------------

def avif_cases() -> list[Case]:
    import pyvips
    w, h = 48, 40
    rgb = content(w, h, seed=11)
    a01 = alpha_pattern(w, h, "partial")
    out = []
    u8 = np.round(np.dstack([rgb, a01]) * 255).astype(np.uint8)
    out.append(Case("avif-8-rgb", "avif", _pil(Image.fromarray(u8[..., :3]), "AVIF", quality=90),
                    (w, h), lossy=True))
    out.append(Case("avif-8-alpha", "avif", _pil(Image.fromarray(u8), "AVIF", quality=90), (w, h),
                    lossy=True, alpha=True))
    for bd in (10, 12):
        u16 = np.round(np.dstack([rgb, a01]) * 65535).astype(np.uint16)
        im = pyvips.Image.new_from_array(u16).cast("ushort").copy(interpretation="rgb16")
        data = im.heifsave_buffer(compression="av1", bitdepth=bd, Q=90)
        out.append(Case(f"avif-{bd}-alpha", "avif", data, (w, h), lossy=True, alpha=True, bits=16,
                        tags=frozenset({"deep"})))
    return out


# -- BMP -----------------------------------------------------------------------

def _bmp(bits: int, w: int, h: int, rows: list[bytes], palette: np.ndarray | None,
         alpha_masks: bool = False) -> bytes:
    """A bottom-up BMP (BITMAPINFOHEADER, or V4 with an alpha mask for 32-bit)."""
    hdr_size = 108 if alpha_masks else 40
    pal = b"" if palette is None else b"".join(bytes((b, g, r, 0)) for r, g, b in palette)
    stride = ((w * bits + 31) // 32) * 4
    pix = b"".join(r.ljust(stride, b"\0") for r in reversed(rows))
    offset = 14 + hdr_size + len(pal)
    comp = 3 if alpha_masks else 0
    info = struct.pack("<IiiHHIIiiII", hdr_size, w, h, 1, bits, comp, len(pix), 2835, 2835,
                       0 if palette is None else len(palette), 0)
    if alpha_masks:
        info += struct.pack("<IIII", 0x00FF0000, 0x0000FF00, 0x000000FF, 0xFF000000)
        info += b"sRGB" + bytes(36) + bytes(12)
    return b"BM" + struct.pack("<IHHI", offset + len(pix), 0, 0, offset) + info + pal + pix


def bmp_cases() -> list[Case]:
    out = []
    w, h = 13, 7
    rgb = content(w, h, seed=13)
    u8 = np.round(rgb * 255).astype(np.uint8)
    for bits in (1, 4, 8):
        n = 1 << bits
        pal = smooth_palette(n, bits)
        idx = np.minimum(((rgb @ [0.3, 0.6, 0.1]) * n).astype(np.uint8), n - 1)
        rows = []
        for y in range(h):
            if bits == 8:
                rows.append(idx[y].tobytes())
            else:
                per = 8 // bits
                v = np.concatenate([idx[y], np.zeros((-w) % per, np.uint8)]).reshape(-1, per)
                packed = np.zeros(len(v), np.uint8)
                for i in range(per):
                    packed |= v[:, i] << (8 - bits * (i + 1))
                rows.append(packed.tobytes())
        data = _bmp(bits, w, h, rows, pal)
        out.append(Case(f"bmp-{bits}", "bmp", data, (w, h), truth=to_rgba(pal[idx] / 255.0)))
    rows24 = [u8[y][:, ::-1].tobytes() for y in range(h)]
    out.append(Case("bmp-24", "bmp", _bmp(24, w, h, rows24, None), (w, h), truth=to_rgba(u8 / 255.0)))
    a8 = np.round(alpha_pattern(w, h, "partial") * 255).astype(np.uint8)
    bgra = np.dstack([u8[..., ::-1], a8])
    rows32 = [bgra[y].tobytes() for y in range(h)]
    out.append(Case("bmp-32-alpha", "bmp", _bmp(32, w, h, rows32, None, alpha_masks=True), (w, h),
                    truth=np.dstack([u8, a8]).astype(float), alpha=True))
    return out


@functools.lru_cache(maxsize=1)
def all_cases() -> tuple[Case, ...]:
    from .heifjxl import heif_cases, jxl_cases  # they build on this module's helpers

    return tuple(png_cases() + jpeg_cases() + webp_cases() + gif_cases() + tiff_cases()
                 + avif_cases() + bmp_cases() + heif_cases() + jxl_cases())
