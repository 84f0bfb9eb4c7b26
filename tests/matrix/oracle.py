"""The oracle: what a colour-managed viewer shows, decoded without pyimgopt.

Files are decoded with libvips (pyvips: libspng, libjpeg-turbo, libwebp,
libnsgif, libtiff, libheif), which shares no decoding code with the pipeline's
Pillow, oriented by their EXIF orientation, and rendered to sRGB through their
embedded ICC profile (LittleCMS inside libvips, relative colorimetric). CMYK
without a profile is converted naively (multiplicative), as browsers do. BMP
(which this libvips does not read) is decoded by Pillow, only for outputs.
JPEG XL and HEVC-coded HEIF (which the pyvips wheel's libvips cannot read) are
decoded by Debian's command-line tools into PNG, then read as above:
``djxl`` (libjxl-tools 0.7, not the plugin's libjxl; it applies the codestream
orientation, and its ICC profile is dropped when it only says sRGB) and
``heif-convert`` (libheif-examples with libde265; it applies ``irot``/``imir``
and ``clap``, so the EXIF orientation it copies is not applied again: HEIF's
transforms are normative, its EXIF orientation informative).
Comparisons: SSIM (7x7 box windows, written here), per-patch mean colour,
exact RGBA.
"""

from __future__ import annotations

import functools
import io
import os
import shutil
import struct
import subprocess
import tempfile
import zlib
from dataclasses import dataclass

import numpy as np
import pyvips
from PIL import Image

__all__ = ["View", "view", "frames", "ssim", "composite", "resize_ref", "patch_means", "read_exif",
           "is_jxl", "is_heif", "has_box", "djxl", "DJXL", "HEIF_CONVERT"]

DJXL = shutil.which("djxl")
HEIF_CONVERT = shutil.which("heif-convert")
_JXL_CONTAINER = b"\x00\x00\x00\x0cJXL \r\n\x87\n"
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}


@dataclass
class View:
    rgba: np.ndarray        # H x W x 4 float, 0..255, rendered to sRGB, upright
    raw: np.ndarray         # H x W x C as stored (uint8/uint16), upright, no profile applied
    bits: int               # 8 or 16 (per sample, as decoded)
    icc: bytes | None
    pages: int
    fmt: str
    orientation: int


def _to_rgba(arr: np.ndarray, interp: str) -> np.ndarray:
    arr = arr.astype(np.float64)
    if arr.ndim == 2:
        arr = arr[..., None]
    scale = 255.0 / 65535.0 if interp in ("rgb16", "grey16") else 1.0
    arr = arr * scale
    c = arr.shape[2]
    if c == 1:
        arr = np.concatenate([arr] * 3 + [np.full(arr.shape[:2] + (1,), 255.0)], axis=-1)
    elif c == 2:
        arr = np.concatenate([arr[..., :1]] * 3 + [arr[..., 1:]], axis=-1)
    elif c == 3:
        arr = np.concatenate([arr, np.full(arr.shape[:2] + (1,), 255.0)], axis=-1)
    return arr[..., :4]


def _np(im: pyvips.Image) -> np.ndarray:
    return im.numpy().reshape(im.height, im.width, im.bands)


def _pillow_view(data: bytes) -> View:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        raw = np.asarray(im.convert("RGBA"))
        fmt = im.format.lower()
    return View(raw.astype(float), raw, 8, None, 1, fmt, 1)


def is_jxl(data: bytes) -> bool:
    """A bare JPEG XL codestream or a JPEG XL container."""
    return data[:2] == b"\xff\x0a" or data[:12] == _JXL_CONTAINER


def is_heif(data: bytes) -> bool:
    """An ISOBMFF file with a HEIF (not AVIF) brand."""
    if data[4:8] != b"ftyp":
        return False
    size = int.from_bytes(data[:4], "big")
    brands = {data[8:12]} | {data[i:i + 4] for i in range(16, min(size, len(data)) - 3, 4)}
    return not brands & {b"avif", b"avis"} and bool(brands & _HEIF_BRANDS)


def _boxes(data: bytes):
    pos = 0
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos:pos + 4], "big")
        kind, head = data[pos + 4:pos + 8], 8
        if size == 1:
            size, head = int.from_bytes(data[pos + 8:pos + 16], "big"), 16
        elif size == 0:
            size = len(data) - pos
        if size < head:
            return
        yield kind, data[pos + head:pos + size]
        pos += size


def has_box(data: bytes, kind: bytes) -> bool:
    """Whether the top level of an ISOBMFF file (a JPEG XL container) holds a ``kind`` box."""
    return any(k == kind for k, _ in _boxes(data))


def _run(tool: str, data: bytes, suffix: str, out_suffix: str) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "in" + suffix), os.path.join(tmp, "out" + out_suffix)
        with open(src, "wb") as f:
            f.write(data)
        args = [tool, src, dst] + (["--quiet", "--num_threads=1"] if tool == DJXL else [])
        subprocess.run(args, check=True, capture_output=True, timeout=60)
        with open(dst, "rb") as f:
            return f.read()


@functools.lru_cache(maxsize=64)
def djxl(data: bytes, out_suffix: str = ".png") -> bytes:
    """Debian's djxl: ``.png`` pixels, or ``.jpg`` (the JPEG rebuilt from reconstruction data)."""
    if DJXL is None:
        raise RuntimeError("djxl not found (apt-get install libjxl-tools)")
    return _run(DJXL, data, ".jxl", out_suffix)


def _png_chunks(png: bytes):
    pos = 8
    while pos + 8 <= len(png):
        n = struct.unpack(">I", png[pos:pos + 4])[0]
        yield png[pos + 4:pos + 8], pos, pos + 12 + n
        pos += 12 + n


def _srgb_like(icc: bytes, gray: bool) -> bool:
    """Whether rendering through ``icc`` moves no colour of a grid by more than one level."""
    levels = np.arange(0, 256, 17, dtype=np.uint8)
    if gray:
        grid = levels[None, :, None]
    else:
        grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(1, -1, 3)
    im = pyvips.Image.new_from_array(np.ascontiguousarray(grid)).cast("uchar").copy(
        interpretation="b-w" if gray else "srgb")
    im.set_type(pyvips.GValue.blob_type, "icc-profile-data", icc)
    out = _np(im.icc_transform("srgb", embedded=True, intent="relative")).astype(float)
    want = np.repeat(grid, 3, axis=-1) if gray else grid
    return float(np.abs(out[..., :3] - want).max()) <= 1.0


def _drop_srgb_iccp(png: bytes) -> bytes:
    """The PNG without its ``iCCP`` chunk when the profile only describes sRGB."""
    for kind, start, end in _png_chunks(png):
        if kind == b"iCCP":
            body = png[start + 8:end - 4]
            icc = zlib.decompress(body[body.index(b"\0") + 2:])
            if _srgb_like(icc, gray=icc[16:20] == b"GRAY"):
                return png[:start] + png[end:]
            break
    return png


def view(data: bytes, page: int = 0) -> View:
    """Decode ``data`` as a viewer would (see the module docstring)."""
    if data[:2] == b"BM":
        return _pillow_view(data)
    if is_jxl(data):
        v = _view(_drop_srgb_iccp(djxl(data)), 0, autorotate=True)
        v.fmt, v.orientation = "jxl", 1  # djxl applied the codestream orientation
        return v
    if is_heif(data):
        if HEIF_CONVERT is None:
            raise RuntimeError("heif-convert not found (apt-get install libheif-examples)")
        v = _view(_run(HEIF_CONVERT, data, ".heic", ".png"), 0, autorotate=False)
        v.fmt, v.orientation = "heif", 1  # irot/imir applied by libheif
        return v
    if data[4:8] == b"ftyp" and b"avis" in data[8:32]:
        # an AVIF image sequence (Pillow writes animated AVIF so): this libvips' libheif
        # cannot read sequences; Pillow's libavif gives its first frame
        return _pillow_view(data)
    return _view(data, page, autorotate=True)


def _view(data: bytes, page: int, *, autorotate: bool) -> View:
    paged = data[:6] in (b"GIF87a", b"GIF89a") or data[:4] in (b"II*\x00", b"MM\x00*") or (
        data[:4] == b"RIFF" or data[4:8] == b"ftyp")
    opts = {"page": page} if paged else {}
    im = pyvips.Image.new_from_buffer(data, "", access="random", fail=True, **opts)
    loader = im.get("vips-loader")
    pages = im.get("n-pages") if im.get_typeof("n-pages") else 1
    orientation = im.get("orientation") if im.get_typeof("orientation") else 1
    icc = im.get("icc-profile-data") if im.get_typeof("icc-profile-data") else None
    if im.get_typeof("page-height") and im.get("page-height") != im.height:
        im = im.crop(0, 0, im.width, im.get("page-height"))
    if autorotate:
        im = im.autorot()
    interp = im.interpretation
    raw = im.numpy().reshape(im.height, im.width, im.bands)
    if interp == "cmyk":
        ink = raw.astype(np.float64)
        if icc is not None:
            rendered = im.icc_transform("srgb", embedded=True, intent="relative")
            rgba = _to_rgba(_np(rendered), "srgb")
        else:
            k = 255.0 - ink[..., 3:4]
            rgb = (255.0 - ink[..., :3]) * k / 255.0
            rgba = _to_rgba(np.round(rgb), "srgb")
    elif icc is not None:
        depth = 16 if im.format == "ushort" else 8
        rendered = im.icc_transform("srgb", embedded=True, intent="relative", depth=depth)
        rgba = _to_rgba(_np(rendered), rendered.interpretation)
    else:
        if im.format == "ushort" and interp not in ("rgb16", "grey16"):
            interp = "rgb16" if im.bands >= 3 else "grey16"
        rgba = _to_rgba(raw, interp)
    bits = 16 if im.format == "ushort" else 8
    return View(rgba, raw, bits, icc, pages, loader.split("load")[0], orientation)


def frames(data: bytes) -> list[np.ndarray]:
    """Every frame of an animation as displayed: RGBA uint8, the whole canvas each.

    GIF and WebP through libvips (``n=-1``: libnsgif and libwebp's demuxer
    composite them); APNG, which this libvips cannot read as an animation, by
    :func:`_apng_frames` (each frame's region decoded by libvips, composited
    here as the APNG specification says). A still image gives one frame.
    libnsgif clears a disposal-2 GIF frame that has no transparent index to
    the background colour (browsers: to transparent), so GIFs judged by this
    should give such frames a transparent index.
    """
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        if b"acTL" not in data[:4096]:
            return [np.round(view(data).rgba).astype(np.uint8)]
        return _apng_frames(data)
    im = pyvips.Image.new_from_buffer(data, "", n=-1, access="random", fail=True)
    page = im.get("page-height") if im.get_typeof("page-height") else im.height
    arr = _np(im)
    if arr.shape[2] in (1, 2):
        arr = np.concatenate([arr[..., :1]] * 3 + [arr[..., 1:]], axis=-1)
    if arr.shape[2] == 3:
        arr = np.concatenate([arr, np.full(arr.shape[:2] + (1,), 255, arr.dtype)], axis=-1)
    return [np.ascontiguousarray(arr[i * page:(i + 1) * page]) for i in range(im.height // page)]


def _crc_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(
        ">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def _apng_frames(data: bytes) -> list[np.ndarray]:
    """APNG frames: ``fcTL`` regions decoded by libvips as one-image PNGs, then blended
    (SOURCE: replace; OVER: Porter-Duff over, alpha included) and disposed (BACKGROUND:
    transparent; PREVIOUS: restored) on an 8-bit canvas, as the specification says."""
    ihdr, shared, frames, control, coded = b"", [], [], None, b""
    for kind, pos, end in _png_chunks(data):
        body = data[pos + 8:end - 4]
        if kind == b"IHDR":
            ihdr = body
        elif kind in (b"PLTE", b"tRNS"):
            shared.append(data[pos:end])
        elif kind == b"fcTL":
            if control is not None:
                frames.append((control, coded))
            control, coded = struct.unpack(">IIIIIHHBB", body[:26]), b""
        elif kind == b"IDAT" and control is not None:
            coded += body
        elif kind == b"fdAT":
            coded += body[4:]
        if kind == b"IEND":
            break
    frames.append((control, coded))
    width, height = struct.unpack(">II", ihdr[:8])
    canvas = np.zeros((height, width, 4))
    out = []
    for (_, w, h, x, y, _, _, dispose, blend), coded in frames:
        png = (b"\x89PNG\r\n\x1a\n" + _crc_chunk(b"IHDR", struct.pack(">II", w, h) + ihdr[8:])
               + b"".join(shared) + _crc_chunk(b"IDAT", coded) + _crc_chunk(b"IEND", b""))
        px = _view(png, 0, autorotate=False).rgba
        before = canvas[y:y + h, x:x + w].copy()
        area = canvas[y:y + h, x:x + w]
        if blend == 0:
            area[:] = px
        else:
            a, b = px[..., 3:] / 255, area[..., 3:] / 255
            alpha = a + b * (1 - a)
            rgb = (px[..., :3] * a + area[..., :3] * b * (1 - a)) / np.where(alpha > 0, alpha, 1)
            area[..., :3], area[..., 3:] = np.where(alpha > 0, rgb, 0), alpha * 255
        area[:] = np.round(area)
        out.append(canvas.astype(np.uint8).copy())
        if dispose == 1:
            canvas[y:y + h, x:x + w] = 0
        elif dispose == 2:
            canvas[y:y + h, x:x + w] = before
    return out


def same_frames(a: list[np.ndarray], b: list[np.ndarray], tol: int = 0) -> list[int]:
    """Per frame, the largest RGBA difference (colour under alpha 0 ignored)."""
    out = []
    for x, y in zip(a, b):
        x, y = x.astype(int).copy(), y.astype(int).copy()
        x[x[..., 3] == 0] = 0
        y[y[..., 3] == 0] = 0
        out.append(int(np.abs(x - y).max()) if x.shape == y.shape else 999)
    return out


def composite(rgba: np.ndarray, bg: tuple[float, float, float]) -> np.ndarray:
    a = rgba[..., 3:4] / 255.0
    return rgba[..., :3] * a + np.asarray(bg, float) * (1 - a)


def _box(x: np.ndarray, r: int) -> np.ndarray:
    """Mean over (2r+1)^2 windows, valid region only."""
    k = 2 * r + 1
    c = np.cumsum(np.cumsum(np.pad(x, ((1, 0), (1, 0))), axis=0), axis=1)
    return (c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]) / (k * k)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM (7x7 box windows) over channels of two float arrays in 0..255."""
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    h, w = a.shape[:2]
    if min(h, w) < 7:
        return 1.0 - float(np.abs(a - b).mean()) / 255.0
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    vals = []
    for ch in range(a.shape[2]):
        x, y = a[..., ch].astype(np.float64), b[..., ch].astype(np.float64)
        mx, my = _box(x, 3), _box(y, 3)
        sxx = _box(x * x, 3) - mx * mx
        syy = _box(y * y, 3) - my * my
        sxy = _box(x * y, 3) - mx * my
        s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
        vals.append(float(s.mean()))
    return float(np.mean(vals))


def resize_ref(rgba: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``rgba`` resized to ``size`` by libvips (lanczos3, premultiplied)."""
    h, w = rgba.shape[:2]
    im = pyvips.Image.new_from_array(np.ascontiguousarray(rgba.astype(np.float32))).copy(
        interpretation="srgb")
    im = im.premultiply().resize(size[0] / w, vscale=size[1] / h, kernel="lanczos3")
    out = im.unpremultiply().numpy().astype(np.float64)
    out = out[: size[1], : size[0]]
    if out.shape[:2] != (size[1], size[0]):  # rounding: pad by edge replication
        out = np.pad(out, ((0, size[1] - out.shape[0]), (0, size[0] - out.shape[1]), (0, 0)),
                     mode="edge")
    return np.clip(out, 0, 255)


def patch_means(rgb: np.ndarray, cols: int = 4, rows: int = 3) -> np.ndarray:
    """Mean colour of the inner half of each patch of a ``cols`` x ``rows`` grid."""
    h, w = rgb.shape[:2]
    out = []
    for r in range(rows):
        for c in range(cols):
            y0, y1 = r * h // rows, (r + 1) * h // rows
            x0, x1 = c * w // cols, (c + 1) * w // cols
            dy, dx = (y1 - y0) // 4, (x1 - x0) // 4
            out.append(rgb[y0 + dy: y1 - dy, x0 + dx: x1 - dx].reshape(-1, rgb.shape[2]).mean(0))
    return np.array(out)


def read_exif(data: bytes) -> dict:
    """EXIF tags of ``data`` (IFD0 and GPS) through Pillow's EXIF parser (metadata only).

    A JPEG XL's EXIF is its container's ``Exif`` box (a 4-byte offset, then
    TIFF); one that rebuilds a JPEG is read from the JPEG djxl rebuilds (its
    ``Exif`` box, Brotli-compressed, is where that JPEG's APP1 comes from);
    a HEIF's from the PNG heif-convert writes (it copies the EXIF item).
    """
    if is_jxl(data) and has_box(data, b"jbrd"):
        return read_exif(djxl(data, ".jpg"))
    if is_heif(data):  # heif-convert copies the EXIF item into its PNG
        return read_exif(_run(HEIF_CONVERT, data, ".heic", ".png"))
    if is_jxl(data):
        ex = Image.Exif()
        for kind, body in _boxes(data) if data[:2] != b"\xff\x0a" else ():
            if kind == b"Exif":
                ex.load(body[4 + int.from_bytes(body[:4], "big"):])
            elif kind == b"brob" and body[:4] in (b"Exif", b"xml "):
                raise AssertionError("Brotli-compressed metadata box: cannot check it here")
    else:
        with Image.open(io.BytesIO(data)) as im:
            ex = im.getexif()
    tags = dict(ex)
    gps = dict(ex.get_ifd(0x8825))
    if gps:
        tags["gps"] = gps
    return tags
