/*
 * pio_reduce.h - integer box reduction of interleaved uint8 images with 1..4
 * channels: each output pixel is the mean of an fx x fy block of source
 * pixels. A cheap, exact pre-shrink before the final resize of a large
 * downscale.
 *
 * Geometry: output pixel (ox, oy) covers source columns [ox*fx, ox*fx + fx)
 * and rows [oy*fy, oy*fy + fy), clipped to the image, so the output is
 * ceil(W / fx) x ceil(H / fy) and the last column / row of blocks may be
 * partial; a partial block is averaged over the n pixels it has.
 *
 * Rounding, in exact integer arithmetic (the NumPy fallback in
 * pyimgopt/_fallback.py reproduces it bit for bit), round half up:
 *
 *   1 or 3 channels:  v = round(sum(v_i) / n)
 *   2 or 4 channels (alpha last):
 *     alpha  a = round(sum(a_i) / n)
 *     colour c = sum(a_i) == 0 ? 0 : round(sum(c_i * a_i) / sum(a_i))
 *
 * i.e. colour is averaged premultiplied by alpha and divided out again
 * (the alpha-weighted mean), so fully transparent pixels contribute no colour,
 * and a fully transparent block gets colour 0 (as unpremultiply gives at
 * alpha 0). round(p / q) here is floor((2p + q) / (2q)).
 */
#ifndef PIO_REDUCE_H
#define PIO_REDUCE_H

#include "pio_common.h"

/*
 * Reduce src into dst by integer factors fx, fy >= 1 (PIO_ERR_ARG
 * otherwise). dst must be ceil(src.width / fx) x ceil(src.height / fy) with
 * src's channels (PIO_ERR_SHAPE otherwise); the views must not overlap.
 * Returns PIO_OK, PIO_ERR_ARG, PIO_ERR_SHAPE, PIO_ERR_OVERFLOW or
 * PIO_ERR_NOMEM; on error dst is left unspecified.
 */
int pio_reduce_box_u8(const pio_view_u8 *src, const pio_view_u8 *dst, int fx, int fy);

#endif /* PIO_REDUCE_H */
