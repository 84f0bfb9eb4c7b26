"""Builders for HEIF and JPEG XL test inputs: real encodes (pillow-heif's x265,
pillow-jxl-plugin's libjxl) and byte surgery for the hostile ones.

Nothing here is committed as a file: every input is made when a test runs.
"""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image

__all__ = ["heic", "jxl_pixels", "jxl_codestream_header", "boxes", "patch_ispe",
           "heic_with_items", "heif_meta", "ff_size_bits"]


def heic(im: Image.Image | list[Image.Image], *, quality: int = 90, primary: int = 0,
         exif: bytes | None = None, icc: bytes | None = None, bits: int = 8) -> bytes:
    """A real HEIC from pillow-heif (x265). ``bits`` 10 or 12 writes deep samples."""
    import pillow_heif

    images = im if isinstance(im, list) else [im]
    if bits > 8:
        arr = np.asarray(images[0]).astype(np.uint16) * 257
        mode = {"RGB": "RGB;16", "RGBA": "RGBA;16", "L": "L;16"}[images[0].mode]
        hf = pillow_heif.from_bytes(mode, images[0].size, arr.tobytes())
        pillow_heif.options.SAVE_HDR_TO_12_BIT = bits == 12
    else:
        hf = pillow_heif.from_pillow(images[0])
        for more in images[1:]:
            hf.add_from_pillow(more)
    kw: dict = {"quality": quality, "primary_index": primary}
    if exif:
        kw["exif"] = exif
    if icc:
        kw["icc_profile"] = icc
    buf = io.BytesIO()
    try:
        hf.save(buf, **kw)
    finally:
        pillow_heif.options.SAVE_HDR_TO_12_BIT = False
    return buf.getvalue()


def jxl_pixels(im: Image.Image, *, lossless: bool = False, quality: int = 90) -> bytes:
    """A real JPEG XL of ``im`` from libjxl (pillow-jxl-plugin)."""
    from pillow_jxl import Encoder

    enc = Encoder(mode=im.mode, lossless=lossless, quality=100 if lossless else quality,
                  effort=3, decoding_speed=0, use_container=False, use_original_profile=False,
                  num_threads=1)
    return bytes(enc(im.tobytes(), im.width, im.height, jpeg_encode=False))


class _BitWriter:
    def __init__(self) -> None:
        self.bits: list[int] = []

    def put(self, value: int, n: int) -> None:
        self.bits += [(value >> i) & 1 for i in range(n)]

    def bytes(self) -> bytes:
        out = bytearray()
        for i in range(0, len(self.bits), 8):
            chunk = self.bits[i:i + 8]
            out.append(sum(b << k for k, b in enumerate(chunk)))
        return bytes(out)


def ff_size_bits(w: _BitWriter, width: int, height: int) -> None:
    """A JPEG XL SizeHeader (not div8; U32 distribution Bits(30)+1 for both sides)."""
    w.put(0, 1)          # div8 = false
    w.put(3, 2)          # selector 3: BitsOffset(30, 1)
    w.put(height - 1, 30)
    w.put(0, 3)          # ratio 0: width follows
    w.put(3, 2)
    w.put(width - 1, 30)


def jxl_codestream_header(width: int, height: int, *, animated: bool = False,
                          tail: int = 256) -> bytes:
    """A bare JPEG XL codestream whose header claims ``width`` x ``height`` (then junk)."""
    w = _BitWriter()
    ff_size_bits(w, width, height)
    if animated:
        w.put(0, 1)  # all_default = false
        w.put(1, 1)  # extra_fields
        w.put(0, 3)  # orientation 1
        w.put(0, 1)  # no intrinsic size
        w.put(0, 1)  # no preview
        w.put(1, 1)  # have_animation
        w.put(0, 2)  # tps numerator 100
        w.put(0, 2)  # tps denominator 1
        w.put(0, 2)  # loops 0
        w.put(0, 1)  # no timecodes
    else:
        w.put(1, 1)  # all_default
    return b"\xff\x0a" + w.bytes() + bytes(range(256))[:tail]


def boxes(data: bytes, start: int = 0, end: int | None = None):
    """(type, box start, body start, box end) of ISOBMFF boxes in ``data[start:end]``."""
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        size = struct.unpack(">I", data[pos:pos + 4])[0]
        yield data[pos + 4:pos + 8], pos, pos + 8, pos + size
        pos += size


def _find(data: bytes, path: list[bytes]) -> tuple[int, int, int]:
    start, end = 0, len(data)
    found = (0, 0, 0)
    for depth, kind in enumerate(path):
        for k, bstart, body, bend in boxes(data, start, end):
            if k == kind:
                found = (bstart, body, bend)
                start = body + (4 if kind in (b"meta", b"iinf") else 0)
                if kind == b"iinf":
                    start += 2 if data[body] == 0 else 4
                end = bend
                break
        else:
            raise KeyError(kind)
    return found


def patch_ispe(data: bytes, width: int, height: int) -> bytes:
    """Every ``ispe`` box of a HEIF rewritten to claim ``width`` x ``height`` (a header bomb)."""
    out = bytearray(data)
    pos = 0
    while (pos := out.find(b"ispe", pos)) != -1:
        body = pos + 4
        out[body + 4:body + 12] = struct.pack(">II", width, height)
        pos = body
    return bytes(out)


def heic_with_items(data: bytes, extra: int) -> bytes:
    """A real HEIC with ``extra`` more (hidden ``mime``) items in its ``iinf`` box.

    Sizes of ``iinf``, ``meta`` and offsets in ``iloc`` are fixed up so the file
    stays well formed: only the item count is hostile.
    """
    meta_start, meta_body, meta_end = _find(data, [b"meta"])
    iinf_start, iinf_body, iinf_end = _find(data, [b"meta", b"iinf"])
    version = data[iinf_body]
    count = struct.unpack(">H" if version == 0 else ">I",
                          data[iinf_body + 4:iinf_body + (6 if version == 0 else 8)])[0]
    infe = b""
    for i in range(extra):
        body = bytes([2, 0, 0, 1]) + struct.pack(">HH", 1000 + i, 0) + b"mime" + b"\x00" + b"a\x00"
        infe += struct.pack(">I", 8 + len(body)) + b"infe" + body
    total = count + extra
    head = bytes([1, 0, 0, 0]) + struct.pack(">I", total)
    old_entries = data[iinf_body + (6 if version == 0 else 8):iinf_end]
    iinf = head + old_entries + infe
    iinf = struct.pack(">I", 8 + len(iinf)) + b"iinf" + iinf
    grown = len(iinf) - (iinf_end - iinf_start)
    meta = data[meta_start:iinf_start] + iinf + data[iinf_end:meta_end]
    meta = struct.pack(">I", len(meta)) + meta[4:]
    out = bytearray(data[:meta_start] + meta + data[meta_end:])
    # iloc base offsets point past meta: shift them by the growth
    iloc_start, iloc_body, iloc_end = _find(bytes(out), [b"meta", b"iloc"])
    _shift_iloc(out, iloc_body, iloc_end, grown)
    return bytes(out)


def _shift_iloc(out: bytearray, body: int, end: int, delta: int) -> None:
    version = out[body]
    sizes = out[body + 4]
    offset_size, length_size = sizes >> 4, sizes & 15
    base_size = out[body + 5] >> 4
    index_size = out[body + 5] & 15 if version in (1, 2) else 0
    pos = body + 6
    count_size = 2 if version < 2 else 4
    count = int.from_bytes(out[pos:pos + count_size], "big")
    pos += count_size
    for _ in range(count):
        pos += 2 if version < 2 else 4
        if version in (1, 2):
            method = out[pos + 1] & 15
            pos += 2
        else:
            method = 0
        pos += 2  # data_reference_index
        base = int.from_bytes(out[pos:pos + base_size], "big") if base_size else 0
        if base_size and method == 0:
            out[pos:pos + base_size] = (base + delta).to_bytes(base_size, "big")
        pos += base_size
        extents = int.from_bytes(out[pos:pos + 2], "big")
        pos += 2
        for _ in range(extents):
            if index_size:
                pos += index_size
            if not base_size and offset_size and method == 0:
                off = int.from_bytes(out[pos:pos + offset_size], "big")
                out[pos:pos + offset_size] = (off + delta).to_bytes(offset_size, "big")
            pos += offset_size + length_size


def heif_meta(items: list[tuple[int, bytes, int]], primary: int,
              refs: list[tuple[bytes, int, list[int]]], sizes: dict[int, tuple[int, int]]) -> bytes:
    """A hand-built HEIF ``ftyp`` + ``meta`` (no image data): for header-parser tests.

    ``items``: (id, type, flags); ``refs``: (kind, from, [to...]); ``sizes``: id → ispe.
    """
    def box(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", 8 + len(body)) + kind + body

    def full(kind: bytes, body: bytes, version: int = 0, flags: int = 0) -> bytes:
        return box(kind, bytes([version]) + flags.to_bytes(3, "big") + body)

    ftyp = box(b"ftyp", b"heic" + b"\x00\x00\x00\x00" + b"mif1heic")
    pitm = full(b"pitm", struct.pack(">H", primary))
    infes = b"".join(full(b"infe", struct.pack(">HH", i, 0) + t + b"\x00", version=2, flags=f)
                     for i, t, f in items)
    iinf = full(b"iinf", struct.pack(">H", len(items)) + infes)
    iref = full(b"iref", b"".join(
        box(k, struct.pack(">HH", src, len(dst)) + b"".join(struct.pack(">H", d) for d in dst))
        for k, src, dst in refs))
    ids = sorted(sizes)
    ipco = box(b"ipco", b"".join(full(b"ispe", struct.pack(">II", *sizes[i])) for i in ids))
    ipma = full(b"ipma", struct.pack(">I", len(ids)) + b"".join(
        struct.pack(">HB", i, 1) + bytes([0x80 | (n + 1)]) for n, i in enumerate(ids)))
    iprp = box(b"iprp", ipco + ipma)
    hdlr = full(b"hdlr", b"\x00" * 4 + b"pict" + b"\x00" * 13)
    meta = full(b"meta", hdlr + pitm + iinf + iref + iprp)
    return ftyp + meta
