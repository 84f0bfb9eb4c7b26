"""JPEG XL: header parsing, decoding, encoding and lossless JPEG recompression.

Owns everything pyimgopt does with JPEG XL through the optional
``pillow-jxl-plugin`` wheel (libjxl), reached lazily through :mod:`.boost`
(``PYIMGOPT_DISABLE=jxl`` turns it off):

- :func:`parse_header` reads the codestream's SizeHeader and ImageMetadata
  (bare ``FF 0A`` codestream or ISOBMFF container with ``jxlc``/``jxlp``
  boxes) with a bit reader of its own: the plugin's decoder decodes every
  pixel before it says how large the image is, so the limits are checked
  here first. Animated files are refused from this header (the plugin
  composites every frame and returns the last one).
- :func:`decode` gives one upright Pillow image (libjxl applies the
  codestream orientation; a file that carries JPEG reconstruction data comes
  back as its JPEG, oriented here from its EXIF).
- :func:`encode` writes lossy (``quality``, libjxl's distance mapping) or
  lossless JPEG XL; :func:`from_jpeg` recompresses a JPEG losslessly without
  decoding it to pixels, and keeps the result only after the JPEG was
  rebuilt from it byte for byte.
- :func:`strip_metadata` drops the container's metadata boxes without
  touching the codestream (the JPEG XL counterpart of ``strip_jpeg``).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

from PIL import Image

from ..errors import DecodeError, EncodeError, TooLargeError, UnsupportedFormatError
from . import boost

__all__ = ["JxlHeader", "parse_header", "decode", "encode", "from_jpeg", "available",
           "require", "verify", "reconstruct", "check_limits", "strip_metadata",
           "DEFAULT_QUALITY", "libjxl_effort"]

#: Lossy JPEG XL quality when none is given. libjxl maps quality to a
#: butteraugli distance (q90 = distance 1, "visually lossless"; q75 about 2.4).
#: On the 12 corpus JPEG photos up to 4 MP, q75 reached a mean luma SSIM of
#: 0.961 at a median 0.56x the bytes of pyimgopt's default JPEG output (q80,
#: capped at the source's quality; mean SSIM 0.982): smaller and softer. Ask
#: ``quality`` or ``target_ssim`` for a given look.
DEFAULT_QUALITY = 75
#: libjxl's lossy efforts 8 and 9 steer quantisation with butteraugli, whose own
#: source calls its values "non-sensical" for images under 8 pixels on a side: such
#: images came out at SSIM ~0.2 (mean error 20-40 levels, against ~6 at effort 7;
#: libjxl 0.12 in the plugin and Debian's cjxl 0.7 alike). They are encoded at 7.
_BUTTERAUGLI_MIN_SIDE = 8
_SIGNATURE = b"\xff\x0a"
_CONTAINER = b"\x00\x00\x00\x0cJXL \r\n\x87\n"
_RATIOS = {1: (1, 1), 2: (12, 10), 3: (4, 3), 4: (3, 2), 5: (16, 9), 6: (5, 4), 7: (2, 1)}


def available() -> bool:
    """Whether ``pillow-jxl-plugin`` is installed and not disabled."""
    return boost.available("jxl")


def require(stage: str, path: str | None = None):
    """The plugin module, or an ``unsupported_format`` error naming the wheel to install."""
    mod = boost._module("jxl")
    if mod is None:
        raise UnsupportedFormatError(
            "JPEG XL needs the optional package pillow-jxl-plugin "
            "(pip install pillow-jxl-plugin), which is missing or disabled (PYIMGOPT_DISABLE)",
            path=path, stage=stage)
    return mod


def _threads() -> int:
    value = os.environ.get("PYIMGOPT_CODEC_THREADS", "")
    return max(1, int(value)) if value.isdigit() else -1


def libjxl_effort(effort: int) -> int:
    """libjxl's effort (1-9) for pyimgopt's ``effort`` (0-9): 6 is libjxl's default 7."""
    return max(1, min(9, effort + 1))


class _Bits:
    """LSB-first bit reader over a byte string (the JPEG XL bit order)."""

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.bit = pos * 8

    def u(self, n: int) -> int:
        value = 0
        for i in range(n):
            byte = self.bit >> 3
            if byte >= len(self.data):
                raise EOFError("header ends early")
            value |= ((self.data[byte] >> (self.bit & 7)) & 1) << i
            self.bit += 1
        return value

    def bool(self) -> bool:
        return bool(self.u(1))

    def u32(self, *dists: tuple[int, int]) -> int:
        """``U32(d0, d1, d2, d3)``: a 2-bit selector, then (bits, offset) of that distribution."""
        bits, offset = dists[self.u(2)]
        return offset + (self.u(bits) if bits else 0)


def _size(r: _Bits) -> tuple[int, int]:
    div8 = r.bool()
    big = ((9, 1), (13, 1), (18, 1), (30, 1))
    height = (r.u(5) + 1) * 8 if div8 else r.u32(*big)
    ratio = r.u(3)
    if ratio:
        num, den = _RATIOS[ratio]
        width = height * num // den
    else:
        width = (r.u(5) + 1) * 8 if div8 else r.u32(*big)
    return width, height


def _bit_depth(r: _Bits) -> int:
    if r.bool():  # float samples
        bits = r.u32((0, 32), (0, 16), (0, 24), (6, 1))
        r.u(4)
        return bits
    return r.u32((0, 8), (0, 10), (0, 12), (6, 1))


def _extra_channel(r: _Bits) -> int:
    """Skip one ExtraChannelInfo; return its type (0 = alpha)."""
    if r.bool():  # all default: 8-bit alpha
        return 0
    kind = r.u32((0, 0), (0, 1), (4, 2), (6, 18))
    _bit_depth(r)
    r.u32((0, 0), (0, 3), (0, 4), (3, 1))  # dim_shift
    r.u(8 * r.u32((0, 0), (4, 0), (5, 16), (10, 48)))  # name
    if kind == 0:
        r.bool()  # alpha_associated
    elif kind == 2:
        r.u(64)  # spot colour: four F16
    elif kind == 5:
        r.u32((0, 1), (2, 0), (4, 3), (8, 19))
    return kind


def _preview(r: _Bits) -> None:
    div8 = r.bool()
    d8 = ((0, 16), (0, 32), (5, 1), (9, 33))
    full = ((6, 1), (8, 65), (10, 321), (12, 1345))
    r.u32(*(d8 if div8 else full))
    if r.u(3) == 0:
        r.u32(*(d8 if div8 else full))


@dataclass
class JxlHeader:
    """What the codestream header says, before any pixel is decoded.

    ``width``/``height`` are as displayed (after the codestream orientation,
    which libjxl applies when decoding); ``stored`` as coded.
    """

    width: int
    height: int
    stored: tuple[int, int]
    orientation: int
    animated: bool
    container: bool
    #: The file carries JPEG reconstruction data (a ``jbrd`` box).
    jpeg_reconstruction: bool = False
    bits: int = 8
    alpha: bool = False
    #: Coded in XYB (lossy VarDCT or lossy modular); ``False`` is how lossless files are coded.
    xyb: bool = True


def _boxes(data: bytes):
    """(type, body start, body end) of each ISOBMFF box; a truncated last box ends at EOF."""
    pos, n = 0, len(data)
    while pos + 8 <= n:
        size = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        head = 8
        if size == 1:
            if pos + 16 > n:
                return
            size, head = int.from_bytes(data[pos + 8:pos + 16], "big"), 16
        elif size == 0:
            size = n - pos
        if size < head:
            raise ValueError(f"box {kind!r} declares {size} bytes")
        yield kind, pos + head, min(n, pos + size)
        pos += size


def _codestream_head(data: bytes, want: int = 512) -> tuple[bytes, bool]:
    """The first ``want`` bytes of the codestream, and whether a ``jbrd`` box is present."""
    if data[:2] == _SIGNATURE:
        return data[:want], False
    head = b""
    jbrd = False
    boxes = 0
    for kind, start, end in _boxes(data):
        boxes += 1
        if boxes > 100_000:
            raise ValueError("more than 100000 boxes")
        if kind == b"jbrd":
            jbrd = True
        elif kind == b"jxlc" and len(head) < want:
            head += data[start:end]
        elif kind == b"jxlp" and len(head) < want:
            head += data[start + 4:end]  # 4-byte part index first
        if len(head) >= want and jbrd:
            break
    return head[:want], jbrd


def parse_header(data: bytes) -> JxlHeader:
    """Parse the size, orientation and animation flag of a JPEG XL file.

    Raises
    ------
    ValueError
        Not a JPEG XL codestream, or a header that is cut short or invalid.
    """
    container = data[:12] == _CONTAINER
    if not container and data[:2] != _SIGNATURE:
        raise ValueError("no JPEG XL signature")
    try:
        code, jbrd = _codestream_head(data)
    except ValueError as exc:
        raise ValueError(f"container: {exc}") from None
    if code[:2] != _SIGNATURE:
        raise ValueError("the container holds no codestream" if container else "bad signature")
    r = _Bits(code, 2)
    try:
        width, height = _size(r)
        orientation, animated, bits, alpha, xyb = 1, False, 8, False, True
        if not r.bool():  # not all_default
            if r.bool():  # extra_fields
                orientation = 1 + r.u(3)
                if r.bool():  # have_intr_size
                    _size(r)
                if r.bool():  # have_preview
                    _preview(r)
                animated = r.bool()
                if animated:  # AnimationHeader
                    r.u32((0, 100), (0, 1000), (10, 1), (30, 1))
                    r.u32((0, 1), (0, 1001), (8, 1), (10, 1))
                    r.u32((0, 0), (3, 0), (16, 0), (32, 0))
                    r.bool()
            bits = _bit_depth(r)
            r.bool()  # modular_16bit_buffers
            extra = r.u32((0, 0), (0, 1), (4, 2), (12, 1))
            if extra > 256:
                raise ValueError(f"{extra} extra channels")
            alpha = any(_extra_channel(r) == 0 for _ in range(extra))
            xyb = r.bool()
    except EOFError:
        raise ValueError("the header is cut short") from None
    if width < 1 or height < 1:
        raise ValueError("the header declares an empty image")
    shown = (height, width) if orientation >= 5 else (width, height)
    return JxlHeader(width=shown[0], height=shown[1], stored=(width, height),
                     orientation=orientation, animated=animated, container=container,
                     jpeg_reconstruction=jbrd, bits=bits, alpha=alpha, xyb=xyb)


_ORIENT = {2: (Image.Transpose.FLIP_LEFT_RIGHT,), 3: (Image.Transpose.ROTATE_180,),
           4: (Image.Transpose.FLIP_TOP_BOTTOM,), 5: (Image.Transpose.TRANSPOSE,),
           6: (Image.Transpose.ROTATE_270,), 7: (Image.Transpose.TRANSVERSE,),
           8: (Image.Transpose.ROTATE_90,)}


def _upright_jpeg(jpeg: bytes) -> Image.Image:
    """The JPEG a ``jbrd`` box rebuilt, decoded and turned upright by its EXIF orientation."""
    im = Image.open(io.BytesIO(jpeg), formats=["JPEG"])
    im.load()
    info = dict(im.info)
    exif = im.getexif()
    orientation = exif.get(0x0112)
    for op in _ORIENT.get(orientation if isinstance(orientation, int) else 1, ()):
        im = im.transpose(op)
    if 0x0112 in exif:
        exif.pop(0x0112)
        info["exif"] = exif.tobytes()
    im.info = {k: v for k, v in info.items() if k in ("icc_profile", "exif")}
    return im


def _reason(exc: Exception) -> str:
    """libjxl's error, without the Rust wrapper's build advice."""
    text = " ".join(str(exc).split())
    return text.split(". Please build")[0].rstrip(".") or type(exc).__name__


def decode(data: bytes, header: JxlHeader, *, path: str | None = None
           ) -> tuple[Image.Image, list[str]]:
    """Decode ``data`` (already checked by :func:`parse_header`) to one upright image.

    Returns the image — mode L, LA, RGB or RGBA (libjxl renders deeper
    samples to 8 bits, rounding), with ``info["icc_profile"]`` (libjxl
    describes every colour encoding as an ICC profile) and ``info["exif"]``
    (orientation removed: it was applied) when the file has them — and notes
    for the result.
    """
    notes: list[str] = []
    mod = require("decode", path)
    try:
        reconstructed, info, pixels, icc, boxes = mod.Decoder(num_threads=_threads())(data)
    except MemoryError:
        raise TooLargeError("not enough memory to decode", path=path, stage="decode") from None
    except BaseException as exc:  # a Rust panic too (boost.native_error)
        if not boost.native_error(exc):
            raise
        raise DecodeError(f"corrupt or truncated JPEG XL data (libjxl: {_reason(exc)})",
                          path=path, stage="decode") from None
    if reconstructed:
        im = _upright_jpeg(pixels)
    else:
        mode = info.mode
        if mode not in ("L", "LA", "RGB", "RGBA"):
            raise UnsupportedFormatError(
                f"JPEG XL decoded as {mode}; pyimgopt reads 8-bit gray or colour", path=path,
                stage="decode")
        try:
            im = Image.frombytes(mode, (info.width, info.height), pixels)
        except ValueError as exc:
            raise DecodeError(f"corrupt JPEG XL data: {exc}", path=path, stage="decode") from None
        im.info = {}
        if icc:
            im.info["icc_profile"] = bytes(icc)
        for box in boxes or ():
            if getattr(box, "box_type", None) == b"Exif":
                exif = bytes(box.data)
                exif = exif[4:] if exif[4:8] in (b"II*\x00", b"MM\x00*") else exif
                try:  # libjxl applied the codestream orientation: EXIF's must not apply again
                    ex = Image.Exif()
                    ex.load(exif)
                    ex.pop(0x0112, None)
                    im.info["exif"] = ex.tobytes()
                except Exception:
                    pass
                break
    if header.bits > 8 and not reconstructed:
        notes.append(f"{header.bits}-bit JPEG XL samples rounded to 8 bits (libjxl)")
    if im.size != (header.width, header.height):
        raise DecodeError(
            f"JPEG XL decoded to {im.size[0]}x{im.size[1]}, not the header's "
            f"{header.width}x{header.height}", path=path, stage="decode")
    return im, notes


def encode(im: Image.Image, *, quality: int | None, lossless: bool, effort: int,
           exif: bytes | None = None, fast: bool = False) -> bytes:
    """JPEG XL bytes of ``im`` (mode L, LA, RGB or RGBA, sRGB pixels).

    ``quality`` 1-100 on libjxl's scale (ignored when ``lossless``; lossy
    stops at 99, libjxl's smallest distance);
    ``effort`` is pyimgopt's 0-9, mapped by :func:`libjxl_effort` (lossy
    images under 8 pixels on a side: at most libjxl's 7, see
    :data:`_BUTTERAUGLI_MIN_SIDE`); ``fast`` (quality search probes) encodes
    at libjxl effort 3. Only ``exif`` is written as metadata; the pixels are
    sRGB, which is what a JPEG XL file without a profile means.
    """
    mod = require("encode")
    if im.mode not in ("L", "LA", "RGB", "RGBA"):
        im = im.convert("RGBA" if im.has_transparency_data else "RGB")
    # libjxl's lossy mode has no distance 0: q100 is lossless, so lossy tops out at q99.
    q = 100 if lossless else min(99, quality or DEFAULT_QUALITY)
    level = 3 if fast else libjxl_effort(effort)
    if not lossless and min(im.size) < _BUTTERAUGLI_MIN_SIDE:
        level = min(level, 7)
    enc = mod.Encoder(mode=im.mode, lossless=lossless, quality=q,
                      effort=level, decoding_speed=0,
                      use_container=bool(exif), use_original_profile=False,
                      num_threads=_threads())
    try:
        return bytes(enc(im.tobytes(), im.width, im.height, jpeg_encode=False,
                         exif=exif or None, jumb=None, xmp=None, compress=False))
    except BaseException as exc:
        if not boost.native_error(exc):
            raise
        raise EncodeError(f"JPEG XL encoder failed: {exc}", stage="encode") from None


def from_jpeg(jpeg: bytes, *, effort: int) -> bytes:
    """Recompress ``jpeg`` losslessly as JPEG XL, without decoding it to pixels.

    The result is returned only after :func:`verify` rebuilt ``jpeg`` from
    it byte for byte; otherwise an :class:`~pyimgopt.errors.EncodeError`
    says why (CMYK and some other JPEGs cannot be recompressed).
    """
    out = _transcode(jpeg, effort)
    verify(jpeg, out)
    return out


def _transcode(jpeg: bytes, effort: int) -> bytes:
    mod = require("encode")
    enc = mod.Encoder(mode="RGB", lossless=True, quality=100, effort=libjxl_effort(effort),
                      decoding_speed=0, use_container=True, use_original_profile=True,
                      num_threads=_threads())
    try:
        return bytes(enc(jpeg, 0, 0, jpeg_encode=True))
    except BaseException as exc:
        if not boost.native_error(exc):
            raise
        raise EncodeError(f"JPEG XL cannot recompress this JPEG: {exc}", stage="encode") from None


def verify(jpeg: bytes, candidate: bytes) -> None:
    """Raise :class:`~pyimgopt.errors.EncodeError` unless ``candidate`` rebuilds ``jpeg`` exactly."""
    back = reconstruct(candidate)
    if back is None:
        raise EncodeError("the JPEG XL holds no JPEG reconstruction data; not kept",
                          stage="encode")
    if back != jpeg:
        raise EncodeError(
            f"the JPEG rebuilt from the JPEG XL differs from the original ({len(back):,} vs "
            f"{len(jpeg):,} bytes); not kept", stage="encode")


def reconstruct(data: bytes) -> bytes | None:
    """The JPEG rebuilt from a JPEG XL's reconstruction data, or ``None`` when it has none."""
    mod = require("decode")
    try:
        reconstructed, _info, payload, _icc, _boxes = mod.Decoder(num_threads=_threads())(data)
    except BaseException as exc:
        if not boost.native_error(exc):
            raise
        raise EncodeError(f"the JPEG XL cannot be read back: {exc}", stage="encode") from None
    return bytes(payload) if reconstructed else None


#: Container boxes that hold metadata (EXIF, XMP, JUMBF), also when Brotli-compressed
#: in a ``brob`` box whose first four bytes name the inner type.
_METADATA_BOXES = (b"Exif", b"xml ", b"jumb")


def strip_metadata(data: bytes) -> bytes | None:
    """``data`` without its metadata boxes, the codestream untouched; ``None`` when it cannot.

    Drops ``Exif``, ``xml `` and ``jumb`` boxes (plain or ``brob``); the
    colour profile and the orientation live in the codestream and stay. A
    container left with one ``jxlc`` box becomes the bare codestream; a bare
    codestream, or a container without metadata, comes back as ``data``. A
    file with JPEG reconstruction data (``jbrd``) and metadata boxes gives
    ``None``: the JPEG it rebuilds needs those boxes, so they cannot go
    without re-encoding.
    """
    if data[:2] == _SIGNATURE:
        return data
    if data[:12] != _CONTAINER:
        return None
    kept: list[tuple[bytes, bytes]] = []
    dropped = jbrd = False
    box_start = 0  # boxes are contiguous: each starts where the last ended
    for kind, start, end in _boxes(data):
        box, box_start = data[box_start:end], end
        jbrd = jbrd or kind == b"jbrd"
        if kind in _METADATA_BOXES or (kind == b"brob" and data[start:start + 4] in _METADATA_BOXES):
            dropped = True
            continue
        kept.append((kind, box))
    if not dropped:
        return data
    if jbrd:
        return None
    kinds = [k for k, _ in kept]
    if kinds == [b"JXL ", b"ftyp", b"jxlc"]:
        box = kept[2][1]
        return box[16:] if box[:4] == b"\x00\x00\x00\x01" else box[8:]
    return b"".join(box for _, box in kept)


def check_limits(header: JxlHeader, max_pixels: int, path: str | None) -> None:
    """``too_large`` when the header's pixel count is over ``max_pixels``."""
    pixels = header.width * header.height
    if pixels > max_pixels:
        raise TooLargeError(
            f"{header.width}x{header.height} = {pixels:,} pixels is over "
            f"max_pixels={max_pixels:,}", path=path, stage="probe")
