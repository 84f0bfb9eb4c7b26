/*
 * pio_resize.h - separable resampling of interleaved uint8 images with 1..4
 * channels (L, LA, RGB, RGBA).
 *
 * Geometry follows Pillow's ImagingResample, so results agree with
 * Image.resize up to Pillow's own 8-bit intermediate rounding:
 *   - output pixel i samples around center = (i + 0.5) * scale, where
 *     scale = in_size / out_size;
 *   - when downscaling, the filter support is stretched by scale, so every
 *     source pixel contributes (antialiasing);
 *   - taps are clipped to the image and the weights renormalised to sum 1;
 *   - nearest picks source index floor((i + 0.5) * scale), computed exactly
 *     in integers.
 * With 2 or 4 channels the last one is alpha: colour is premultiplied by
 * alpha before filtering and divided out afterwards, so fully transparent
 * pixels never bleed their colour into visible ones. (Nearest copies pixels
 * and needs no premultiplication.)
 *
 * Accuracy: every output is within 1 level of the exact (real-number) result
 * of that definition, rounded half up. On x86-64 with AVX2, images without
 * alpha (and RGBA whose alpha is 255 everywhere) take a fixed-point path
 * (int16 weights, exact int32 sums, one int16 intermediate with 6
 * fractional bits) whenever its proven error bound allows; everything else
 * (alpha images, CPUs without AVX2, other architectures) takes a float32
 * path. See pio_resize_impl.h.
 */
#ifndef PIO_RESIZE_H
#define PIO_RESIZE_H

#include "pio_common.h"

typedef enum {
    PIO_FILTER_NEAREST = 0,
    PIO_FILTER_BOX = 1,
    PIO_FILTER_BILINEAR = 2, /* triangle, support 1 */
    PIO_FILTER_BICUBIC = 3,  /* Keys cubic, a = -0.5 (as Pillow), support 2 */
    PIO_FILTER_LANCZOS3 = 4, /* windowed sinc, support 3 */
    PIO_FILTER_COUNT = 5
} pio_filter;

/*
 * Resample src into dst. dst's width and height (each >= 1) are the output
 * size; its channels must equal src's. The two views must not overlap.
 * Returns PIO_OK, PIO_ERR_ARG, PIO_ERR_SHAPE, PIO_ERR_FILTER,
 * PIO_ERR_OVERFLOW or PIO_ERR_NOMEM; on error dst is left unspecified.
 */
int pio_resize_u8(const pio_view_u8 *src, const pio_view_u8 *dst, int filter);

/* Flags of pio_resize_u8_ex, for tests and benchmarks of the paths inside
 * pio_resize_u8 (which is pio_resize_u8_ex with flags 0):
 *   PIO_RESIZE_NO_SIMD      run the portable loops even where AVX2 is there;
 *   PIO_RESIZE_NO_FIXED     run the float32 path even where the fixed-point
 *                           path would be taken;
 *   PIO_RESIZE_NO_AVX512    use AVX2 even where AVX-512 VNNI is there;
 *   PIO_RESIZE_FORCE_FIXED  take the fixed-point path for an image without
 *                           alpha even with no SIMD (where the float32 path
 *                           is faster and normally runs): its portable
 *                           loops are the twin the SIMD loops are tested
 *                           against. (It still declines past its error
 *                           bound.)
 * Unknown bits, or NO_FIXED with FORCE_FIXED, are an error (PIO_ERR_ARG). */
enum {
    PIO_RESIZE_NO_SIMD = 1,
    PIO_RESIZE_NO_FIXED = 2,
    PIO_RESIZE_NO_AVX512 = 4,
    PIO_RESIZE_FORCE_FIXED = 8,
    PIO_RESIZE_FLAGS_ALL = 15
};

int pio_resize_u8_ex(const pio_view_u8 *src, const pio_view_u8 *dst, int filter,
                     unsigned flags);

/* pio_resize_u8_ex where the output covers only the input coordinates
 * [x0, x1) x [y0, y1) (as Pillow's resize with box (x0, y0, x1, y1)): for an
 * input whose first or last column or row stands for only part of a sample,
 * such as a JPEG decoded at 1/2, 1/4 or 1/8 scale (width ceil(W / s) for
 * W / s source samples), maybe turned by its EXIF orientation, or a box
 * reduce by a factor that does not divide the size. x0 and y0 must be in
 * [0, 1), x1 in (width - 1, width], y1 in (height - 1, height]; the nearest
 * filter takes only the whole input. PIO_ERR_ARG otherwise. */
int pio_resize_u8_box(const pio_view_u8 *src, const pio_view_u8 *dst, int filter,
                      unsigned flags, double x0, double y0, double x1, double y1);

/* The instruction set pio_resize_u8 uses on this CPU: 0 portable loops,
 * 1 AVX2 + FMA, 2 AVX-512 VNNI (on 256-bit registers) for the fixed-point
 * path. */
int pio_resize_simd_level(void);

#endif /* PIO_RESIZE_H */
