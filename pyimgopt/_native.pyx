# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Native pixel kernels: thin typed wrappers over the C code in csrc/.

Every wrapper has one shape: validate with the GIL held (through
``pyimgopt._validate``, which the pure fallback shares, so both backends raise
the same errors), borrow the input without copying when the pixels of a row
are packed (any row stride, even negative, is passed through; anything else is
made contiguous first), allocate the output, release the GIL around exactly
one C call, and turn its status into an exception with ``_check``.
"""

import numpy as np

from libc.stdint cimport uint8_t, uint64_t

from pyimgopt._validate import (
    DEFAULT_FILTER,
    FILTERS,
    check_alpha_image,
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

_FILTER_IDS = {
    "lanczos3": PIO_FILTER_LANCZOS3,
    "bicubic": PIO_FILTER_BICUBIC,
    "bilinear": PIO_FILTER_BILINEAR,
    "box": PIO_FILTER_BOX,
    "nearest": PIO_FILTER_NEAREST,
}
# A filter name added to _validate.FILTERS without a C id would otherwise
# surface as a KeyError at call time; fail at import instead.
assert set(_FILTER_IDS) == set(FILTERS), "FILTERS and _FILTER_IDS disagree"


cdef int _check(int status) except -1:
    """Map a csrc status code to an exception (the one place that does)."""
    if status == PIO_OK:
        return 0
    message = pio_status_message(status).decode("ascii")
    if status == PIO_ERR_NOMEM:
        raise MemoryError(f"native kernel could not allocate scratch memory ({message})")
    raise ValueError(f"native kernel rejected its arguments: {message} (status {status})")


cdef object _packed(object img3):
    """Return img3 if each row's pixels are packed (C can walk it with a row
    stride alone), otherwise a C-contiguous copy."""
    _, width, channels = img3.shape
    strides = img3.strides
    # A stride along an axis of length 1 is never used, so it may be anything.
    if (channels == 1 or strides[2] == 1) and (width == 1 or strides[1] == channels):
        return img3
    return np.ascontiguousarray(img3)


cdef inline pio_view_u8 _view(const uint8_t[:, :, :] mv) noexcept:
    """Describe a memoryview whose rows are packed; the caller keeps it alive."""
    cdef pio_view_u8 view
    # The C side only reads source views, so dropping const here is safe.
    view.data = <uint8_t *> &mv[0, 0, 0]
    view.height = mv.shape[0]
    view.width = mv.shape[1]
    view.channels = <int> mv.shape[2]
    view.stride = mv.strides[0]
    return view


def premultiply(img):
    """Multiply colour by alpha: ``c' = round(c * a / 255)``, alpha unchanged.

    Parameters
    ----------
    img : numpy.ndarray
        uint8 array of shape (H, W, 2) (LA) or (H, W, 4) (RGBA), alpha last.
        Any strides are accepted.

    Returns
    -------
    numpy.ndarray
        A new C-contiguous uint8 array of the same shape.
    """
    src3 = _packed(check_alpha_image(img))
    out = np.empty(src3.shape, dtype=np.uint8)
    cdef const uint8_t[:, :, :] src_mv = src3
    cdef uint8_t[:, :, ::1] dst_mv = out
    cdef pio_view_u8 src = _view(src_mv)
    cdef pio_view_u8 dst = _view(dst_mv)
    cdef int status
    with nogil:
        status = pio_premultiply_u8(&src, &dst)
    _check(status)
    return out


def unpremultiply(img):
    """Divide colour by alpha: ``c = 0 if a == 0 else min(255, round(c' * 255 / a))``.

    Rounds half up. Alpha is unchanged. Takes and returns the same shapes as
    :func:`premultiply`; at alpha 255 the pair is the identity.
    """
    src3 = _packed(check_alpha_image(img))
    out = np.empty(src3.shape, dtype=np.uint8)
    cdef const uint8_t[:, :, :] src_mv = src3
    cdef uint8_t[:, :, ::1] dst_mv = out
    cdef pio_view_u8 src = _view(src_mv)
    cdef pio_view_u8 dst = _view(dst_mv)
    cdef int status
    with nogil:
        status = pio_unpremultiply_u8(&src, &dst)
    _check(status)
    return out


def resize(img, width, height, filter=DEFAULT_FILTER, *, box=None):
    """Resample an image to ``width`` x ``height`` pixels.

    Parameters
    ----------
    img : numpy.ndarray
        uint8 array of shape (H, W) or (H, W, C) with C in 1..4 (L, LA, RGB,
        RGBA; with 2 or 4 channels the last is alpha). Any strides are
        accepted.
    width, height : int
        Output size, each >= 1. Up- and downscaling are both supported.
    filter : str
        One of :data:`FILTERS`: "lanczos3" (default), "bicubic", "bilinear",
        "box" or "nearest".
    box : (float, float, float, float) or None
        The input region (x0, y0, x1, y1), in pixel coordinates, that the
        output covers, as Pillow's ``resize(box=...)``, for an input whose
        first or last column or row stands for only part of a sample (a JPEG
        decoded at 1/s scale is ``ceil(W / s)`` wide for ``W / s`` source
        samples). x0 and y0 must be in [0, 1), x1 in (W - 1, W], y1 in
        (H - 1, H]; ``None`` is the whole input, the only box the "nearest"
        filter takes. ``ValueError`` otherwise.

    Returns
    -------
    numpy.ndarray
        A new C-contiguous uint8 array of shape (height, width) for 2-D input,
        else (height, width, C). Alpha images are filtered premultiplied, so
        transparent pixels never tint visible ones. Every value is within one
        level of the exact (real-number) result of the filter, rounded half
        up (see ``csrc/pio_resize.h``).
    """
    return _resize(img, width, height, filter, 0, box)


def _resize_ex(img, width, height, filter=DEFAULT_FILTER, *, simd=True, avx512=True,
               fixed=None):
    """:func:`resize` with parts of the kernel switched off, for tests and
    benchmarks (not public API).

    ``simd=False`` runs the portable C loops (what a CPU without AVX2, or a
    non-x86 build, runs); ``avx512=False`` caps the SIMD at AVX2;
    ``fixed=False`` takes the float32 path even for images without alpha,
    ``fixed=True`` the fixed-point one for them even without SIMD (where it
    is slower and :func:`resize` does not take it); ``None`` chooses as
    :func:`resize` does.
    """
    cdef unsigned flags = 0
    if not simd:
        flags |= PIO_RESIZE_NO_SIMD
    if not avx512:
        flags |= PIO_RESIZE_NO_AVX512
    if fixed is not None:
        flags |= PIO_RESIZE_FORCE_FIXED if fixed else PIO_RESIZE_NO_FIXED
    return _resize(img, width, height, filter, flags)


def _simd_level():
    """The instruction set :func:`resize` uses on this CPU: "none" (portable
    loops), "avx2" or "avx512vnni" (not public API)."""
    return ("none", "avx2", "avx512vnni")[pio_resize_simd_level()]


cdef object _resize(img, width, height, filter, unsigned flags, box=None):
    src3 = check_image(img)
    cdef double x0 = 0.0, y0 = 0.0
    cdef double x1 = src3.shape[1]
    cdef double y1 = src3.shape[0]
    if box is not None:
        x0, y0, x1, y1 = check_box(box, src3.shape[1], src3.shape[0], check_filter(filter))
    cdef Py_ssize_t out_w = check_size(width, "width")
    cdef Py_ssize_t out_h = check_size(height, "height")
    cdef int filter_id = _FILTER_IDS[check_filter(filter)]
    src3 = _packed(src3)
    out = np.empty((out_h, out_w, src3.shape[2]), dtype=np.uint8)
    cdef const uint8_t[:, :, :] src_mv = src3
    cdef uint8_t[:, :, ::1] dst_mv = out
    cdef pio_view_u8 src = _view(src_mv)
    cdef pio_view_u8 dst = _view(dst_mv)
    cdef int status
    with nogil:
        status = pio_resize_u8_box(&src, &dst, filter_id, flags, x0, y0, x1, y1)
    _check(status)
    return out.reshape(out_h, out_w) if img.ndim == 2 else out


def ssim(a, b):
    """Structural similarity of two images, as scikit-image computes it.

    Equals ``skimage.metrics.structural_similarity(a, b, data_range=255,
    channel_axis=-1)`` (``channel_axis=None`` for 2-D input): 7x7 uniform
    window, K1 = 0.01, K2 = 0.03, sample covariance, the map averaged over
    the windows fully inside the image, and the channel means averaged. With
    2 or 4 channels alpha counts as a channel.

    Parameters
    ----------
    a, b : numpy.ndarray
        uint8 arrays of the same shape, (H, W) or (H, W, C) with C in 1..4,
        H and W >= 7. Any strides are accepted.

    Returns
    -------
    float
        At most 1.0; exactly 1.0 for identical images.
    """
    a3, b3 = check_image_pair(a, b)
    a3 = _packed(a3)
    b3 = _packed(b3)
    cdef const uint8_t[:, :, :] a_mv = a3
    cdef const uint8_t[:, :, :] b_mv = b3
    cdef pio_view_u8 va = _view(a_mv)
    cdef pio_view_u8 vb = _view(b_mv)
    cdef double result = 0.0
    cdef int status
    with nogil:
        status = pio_ssim_u8(&va, &vb, &result)
    _check(status)
    return result


def ssim_luma(a, b):
    """SSIM of the luma of two images: cheaper than :func:`ssim` for colour.

    Each pixel becomes ``Y = 0.299 R + 0.587 G + 0.114 B`` (float, unrounded;
    alpha ignored), or channel 0 for L and LA images, and the result is the
    single-channel SSIM of the two Y planes with ``data_range=255``.
    Takes the same arguments as :func:`ssim`; returns a float, exactly 1.0
    for identical images.
    """
    a3, b3 = check_image_pair(a, b)
    a3 = _packed(a3)
    b3 = _packed(b3)
    cdef const uint8_t[:, :, :] a_mv = a3
    cdef const uint8_t[:, :, :] b_mv = b3
    cdef pio_view_u8 va = _view(a_mv)
    cdef pio_view_u8 vb = _view(b_mv)
    cdef double result = 0.0
    cdef int status
    with nogil:
        status = pio_ssim_luma_u8(&va, &vb, &result)
    _check(status)
    return result


def reduce_box(img, fx, fy):
    """Shrink an image by integer factors, each output pixel the rounded mean
    of an ``fx`` x ``fy`` block.

    Parameters
    ----------
    img : numpy.ndarray
        uint8 array of shape (H, W) or (H, W, C) with C in 1..4 (with 2 or 4
        channels the last is alpha). Any strides are accepted.
    fx, fy : int
        Block width and height, each >= 1.

    Returns
    -------
    numpy.ndarray
        A new C-contiguous uint8 array of shape (ceil(H / fy), ceil(W / fx))
        for 2-D input, else with C channels. Edge blocks average the pixels
        they have. Rounds half up; with alpha, colour is the alpha-weighted
        mean (transparent pixels add no colour; a fully transparent block
        gets colour 0) and alpha the plain mean. See ``csrc/pio_reduce.h``.
    """
    src3 = check_image(img)
    cdef Py_ssize_t height = src3.shape[0]
    cdef Py_ssize_t width = src3.shape[1]
    # A factor beyond the image size gives the same single block as the size
    # itself; clamping keeps any Python int within the C int parameter.
    cdef int factor_x = <int> min(check_size(fx, "fx"), width)
    cdef int factor_y = <int> min(check_size(fy, "fy"), height)
    cdef Py_ssize_t out_w = (width - 1) // factor_x + 1
    cdef Py_ssize_t out_h = (height - 1) // factor_y + 1
    src3 = _packed(src3)
    out = np.empty((out_h, out_w, src3.shape[2]), dtype=np.uint8)
    cdef const uint8_t[:, :, :] src_mv = src3
    cdef uint8_t[:, :, ::1] dst_mv = out
    cdef pio_view_u8 src = _view(src_mv)
    cdef pio_view_u8 dst = _view(dst_mv)
    cdef int status
    with nogil:
        status = pio_reduce_box_u8(&src, &dst, factor_x, factor_y)
    _check(status)
    return out.reshape(out_h, out_w) if img.ndim == 2 else out


def chroma_error(a, b):
    """Mean over pixels of ``|dCb| + |dCr|`` (BT.601 full-range chroma, unrounded).

    Parameters
    ----------
    a, b : numpy.ndarray
        uint8 arrays of the same shape, (H, W) or (H, W, C) with C in 1..4;
        R, G, B are channels 0-2 (alpha ignored); gray images give 0.0. Any
        strides are accepted.

    Returns
    -------
    float
        In 8-bit levels; 0.0 for identical images. The total is an exact
        integer (see csrc/pio_chroma.h), equal to the pure backend's.
    """
    a3 = check_image(a, "a")
    b3 = check_image(b, "b")
    if np.shape(a) != np.shape(b):
        raise ValueError(f"Expected images of the same shape but received {np.shape(a)} and {np.shape(b)}")
    a3 = _packed(a3)
    b3 = _packed(b3)
    cdef const uint8_t[:, :, :] a_mv = a3
    cdef const uint8_t[:, :, :] b_mv = b3
    cdef pio_view_u8 va = _view(a_mv)
    cdef pio_view_u8 vb = _view(b_mv)
    cdef uint64_t total = 0
    cdef int status
    with nogil:
        status = pio_chroma_error_u8(&va, &vb, &total)
    _check(status)
    return float(total) / (float(a3.shape[0] * a3.shape[1]) * PIO_CHROMA_SCALE)
