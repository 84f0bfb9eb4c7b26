/*
 * pio_alpha.c - premultiply / unpremultiply alpha (see pio_alpha.h).
 *
 * These run once per image outside the resampler (which premultiplies in
 * float on its own), so they favour exactness over speed: integer formulas
 * whose results the NumPy fallback matches exactly. The channel count is a
 * compile-time constant in each specialised loop so GCC can unroll it.
 */
#include "pio_alpha.h"

/* round(x / 255) for 0 <= x <= 255 * 255: x / 255 is never exactly k + 0.5
 * (255 is odd), so rounding half up and to nearest agree. */
PIO_INLINE uint8_t div255_round(uint32_t x)
{
    return (uint8_t)((x + 127u) / 255u);
}

/* min(255, round_half_up(c * 255 / a)) for a >= 1. */
PIO_INLINE uint8_t unmul_round(uint32_t c, uint32_t a)
{
    uint32_t v = (2u * 255u * c + a) / (2u * a);
    return (uint8_t)(v > 255u ? 255u : v);
}

static int check_pair(const pio_view_u8 *src, const pio_view_u8 *dst)
{
    if (!pio_view_ok(src) || !pio_view_ok(dst))
        return PIO_ERR_ARG;
    if (src->channels != 2 && src->channels != 4)
        return PIO_ERR_ARG;
    if (src->width != dst->width || src->height != dst->height ||
        src->channels != dst->channels)
        return PIO_ERR_SHAPE;
    return PIO_OK;
}

/* No `restrict` on these two: src == dst (in place) is allowed, and each
 * pixel's bytes are all read before any of them is written, so the plain
 * loops are correct for that case as they stand. */
PIO_INLINE void premul_row(const uint8_t *in, uint8_t *out, ptrdiff_t width, int channels)
{
    for (ptrdiff_t x = 0; x < width; x++) {
        const uint8_t *p = in + x * channels;
        uint8_t *q = out + x * channels;
        uint32_t a = p[channels - 1];
        for (int c = 0; c < channels - 1; c++)
            q[c] = div255_round((uint32_t)p[c] * a);
        q[channels - 1] = (uint8_t)a;
    }
}

PIO_INLINE void unpremul_row(const uint8_t *in, uint8_t *out, ptrdiff_t width, int channels)
{
    for (ptrdiff_t x = 0; x < width; x++) {
        const uint8_t *p = in + x * channels;
        uint8_t *q = out + x * channels;
        uint32_t a = p[channels - 1];
        for (int c = 0; c < channels - 1; c++)
            q[c] = a == 0 ? 0 : unmul_round(p[c], a);
        q[channels - 1] = (uint8_t)a;
    }
}

int pio_premultiply_u8(const pio_view_u8 *src, const pio_view_u8 *dst)
{
    int status = check_pair(src, dst);
    if (status != PIO_OK)
        return status;
    for (ptrdiff_t y = 0; y < src->height; y++) {
        const uint8_t *in = src->data + y * src->stride;
        uint8_t *out = dst->data + y * dst->stride;
        /* Constant channel counts let GCC unroll the per-pixel loop. */
        if (src->channels == 2)
            premul_row(in, out, src->width, 2);
        else
            premul_row(in, out, src->width, 4);
    }
    return PIO_OK;
}

int pio_unpremultiply_u8(const pio_view_u8 *src, const pio_view_u8 *dst)
{
    int status = check_pair(src, dst);
    if (status != PIO_OK)
        return status;
    for (ptrdiff_t y = 0; y < src->height; y++) {
        const uint8_t *in = src->data + y * src->stride;
        uint8_t *out = dst->data + y * dst->stride;
        if (src->channels == 2)
            unpremul_row(in, out, src->width, 2);
        else
            unpremul_row(in, out, src->width, 4);
    }
    return PIO_OK;
}
