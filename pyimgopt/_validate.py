"""Argument checks shared by the kernel backends.

This module owns the edge validation of ``pyimgopt._native`` and
``pyimgopt._fallback``: both call these functions before touching pixels,
so the two backends accept the same inputs and raise the same exceptions with
the same messages ("Expected <what> for <parameter> but received <value>").
Type problems raise ``TypeError``, bad values ``ValueError``.
"""

from __future__ import annotations

import numbers
import operator

import numpy as np

#: Resampling filter names accepted by ``resize``; the first is the default.
FILTERS: tuple[str, ...] = ("lanczos3", "bicubic", "bilinear", "box", "nearest")

DEFAULT_FILTER = FILTERS[0]

#: Side of the square SSIM window: ``ssim`` needs images at least this tall and wide.
SSIM_WINDOW = 7


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"array of dtype {value.dtype} and shape {value.shape}"
    return repr(value)


def check_image(img: object, name: str = "img") -> np.ndarray:
    """Check that *img* is a uint8 HxW or HxWxC (C = 1..4) array with H, W >= 1.

    Returns the image as a 3-D view (HxW becomes HxWx1); nothing is copied.
    """
    if not isinstance(img, np.ndarray):
        raise TypeError(f"Expected numpy.ndarray for {name} but received {type(img).__name__}")
    if img.dtype != np.uint8:
        raise TypeError(f"Expected dtype uint8 for {name} but received dtype {img.dtype}")
    if img.ndim not in (2, 3):
        raise ValueError(
            f"Expected 2-D (HxW) or 3-D (HxWxC) array for {name} "
            f"but received {img.ndim}-D array of shape {img.shape}"
        )
    img3 = img if img.ndim == 3 else img[:, :, np.newaxis]
    if not 1 <= img3.shape[2] <= 4:
        raise ValueError(
            f"Expected 1 to 4 channels (L, LA, RGB, RGBA) for {name} "
            f"but received {img3.shape[2]} channels in shape {img.shape}"
        )
    if img3.shape[0] < 1 or img3.shape[1] < 1:
        raise ValueError(
            f"Expected height and width >= 1 for {name} but received shape {img.shape}"
        )
    return img3


def check_alpha_image(img: object, name: str = "img") -> np.ndarray:
    """Check that *img* is a uint8 HxWx2 (LA) or HxWx4 (RGBA) array with H, W >= 1."""
    img3 = check_image(img, name)
    if img3 is img and img3.shape[2] in (2, 4):
        return img3
    shape = img3.shape if img3 is img else img3.shape[:2]
    raise ValueError(
        f"Expected HxWx2 (LA) or HxWx4 (RGBA) array for {name} but received shape {shape}"
    )


def check_image_pair(a: object, b: object) -> tuple[np.ndarray, np.ndarray]:
    """Check two images compared by ``ssim``: each as :func:`check_image`, the
    same shape, and both sides at least :data:`SSIM_WINDOW` pixels.

    Returns both as 3-D views; nothing is copied. Smaller images are rejected,
    as scikit-image's ``structural_similarity`` rejects them, rather than
    given a made-up score.
    """
    a3 = check_image(a, "a")
    b3 = check_image(b, "b")
    shape_a, shape_b = np.shape(a), np.shape(b)  # both are arrays by now
    if shape_a != shape_b:
        raise ValueError(f"Expected images of the same shape but received {shape_a} and {shape_b}")
    if a3.shape[0] < SSIM_WINDOW or a3.shape[1] < SSIM_WINDOW:
        raise ValueError(
            f"Expected height and width >= {SSIM_WINDOW} (the SSIM window) for a and b "
            f"but received shape {shape_a}"
        )
    return a3, b3


def check_size(value: object, name: str) -> int:
    """Check that *value* is a positive integer (bool excluded) and return it as int."""
    if isinstance(value, bool):
        raise TypeError(f"Expected positive integer for {name} but received {value!r}")
    try:
        size = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"Expected positive integer for {name} but received {_describe(value)}"
        ) from None
    if size < 1:
        raise ValueError(f"Expected positive integer for {name} but received {size}")
    return size


def check_box(value: object, width: int, height: int, filter: str) -> tuple[float, float, float, float]:
    """Check a resize ``box`` (x0, y0, x1, y1) for a ``width`` x ``height`` input and
    return it as floats: x0, y0 in [0, 1), x1 in (width - 1, width], y1 in
    (height - 1, height]; the whole input for "nearest"."""
    if (not isinstance(value, (tuple, list)) or len(value) != 4
            or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value)):
        raise TypeError(f"Expected (x0, y0, x1, y1) floats for box but received {_describe(value)}")
    x0, y0, x1, y1 = (float(v) for v in value)
    if not (0 <= x0 < 1 and 0 <= y0 < 1 and width - 1 < x1 <= width and height - 1 < y1 <= height):
        raise ValueError(
            f"Expected a box from [0, 1) to ({width - 1}, {width}] x ({height - 1}, {height}] for a "
            f"{width}x{height} input but received {value!r}")
    if filter == "nearest" and (x0, y0, x1, y1) != (0, 0, width, height):
        raise ValueError(f"Expected the whole input as box for filter 'nearest' but received {value!r}")
    return x0, y0, x1, y1


def check_filter(value: object, name: str = "filter") -> str:
    """Check that *value* is one of :data:`FILTERS` and return it."""
    expected = ", ".join(repr(f) for f in FILTERS)
    if not isinstance(value, str):
        raise TypeError(f"Expected one of {expected} for {name} but received {_describe(value)}")
    if value not in FILTERS:
        raise ValueError(f"Expected one of {expected} for {name} but received {value!r}")
    return value
