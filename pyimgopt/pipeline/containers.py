"""Lossless metadata removal for WebP, GIF, TIFF and AVIF containers.

Owns the byte surgery :func:`.strip.strip_lossless` uses beyond JPEG and
PNG. WebP (RIFF chunks) and GIF (blocks) are rewritten without their
metadata and keep every byte of image data, animation frames, timing and
loop count. TIFF and AVIF address their data by file offsets, so their
metadata is *blanked in place* instead: the same size, the same offsets, the
metadata tags or items removed or overwritten with zeros (an empty EXIF, a
whitespace XMP packet), so no GPS or camera field survives in the bytes.
Every function returns ``None`` when the structure does not parse with
certainty; the caller then knows the metadata cannot be removed losslessly.
"""

from __future__ import annotations

import struct

from .strip import minimal_exif

__all__ = ["strip_webp", "strip_gif", "blank_tiff", "blank_avif"]

# -- WebP ------------------------------------------------------------------------

_WEBP_KEEP = {b"VP8X", b"ANIM", b"ANMF", b"ALPH", b"VP8 ", b"VP8L"}
_VP8X_ICC, _VP8X_ALPHA, _VP8X_EXIF, _VP8X_XMP = 0x20, 0x10, 0x08, 0x04


def _riff_chunk(fourcc: bytes, payload: bytes) -> bytes:
    return fourcc + struct.pack("<I", len(payload)) + payload + (b"\x00" if len(payload) & 1 else b"")


def _webp_canvas(fourcc: bytes, payload: bytes) -> tuple[int, int] | None:
    if fourcc == b"VP8 " and len(payload) >= 10 and payload[3:6] == b"\x9d\x01\x2a":
        w, h = struct.unpack("<HH", payload[6:10])
        return w & 0x3FFF, h & 0x3FFF
    if fourcc == b"VP8L" and len(payload) >= 5 and payload[0] == 0x2F:
        bits = int.from_bytes(payload[1:5], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def strip_webp(data: bytes, *, keep_icc: bool, orientation: int = 1) -> bytes | None:
    """A WebP without EXIF, XMP and unknown chunks; ``ICCP`` kept when ``keep_icc``.

    Image, alpha and animation chunks are copied byte for byte and the VP8X
    flags are updated to match. An orientation 2-8 is kept as a minimal EXIF
    chunk (a VP8X header is added to a simple file for it).
    """
    if len(data) < 20 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    pos, n = 12, min(len(data), 8 + struct.unpack("<I", data[4:8])[0])
    chunks: list[tuple[bytes, bytes]] = []
    while pos + 8 <= n:
        fourcc = data[pos : pos + 4]
        (size,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        if pos + 8 + size > n:
            return None
        chunks.append((fourcc, data[pos + 8 : pos + 8 + size]))
        pos += 8 + size + (size & 1)
    if not chunks:
        return None
    kept = [(c, p) for c, p in chunks if c in _WEBP_KEEP or (keep_icc and c == b"ICCP")]
    want_exif = 2 <= orientation <= 8
    vp8x = next((p for c, p in kept if c == b"VP8X"), None)
    if vp8x is None and (want_exif or any(c == b"ICCP" for c, _ in kept)):
        image = next(((c, p) for c, p in kept if c in (b"VP8 ", b"VP8L")), None)
        size = None if image is None else _webp_canvas(*image)
        if size is None:
            return None
        alpha = _VP8X_ALPHA if image[0] == b"VP8L" and image[1][4] & 0x10 else 0
        vp8x = bytes((alpha, 0, 0, 0)) + (size[0] - 1).to_bytes(3, "little") + (size[1] - 1).to_bytes(3, "little")
        kept.insert(0, (b"VP8X", vp8x))
    if vp8x is not None:
        flags = vp8x[0] & ~(_VP8X_ICC | _VP8X_EXIF | _VP8X_XMP)
        flags |= _VP8X_ICC if any(c == b"ICCP" for c, _ in kept) else 0
        flags |= _VP8X_EXIF if want_exif else 0
        kept = [(c, bytes((flags,)) + p[1:] if c == b"VP8X" else p) for c, p in kept]
        order = {b"VP8X": 0, b"ICCP": 1}  # the spec's order: VP8X, ICCP, ANIM/image, EXIF
        kept.sort(key=lambda cp: order.get(cp[0], 2))
    if want_exif:
        kept.append((b"EXIF", minimal_exif(orientation)))
    body = b"WEBP" + b"".join(_riff_chunk(c, p) for c, p in kept)
    return b"RIFF" + struct.pack("<I", len(body)) + body


# -- GIF -------------------------------------------------------------------------

_GIF_KEEP_APPS = (b"NETSCAPE2.0", b"ANIMEXTS1.0")  # the loop count


def _sub_blocks_end(data: bytes, pos: int) -> int | None:
    n = len(data)
    while pos < n:
        size = data[pos]
        pos += 1 + size
        if size == 0:
            return pos if pos <= n else None
    return None


def strip_gif(data: bytes) -> bytes | None:
    """A GIF without comment and application extensions (XMP, vendor blocks).

    Kept byte for byte: the header and global palette, every graphic control
    extension (delay, disposal, transparent index), every image with its local
    palette and LZW data, plain-text extensions (they are drawn) and the
    NETSCAPE/ANIMEXTS loop block. Bytes after the trailer are dropped; a file
    that ends cleanly between blocks without a trailer gets one.
    """
    if len(data) < 13 or data[:6] not in (b"GIF87a", b"GIF89a"):
        return None
    pos = 13
    if data[10] & 0x80:
        pos += 3 << ((data[10] & 7) + 1)
    if pos > len(data):
        return None
    out = [data[:pos]]
    n = len(data)
    while True:
        if pos >= n:
            out.append(b";")
            break
        sep = data[pos]
        if sep == 0x3B:
            out.append(b";")
            break
        if sep == 0x21 and pos + 3 <= n:
            label = data[pos + 1]
            end = _sub_blocks_end(data, pos + 2)
            if end is None:
                return None
            keep = label in (0xF9, 0x01)
            if label == 0xFF and data[pos + 2] == 11:
                keep = data[pos + 3 : pos + 14] in _GIF_KEEP_APPS
            if keep:
                out.append(data[pos:end])
            pos = end
        elif sep == 0x2C and pos + 10 <= n:
            packed = data[pos + 9]
            start = pos
            pos += 10
            if packed & 0x80:
                pos += 3 << ((packed & 7) + 1)
            end = _sub_blocks_end(data, pos + 1)  # after the LZW minimum code size
            if end is None:
                return None
            out.append(data[start:end])
            pos = end
        else:
            return None
    return b"".join(out)


# -- TIFF ------------------------------------------------------------------------

_TIFF_TYPE_SIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}
_TIFF_SUB_IFDS = {34665, 34853, 40965}  # EXIF, GPS, Interoperability: blanked whole
#: IFD0 tags that describe the capture or the owner, not the image.
_TIFF_DROP = {
    269, 270, 271, 272, 285, 305, 306, 315, 316, 700, 33432, 33723, 34377, 37724, 50341,
    40091, 40092, 40093, 40094, 40095, 42016, 42032, 42033, 42034, 42035, 42036, 42037,
} | _TIFF_SUB_IFDS  # fmt: skip
_TIFF_ICC = 34675


class _Tiff:
    def __init__(self, data: bytes) -> None:
        self.buf = bytearray(data)
        self.e = "<" if data[:2] == b"II" else ">"

    def u16(self, pos: int) -> int:
        return struct.unpack_from(self.e + "H", self.buf, pos)[0]

    def u32(self, pos: int) -> int:
        return struct.unpack_from(self.e + "I", self.buf, pos)[0]

    def entries(self, ifd: int) -> list[tuple[int, int, int, int]]:
        """(tag, type, count, entry position) of each entry of the IFD at ``ifd``."""
        if ifd + 2 > len(self.buf):
            raise ValueError("IFD outside the file")
        count = self.u16(ifd)
        if ifd + 2 + 12 * count + 4 > len(self.buf):
            raise ValueError("IFD runs past the end")
        return [(self.u16(p), self.u16(p + 2), self.u32(p + 4), p)
                for p in range(ifd + 2, ifd + 2 + 12 * count, 12)]

    def zero_value(self, typ: int, count: int, pos: int) -> None:
        if typ not in _TIFF_TYPE_SIZE:
            raise ValueError(f"unknown TIFF type {typ}")
        size = _TIFF_TYPE_SIZE[typ] * count
        if size > 4:
            off = self.u32(pos + 8)
            if off + size > len(self.buf):
                raise ValueError("value outside the file")
            self.buf[off : off + size] = bytes(size)

    def zero_ifd(self, ifd: int, depth: int = 0) -> None:
        if depth > 4:
            raise ValueError("nested IFDs too deep")
        entries = self.entries(ifd)
        for tag, typ, count, pos in entries:
            if tag in _TIFF_SUB_IFDS and count == 1:
                self.zero_ifd(self.u32(pos + 8), depth + 1)
            self.zero_value(typ, count, pos)
        self.buf[ifd : ifd + 2 + 12 * len(entries) + 4] = bytes(2 + 12 * len(entries) + 4)


def blank_tiff(data: bytes, *, keep_icc: bool) -> bytes | None:
    """A same-size TIFF whose IFDs lost their EXIF, GPS, XMP, IPTC, Photoshop and capture tags.

    Each page's IFD is rewritten in place without those entries (the freed
    room zeroed), and the values and sub-IFDs they pointed to are zeroed, so
    no offset moves and no GPS or camera value is left in the bytes. The
    ICC profile is kept when ``keep_icc``; orientation, resolution and every
    image tag stay. BigTIFF and anything unparseable return ``None``.
    """
    if len(data) < 8 or data[:4] not in (b"II*\x00", b"MM\x00*"):
        return None
    t = _Tiff(data)
    drop = _TIFF_DROP | (set() if keep_icc else {_TIFF_ICC})
    try:
        ifd, seen = t.u32(4), set()
        while ifd and ifd not in seen and len(seen) < 10_000:
            seen.add(ifd)
            entries = t.entries(ifd)
            nxt = t.u32(ifd + 2 + 12 * len(entries))
            keep = [bytes(t.buf[p : p + 12]) for tag, _, _, p in entries if tag not in drop]
            for tag, typ, count, pos in entries:
                if tag in drop:
                    if tag in _TIFF_SUB_IFDS and count == 1:
                        t.zero_ifd(t.u32(pos + 8))
                    t.zero_value(typ, count, pos)
            size = 2 + 12 * len(entries) + 4
            new = struct.pack(t.e + "H", len(keep)) + b"".join(keep) + struct.pack(t.e + "I", nxt)
            t.buf[ifd : ifd + size] = new + bytes(size - len(new))
            ifd = nxt
    except (ValueError, struct.error):
        return None
    return bytes(t.buf)


# -- AVIF (ISO-BMFF / HEIF) --------------------------------------------------------------

_EMPTY_EXIF = b"\x00\x00\x00\x00MM\x00*\x00\x00\x00\x08\x00\x00\x00\x00\x00\x00"
_EMPTY_XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"/>'


def _boxes(data: bytes, start: int, end: int):
    pos = start
    while pos + 8 <= end:
        size = struct.unpack(">I", data[pos : pos + 4])[0]
        kind = data[pos + 4 : pos + 8]
        head = 8
        if size == 1:
            size = struct.unpack(">Q", data[pos + 8 : pos + 16])[0]
            head = 16
        elif size == 0:
            size = end - pos
        if size < head or pos + size > end:
            raise ValueError(f"bad box {kind!r}")
        yield kind, pos + head, pos + size
        pos += size


def _uint(data: bytes, pos: int, size: int) -> tuple[int, int]:
    return (int.from_bytes(data[pos : pos + size], "big") if size else 0), pos + size


def _metadata_items(data: bytes, start: int, end: int) -> tuple[set[int], set[int]]:
    """Item ids of the Exif items and of the XMP (``mime`` RDF) items in ``iinf``."""
    exif, xmp = set(), set()
    version = data[start]
    pos = start + 4
    _, pos = _uint(data, pos, 2 if version == 0 else 4)
    for kind, s, e in _boxes(data, pos, end):
        if kind != b"infe" or data[s] < 2:
            continue
        p = s + 4
        item_id, p = _uint(data, p, 2 if data[s] == 2 else 4)
        p += 2  # protection index
        item_type = data[p : p + 4]
        if item_type == b"Exif":
            exif.add(item_id)
        elif item_type == b"mime":
            name_end = data.index(b"\x00", p + 4, e)
            ctype_end = data.find(b"\x00", name_end + 1, e)
            ctype = data[name_end + 1 : ctype_end if ctype_end >= 0 else e]
            if b"rdf+xml" in ctype or b"xmp" in ctype.lower():
                xmp.add(item_id)
    return exif, xmp


def blank_avif(data: bytes) -> bytes | None:
    """A same-size AVIF whose Exif items hold an empty EXIF and whose XMP items are blank.

    The items are found through ``iinf`` and ``iloc`` in the top-level
    ``meta`` box (file offsets or ``idat``); their bytes are overwritten in
    place, so every offset stays valid. Orientation in AVIF lives in the
    ``irot``/``imir`` properties, which are untouched. Returns ``None`` when
    the boxes do not parse.
    """
    buf = bytearray(data)
    try:
        meta = next(((s, e) for k, s, e in _boxes(data, 0, len(data)) if k == b"meta"), None)
        if meta is None:
            return data
        children = {k: (s, e) for k, s, e in _boxes(data, meta[0] + 4, meta[1])}
        if b"iinf" not in children or b"iloc" not in children:
            return data
        exif_ids, xmp_ids = _metadata_items(data, *children[b"iinf"])
        if not exif_ids and not xmp_ids:
            return data
        s, _ = children[b"iloc"]
        version = data[s]
        p = s + 4
        off_size, len_size = data[p] >> 4, data[p] & 15
        base_size, idx_size = data[p + 1] >> 4, (data[p + 1] & 15) if version in (1, 2) else 0
        p += 2
        count, p = _uint(data, p, 2 if version < 2 else 4)
        idat = children.get(b"idat", (0, 0))[0]
        for _ in range(count):
            item_id, p = _uint(data, p, 2 if version < 2 else 4)
            method = 0
            if version in (1, 2):
                method, p = _uint(data, p, 2)
                method &= 15
            p += 2  # data reference index
            base, p = _uint(data, p, base_size)
            extents, p = _uint(data, p, 2)
            spans = []
            for _ in range(extents):
                _, p = _uint(data, p, idx_size)
                off, p = _uint(data, p, off_size)
                length, p = _uint(data, p, len_size)
                spans.append((off, length))
            if item_id not in exif_ids and item_id not in xmp_ids:
                continue
            if method not in (0, 1):
                return None
            origin = base + (idat if method == 1 else 0)
            filler = _EMPTY_EXIF if item_id in exif_ids else _EMPTY_XMP
            for off, length in spans:
                a = origin + off
                if length == 0 or a + length > len(buf):
                    return None  # length 0 means "to the end": not certain enough
                pad = b" " if item_id in xmp_ids else b"\x00"
                buf[a : a + length] = (filler if len(filler) <= length else b"")[:length].ljust(length, pad)
                filler = b""  # only the first extent starts the block
    except (ValueError, IndexError, struct.error):
        return None
    return bytes(buf)
