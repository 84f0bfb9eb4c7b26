# cython: language_level=3
"""C declarations of the kernels in csrc/ (the only place they are declared)."""

from libc.stdint cimport uint8_t, uint64_t


cdef extern from "pio_common.h" nogil:
    enum:
        PIO_OK
        PIO_ERR_ARG
        PIO_ERR_NOMEM
        PIO_ERR_FILTER
        PIO_ERR_OVERFLOW
        PIO_ERR_SHAPE

    ctypedef struct pio_view_u8:
        uint8_t *data
        Py_ssize_t width
        Py_ssize_t height
        int channels
        Py_ssize_t stride

    const char *pio_status_message(int status)


cdef extern from "pio_alpha.h" nogil:
    int pio_premultiply_u8(const pio_view_u8 *src, const pio_view_u8 *dst)
    int pio_unpremultiply_u8(const pio_view_u8 *src, const pio_view_u8 *dst)


cdef extern from "pio_resize.h" nogil:
    ctypedef enum pio_filter:
        PIO_FILTER_NEAREST
        PIO_FILTER_BOX
        PIO_FILTER_BILINEAR
        PIO_FILTER_BICUBIC
        PIO_FILTER_LANCZOS3
        PIO_FILTER_COUNT

    enum:
        PIO_RESIZE_NO_SIMD
        PIO_RESIZE_NO_FIXED
        PIO_RESIZE_NO_AVX512
        PIO_RESIZE_FORCE_FIXED

    int pio_resize_u8(const pio_view_u8 *src, const pio_view_u8 *dst, int filter)
    int pio_resize_u8_ex(const pio_view_u8 *src, const pio_view_u8 *dst, int filter,
                         unsigned flags)
    int pio_resize_u8_box(const pio_view_u8 *src, const pio_view_u8 *dst, int filter,
                          unsigned flags, double x0, double y0, double x1, double y1)
    int pio_resize_simd_level()


cdef extern from "pio_ssim.h" nogil:
    int pio_ssim_u8(const pio_view_u8 *a, const pio_view_u8 *b, double *out)
    int pio_ssim_luma_u8(const pio_view_u8 *a, const pio_view_u8 *b, double *out)


cdef extern from "pio_reduce.h" nogil:
    int pio_reduce_box_u8(const pio_view_u8 *src, const pio_view_u8 *dst, int fx, int fy)


cdef extern from "pio_chroma.h" nogil:
    enum:
        PIO_CHROMA_SCALE

    int pio_chroma_error_u8(const pio_view_u8 *a, const pio_view_u8 *b, uint64_t *out)
