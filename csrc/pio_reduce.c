/*
 * pio_reduce.c - integer box reduction (see pio_reduce.h).
 *
 * For each output row, the fy source rows of its blocks are summed into one
 * row of 64-bit accumulators (one per output pixel and channel), which is
 * then divided and rounded into the destination row. Each source pixel is
 * read once; memory is O(output width).
 *
 * - Sums are exact integers, so the result is exactly the rounding stated in
 *   the header and the NumPy fallback can match it bit for bit. 64 bits
 *   because a block may be large (a premultiplied sum is up to
 *   n * 255 * 255, which passes 2^32 beyond ~66000 pixels per block); they
 *   cannot overflow for any image that fits in memory.
 * - The channel count is a compile-time constant in each specialised body
 *   (always-inlined, dispatched once per row) so GCC unrolls the per-pixel
 *   channel loop; the row functions are PIO_HOT.
 */
#include "pio_reduce.h"

#include <string.h>

static int mul_size(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > SIZE_MAX / a)
        return PIO_ERR_OVERFLOW;
    *out = a * b;
    return PIO_OK;
}

/* floor((2p + q) / (2q)) = round half up of p / q, for q >= 1. */
PIO_INLINE uint8_t div_round(uint64_t p, uint64_t q)
{
    return (uint8_t)((2u * p + q) / (2u * q));
}

/* Add one source row to the block accumulators of an output row. With
 * alpha, colour channels accumulate c * a and the alpha channel a. */
PIO_INLINE void accumulate_body(const uint8_t *restrict in, uint64_t *restrict acc,
                                ptrdiff_t width, ptrdiff_t fx, int channels, int alpha)
{
    ptrdiff_t ox = 0;
    for (ptrdiff_t x0 = 0; x0 < width; x0 += fx, ox++) {
        ptrdiff_t x1 = width - x0 < fx ? width : x0 + fx;
        uint64_t s[4] = {0, 0, 0, 0};
        for (ptrdiff_t x = x0; x < x1; x++) {
            const uint8_t *p = in + x * channels;
            if (alpha) {
                uint32_t a = p[channels - 1];
                for (int c = 0; c < channels - 1; c++)
                    s[c] += (uint32_t)p[c] * a;
                s[channels - 1] += a;
            } else {
                for (int c = 0; c < channels; c++)
                    s[c] += p[c];
            }
        }
        uint64_t *q = acc + ox * channels;
        for (int c = 0; c < channels; c++)
            q[c] += s[c];
    }
}

PIO_HOT static void accumulate_row(const uint8_t *restrict in, uint64_t *restrict acc,
                                   ptrdiff_t width, ptrdiff_t fx, int channels)
{
    switch (channels) {
    case 1: accumulate_body(in, acc, width, fx, 1, 0); break;
    case 2: accumulate_body(in, acc, width, fx, 2, 1); break;
    case 3: accumulate_body(in, acc, width, fx, 3, 0); break;
    default: accumulate_body(in, acc, width, fx, 4, 1); break;
    }
}

/* Divide the accumulators of one output row and store it. `rows` is the
 * number of source rows in this row of blocks (fy, or fewer at the bottom). */
static void store_row(const uint64_t *acc, uint8_t *out, ptrdiff_t out_w, ptrdiff_t width,
                      ptrdiff_t fx, ptrdiff_t rows, int channels)
{
    const int alpha = channels == 2 || channels == 4;
    for (ptrdiff_t ox = 0; ox < out_w; ox++) {
        ptrdiff_t x0 = ox * fx;
        ptrdiff_t cols = width - x0 < fx ? width - x0 : fx;
        uint64_t n = (uint64_t)cols * (uint64_t)rows;
        const uint64_t *s = acc + ox * channels;
        uint8_t *q = out + ox * channels;
        if (alpha) {
            uint64_t sa = s[channels - 1];
            for (int c = 0; c < channels - 1; c++)
                q[c] = sa == 0 ? 0 : div_round(s[c], sa);
            q[channels - 1] = div_round(sa, n);
        } else {
            for (int c = 0; c < channels; c++)
                q[c] = div_round(s[c], n);
        }
    }
}

int pio_reduce_box_u8(const pio_view_u8 *src, const pio_view_u8 *dst, int fx, int fy)
{
    if (!pio_view_ok(src) || !pio_view_ok(dst) || fx < 1 || fy < 1)
        return PIO_ERR_ARG;
    /* ceil(w / f) written so that it cannot overflow. */
    const ptrdiff_t out_w = (src->width - 1) / fx + 1;
    const ptrdiff_t out_h = (src->height - 1) / fy + 1;
    if (dst->width != out_w || dst->height != out_h || dst->channels != src->channels)
        return PIO_ERR_SHAPE;

    const int channels = src->channels;
    size_t count, bytes;
    if (mul_size((size_t)out_w, (size_t)channels, &count) != PIO_OK ||
        mul_size(count, sizeof(uint64_t), &bytes) != PIO_OK)
        return PIO_ERR_OVERFLOW;
    uint64_t *acc = malloc(bytes);
    if (acc == NULL)
        return PIO_ERR_NOMEM;

    for (ptrdiff_t oy = 0; oy < out_h; oy++) {
        const ptrdiff_t y0 = oy * fy;
        const ptrdiff_t rows = src->height - y0 < fy ? src->height - y0 : fy;
        memset(acc, 0, bytes);
        for (ptrdiff_t y = y0; y < y0 + rows; y++)
            accumulate_row(src->data + y * src->stride, acc, src->width, fx, channels);
        store_row(acc, dst->data + oy * dst->stride, out_w, src->width, fx, rows, channels);
    }
    free(acc);
    return PIO_OK;
}
