"""PNG output: lossless reductions, oxipng by effort, and the opt-in lossy palette.

Owns how pyimgopt writes a PNG from decoded frames (the PNG-to-PNG route that
keeps the original file's bytes is :mod:`.pngfile`): gray and palette
reductions that keep every pixel value exactly (:func:`reduce_lossless`),
Pillow's writer at ``compress_level=0`` then oxipng as :mod:`.pngplan` plans it
(Pillow's own optimiser without it), APNG for animations, and the dithered
libimagequant palette when ``lossy_png`` asks for it or an SSIM target the
caller set allows it (kept only when smaller, and meeting the target).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..settings import Settings
from . import boost, pngplan
from .frames import flatten_rgb, opposite, save

__all__ = ["reduce_lossless", "encode_png"]


def encode_png(frames: list[Image.Image], s: Settings, *, anim: dict, meta: dict,
               notes: list[str]) -> tuple[bytes, bool]:
    """``frames`` as PNG (APNG when several) under ``s``; returns (bytes, lossless)."""
    lossless = True
    reduced = [f if f.mode in ("P", "1") else reduce_lossless(f) for f in frames]
    if len(reduced) > 1 and len({f.mode for f in reduced}) > 1:
        reduced = frames  # APNG frames must share one mode
    data = _png(reduced, s, anim, meta, notes)
    # A palette is a visible change: asked for (lossy_png), or allowed by an
    # SSIM target the caller set (and then kept only when it meets it).
    may_lose = s.lossy_png or (s.target_ssim is not None and s.lossless is not True)
    if may_lose and len(frames) == 1 and reduced[0].mode not in ("P", "1"):
        pal = boost.quantize(frames[0])
        if pal is None:
            notes.append(boost.missing_note("imagequant"))
        else:
            lossy = _png([pal], s, {}, meta, notes)
            if len(lossy) < len(data) and (
                    s.target_ssim is None or _ssim_rgb(frames[0], pal, s) >= s.target_ssim):
                data, lossless = lossy, False
                notes.append("lossy palette (libimagequant)")
    return data, lossless


def reduce_lossless(im: Image.Image) -> Image.Image:
    """Gray and palette reductions that keep every pixel value exactly."""
    if im.mode in ("RGB", "RGBA"):
        arr = np.asarray(im)
        if np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 1], arr[..., 2]):
            im = Image.fromarray(
                np.ascontiguousarray(arr[..., [0, 3]] if im.mode == "RGBA" else arr[..., 0])
            )
    if im.mode not in ("RGB", "RGBA", "LA"):
        return im
    if im.getcolors(256) is None:
        return im
    arr = np.asarray(im)
    bands = arr.shape[2]
    if im.mode == "LA":  # palette entries are RGBA
        arr = np.stack([arr[..., 0]] * 3 + [arr[..., 1]], axis=-1)
        bands = 4
    flat = arr.reshape(-1, bands)
    packed = np.zeros(flat.shape[0], dtype=np.uint32)
    for band in range(bands):  # one uint32 key per pixel: far faster than unique(axis=0)
        packed = (packed << np.uint32(8)) | flat[:, band]
    keys, index = np.unique(packed, return_inverse=True)
    shifts = np.array([8 * (bands - 1 - b) for b in range(bands)], dtype=np.uint32)
    colours = ((keys[:, None] >> shifts) & np.uint32(255)).astype(np.uint8)
    if bands == 4:  # opaque-last order lets the tRNS chunk stop early
        order = np.argsort(colours[:, 3] == 255, kind="stable")
        colours = colours[order]
        remap = np.empty_like(order)
        remap[order] = np.arange(order.size)
        index = remap[index.reshape(-1)]
    pal = Image.frombytes("P", im.size, index.astype(np.uint8).reshape(-1).tobytes())
    pal.putpalette(colours.astype(np.uint8).tobytes(), rawmode="RGBA" if bands == 4 else "RGB")
    return pal



def _png(frames: list[Image.Image], s: Settings, anim: dict, meta: dict, notes: list[str]) -> bytes:
    """Lossless PNG: oxipng (planned by :mod:`.pngplan`) on stored zlib; Pillow's optimiser without it.

    oxipng re-filters and re-deflates anyway, so the PNG it is given is stored
    uncompressed (``compress_level=0``): a zlib pass first would be wasted time.
    """
    if len(frames) == 1 and s.effort >= 1:
        opt = pngplan.optimise(save(frames, "png", compress_level=0, **meta), s.effort)
        if opt is not None:
            return opt
        if not boost.available("oxipng"):
            notes.append(boost.missing_note("oxipng"))
    level = 9 if s.effort >= 4 else max(1, s.effort + 3)
    return save(frames, "png", optimize=s.effort >= 4, compress_level=level, **anim, **meta)



def _ssim_rgb(a: Image.Image, b: Image.Image, s: Settings) -> float:
    """The score of ``b`` against ``a`` on the background, and on its opposite when ``a`` has
    transparency (as :func:`.quality.measure` judges)."""
    from . import perceptual

    bgs = [s.background_rgb]
    if a.has_transparency_data:
        bgs.append(opposite(s.background_rgb))
    return min(perceptual.score(flatten_rgb(a, bg), flatten_rgb(b, bg)) for bg in bgs)
