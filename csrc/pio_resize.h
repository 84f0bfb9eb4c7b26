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

#endif /* PIO_RESIZE_H */
