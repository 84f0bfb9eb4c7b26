"""Pure NumPy/Pillow twin of ``pyimgopt._native``.

Used when the extension is not built or ``PYIMGOPT_PURE=1`` (see
``pyimgopt._kernels``), and as the reference the native tests compare with.
Same functions, signatures and validation (``pyimgopt._validate``) as the
native module. ``premultiply``/``unpremultiply`` are bit-identical to the C
kernels. ``resize`` is Pillow's ``Image.resize``: same filters and geometry,
but Pillow rounds to uint8 between its two passes and around its own alpha
premultiplication, so it can differ from the native kernel by a few levels
(most at sharp edges and low alpha).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from PIL import Image

from pyimgopt._validate import (
    DEFAULT_FILTER,
    FILTERS,
    check_alpha_image,
    check_filter,
    check_image,
    check_size,
)

__all__ = ["FILTERS", "premultiply", "resize", "unpremultiply"]

_RESAMPLING = {
    "lanczos3": Image.Resampling.LANCZOS,
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "box": Image.Resampling.BOX,
    "nearest": Image.Resampling.NEAREST,
}
assert set(_RESAMPLING) == set(FILTERS), "FILTERS and _RESAMPLING disagree"

_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


def premultiply(img: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Multiply colour by alpha: ``c' = round(c * a / 255)``, alpha unchanged.

    Takes a uint8 (H, W, 2) or (H, W, 4) array (any strides) and returns a new
    C-contiguous array of the same shape, identical to the native kernel's.
    """
    src = check_alpha_image(img)
    colour = src[..., :-1].astype(np.uint32)
    alpha = src[..., -1:].astype(np.uint32)
    out = np.empty(src.shape, dtype=np.uint8)
    # x / 255 is never a tie for integer x, so +127 then floor is round().
    out[..., :-1] = (colour * alpha + 127) // 255
    out[..., -1:] = src[..., -1:]
    return out


def unpremultiply(img: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Divide colour by alpha: ``c = 0 if a == 0 else min(255, round(c' * 255 / a))``.

    Rounds half up, exactly as the native kernel. Same shapes as
    :func:`premultiply`; at alpha 255 the pair is the identity.
    """
    src = check_alpha_image(img)
    colour = src[..., :-1].astype(np.uint32)
    alpha = src[..., -1:].astype(np.uint32)
    safe = np.maximum(alpha, 1)  # a == 0 is masked below; avoid dividing by it
    value = np.minimum((2 * 255 * colour + safe) // (2 * safe), 255)
    out = np.empty(src.shape, dtype=np.uint8)
    out[..., :-1] = np.where(alpha == 0, 0, value)
    out[..., -1:] = src[..., -1:]
    return out


def resize(
    img: npt.NDArray[np.uint8], width: int, height: int, filter: str = DEFAULT_FILTER
) -> npt.NDArray[np.uint8]:
    """Resample an image to ``width`` x ``height`` pixels with Pillow.

    Takes uint8 (H, W) or (H, W, C), C in 1..4 (L, LA, RGB, RGBA), any strides;
    returns a new array of shape (height, width) for 2-D input, else
    (height, width, C). Pillow premultiplies LA/RGBA itself for every filter
    but nearest.
    """
    src = check_image(img)
    out_w = check_size(width, "width")
    out_h = check_size(height, "height")
    resample = _RESAMPLING[check_filter(filter)]
    channels = src.shape[2]
    # Pillow infers the mode from the array shape (passing mode= is
    # deprecated); single-channel images must be 2-D for it.
    pixels = np.ascontiguousarray(src[:, :, 0] if channels == 1 else src)
    image = Image.fromarray(pixels)
    if image.mode != _MODES[channels]:  # pragma: no cover - a Pillow change
        raise RuntimeError(f"Pillow read a {channels}-channel array as mode {image.mode}")
    out = np.array(image.resize((out_w, out_h), resample), dtype=np.uint8)
    if img.ndim == 2:
        return out
    return out.reshape(out_h, out_w, channels)
