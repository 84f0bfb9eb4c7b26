"""Pure NumPy/Pillow twin of ``pyimgopt._native``.

Used when the extension is not built or ``PYIMGOPT_PURE=1`` (see
``pyimgopt._kernels``), and as the reference the native tests compare with.
Same functions, signatures and validation (``pyimgopt._validate``) as the
native module. ``premultiply``/``unpremultiply`` are bit-identical to the C
kernels. ``resize`` is Pillow's ``Image.resize``: same filters and geometry,
but Pillow rounds to uint8 between its two passes and around its own alpha
premultiplication, so it can differ from the native kernel by a few levels
(most at sharp edges and low alpha). ``reduce_box`` is bit-identical to the
C kernel; ``ssim`` and ``ssim_luma`` use the same exact integer window sums
and the same formula, so they agree with it to float64 rounding (~1e-15).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from PIL import Image

from pyimgopt._validate import (
    DEFAULT_FILTER,
    FILTERS,
    check_alpha_image,
    SSIM_WINDOW,
    check_filter,
    check_image,
    check_image_pair,
    check_size,
    check_box,
)

__all__ = [
    "FILTERS",
    "chroma_error",
    "premultiply",
    "reduce_box",
    "resize",
    "ssim",
    "ssim_luma",
    "unpremultiply",
]

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
    img: npt.NDArray[np.uint8], width: int, height: int, filter: str = DEFAULT_FILTER, *,
    box: tuple[float, float, float, float] | None = None,
) -> npt.NDArray[np.uint8]:
    """Resample an image to ``width`` x ``height`` pixels with Pillow.

    Takes uint8 (H, W) or (H, W, C), C in 1..4 (L, LA, RGB, RGBA), any strides;
    returns a new array of shape (height, width) for 2-D input, else
    (height, width, C). Pillow premultiplies LA/RGBA itself for every filter
    but nearest. ``box`` (x0, y0, x1, y1): the input region the output
    covers, Pillow's ``box``, within the limits the native kernel takes
    (x0, y0 in [0, 1), x1, y1 within the last pixel); the whole input for
    "nearest".
    """
    src = check_image(img)
    out_w = check_size(width, "width")
    out_h = check_size(height, "height")
    resample = _RESAMPLING[check_filter(filter)]
    if box is not None:
        box = check_box(box, src.shape[1], src.shape[0], filter)
    channels = src.shape[2]
    # Pillow infers the mode from the array shape (passing mode= is
    # deprecated); single-channel images must be 2-D for it.
    pixels = np.ascontiguousarray(src[:, :, 0] if channels == 1 else src)
    image = Image.fromarray(pixels)
    if image.mode != _MODES[channels]:  # pragma: no cover - a Pillow change
        raise RuntimeError(f"Pillow read a {channels}-channel array as mode {image.mode}")
    out = np.array(image.resize((out_w, out_h), resample, box=box), dtype=np.uint8)
    if img.ndim == 2:
        return out
    return out.reshape(out_h, out_w, channels)


# scikit-image's structural_similarity defaults for uint8 (see csrc/pio_ssim.h).
_SSIM_K1 = 0.01
_SSIM_K2 = 0.03
_SSIM_RANGE = 255.0
_SSIM_NP = float(SSIM_WINDOW * SSIM_WINDOW)


def _window_sums(plane: np.ndarray) -> np.ndarray:
    """Sums over every SSIM_WINDOW x SSIM_WINDOW window fully inside an int64
    (H, W, P) array, per channel: shape (H - 6, W - 6, P), exact (cumulative
    sums in int64, one axis at a time, so no intermediate exceeds H, or W * 7,
    times the largest value). Differences are taken in place, which keeps a
    1920x1200 RGB plane at ~70 ms instead of ~400 ms with fresh arrays."""
    win = SSIM_WINDOW
    rows = np.cumsum(plane, axis=0)
    band = rows[win - 1 :]  # band[i] = rows[i + 6] - rows[i - 1], rows[-1] = 0
    band[1:] -= rows[:-win]
    cols = np.cumsum(band, axis=1)
    sums = cols[:, win - 1 :]
    sums[:, 1:] -= cols[:, :-win]
    return sums


def _ssim_samples(x: np.ndarray, y: np.ndarray, scale: float) -> float:
    """Mean SSIM over channels of int64 (H, W, P) samples holding ``scale``
    times the pixel values; the formula of ``ssim_row`` in csrc/pio_ssim.c."""
    n = _SSIM_NP
    c1 = (_SSIM_K1 * _SSIM_RANGE) ** 2 * n * n * scale * scale
    c2 = (_SSIM_K2 * _SSIM_RANGE) ** 2 * n * (n - 1.0) * scale * scale
    # Every sum and product below is an integer < 2^53, so float64 holds it
    # exactly; only c1, c2 and the final products and division round.
    sx = _window_sums(x).astype(np.float64)
    sy = _window_sums(y).astype(np.float64)
    sxx = _window_sums(x * x).astype(np.float64)
    syy = _window_sums(y * y).astype(np.float64)
    sxy = _window_sums(x * y).astype(np.float64)
    pxy = sx * sy
    pxx = sx * sx
    pyy = sy * sy
    num = (2.0 * pxy + c1) * (2.0 * (n * sxy - pxy) + c2)
    den = (pxx + pyy + c1) * ((n * sxx - pxx) + (n * syy - pyy) + c2)
    per_channel = (num / den).mean(axis=(0, 1), dtype=np.float64)
    total = 0.0
    for value in per_channel:  # the C kernel's order: sum the channel means
        total += float(value)
    return total / per_channel.size


def ssim(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8]) -> float:
    """Structural similarity, as ``skimage.metrics.structural_similarity(a, b,
    data_range=255, channel_axis=-1)`` (``None`` for 2-D input).

    Takes two uint8 arrays of the same shape, (H, W) or (H, W, C) with C in
    1..4 and H, W >= 7, any strides; returns a float, exactly 1.0 for
    identical images. Alpha counts as a channel.
    """
    a3, b3 = check_image_pair(a, b)
    # C order whatever the input's: NumPy's summation order follows memory
    # order, and a strided view should score exactly as its contiguous copy.
    return _ssim_samples(a3.astype(np.int64, order="C"), b3.astype(np.int64, order="C"), 1.0)


def _luma_samples(img3: np.ndarray) -> tuple[np.ndarray, float]:
    """1000 * Y (exact integers) for RGB/RGBA, channel 0 for L/LA, as (H, W, 1)."""
    if img3.shape[2] >= 3:
        wide = img3[..., :3].astype(np.int64, order="C")  # see ssim: C order
        luma = 299 * wide[..., 0] + 587 * wide[..., 1] + 114 * wide[..., 2]
        return luma[..., np.newaxis], 1000.0
    return img3[..., :1].astype(np.int64, order="C"), 1.0


def ssim_luma(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8]) -> float:
    """SSIM of the luma ``Y = 0.299 R + 0.587 G + 0.114 B`` (unrounded, alpha
    ignored; channel 0 for L/LA) of two images, ``data_range=255``.

    Same arguments as :func:`ssim`; returns a float.
    """
    a3, b3 = check_image_pair(a, b)
    x, scale = _luma_samples(a3)
    y, _ = _luma_samples(b3)
    return _ssim_samples(x, y, scale)


def reduce_box(img: npt.NDArray[np.uint8], fx: int, fy: int) -> npt.NDArray[np.uint8]:
    """Shrink by integer factors: each output pixel is the rounded mean of an
    ``fx`` x ``fy`` block (edge blocks average the pixels they have).

    Takes uint8 (H, W) or (H, W, C), C in 1..4, any strides; returns shape
    (ceil(H / fy), ceil(W / fx)) for 2-D input, else with C channels.
    Rounds half up; with alpha, colour is the alpha-weighted mean (0 for a
    fully transparent block) and alpha the plain mean. Bit-identical to the
    native kernel (rounding spelled out in csrc/pio_reduce.h).
    """
    src = check_image(img)
    height, width, channels = src.shape
    # A factor beyond the image size gives the same single block as the size.
    factor_x = min(check_size(fx, "fx"), width)
    factor_y = min(check_size(fy, "fy"), height)
    starts_y = np.arange(0, height, factor_y)
    starts_x = np.arange(0, width, factor_x)
    rows = np.diff(np.append(starts_y, height)).astype(np.uint64)
    cols = np.diff(np.append(starts_x, width)).astype(np.uint64)
    n = (rows[:, np.newaxis] * cols[np.newaxis, :])[..., np.newaxis]

    def block_sums(values: np.ndarray) -> np.ndarray:
        return np.add.reduceat(np.add.reduceat(values, starts_y, axis=0), starts_x, axis=1)

    wide = src.astype(np.uint64)
    if channels in (2, 4):
        alpha = wide[..., -1:]
        colour_sum = block_sums(wide[..., :-1] * alpha)
        alpha_sum = block_sums(alpha)
        safe = np.maximum(alpha_sum, 1)  # alpha_sum == 0 is masked below
        colour = np.where(alpha_sum == 0, 0, (2 * colour_sum + safe) // (2 * safe))
        out = np.concatenate([colour, (2 * alpha_sum + n) // (2 * n)], axis=-1)
    else:
        out = (2 * block_sums(wide) + n) // (2 * n)
    out = out.astype(np.uint8)
    return out[..., 0] if img.ndim == 2 else out


# BT.601 full-range chroma weights times 1e6 (csrc/pio_chroma.h): rows Cb, Cr.
_CHROMA_WEIGHTS = np.array([[-168736, -331264, 500000], [500000, -418688, -81312]], dtype=np.int64)
_CHROMA_SCALE = 1_000_000


def chroma_error(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8]) -> float:
    """Mean over pixels of ``|dCb| + |dCr|`` (BT.601 full-range chroma, unrounded).

    Same arguments and result as the native kernel: R, G, B are channels 0-2,
    alpha is ignored, gray images give 0.0; the total is the same exact
    integer, divided the same way.
    """
    a3 = check_image(a, "a")
    b3 = check_image(b, "b")
    if np.shape(a) != np.shape(b):
        raise ValueError(f"Expected images of the same shape but received {np.shape(a)} and {np.shape(b)}")
    if a3.shape[2] < 3:
        return 0.0
    diff = a3[..., :3].astype(np.int64) - b3[..., :3].astype(np.int64)
    total = int(np.abs(diff @ _CHROMA_WEIGHTS.T).sum(dtype=np.int64))
    return float(total) / (float(a3.shape[0] * a3.shape[1]) * _CHROMA_SCALE)
