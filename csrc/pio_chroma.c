/*
 * pio_chroma.c - sum of |dCb| + |dCr| over two images (see pio_chroma.h).
 *
 * One pass, one row at a time: per pixel three channel differences, two dot
 * products with the fixed-point weights in int32 (each <= 255e6 < 2^31), their
 * absolute values added into an int64 row total. The row loops are PIO_HOT
 * (AVX2 + baseline clones) and specialised for 3 and 4 channels, so the loads
 * have a constant stride and GCC vectorises them (a runtime channel count
 * kept it scalar, 10x slower). Measured on a 1920x1280 RGB pair: 1.6 ms,
 * against 17-33 ms for the luma SSIM of the same pair (medians of 9, shared
 * machine).
 */
#include "pio_chroma.h"

static const int32_t CB_R = -168736, CB_G = -331264, CB_B = 500000;
static const int32_t CR_R = 500000, CR_G = -418688, CR_B = -81312;

/* The body, inlined with a constant channel count so the loads have a fixed
 * stride and the loop vectorises. */
PIO_INLINE int64_t chroma_body(const uint8_t *restrict a, const uint8_t *restrict b,
                               ptrdiff_t width, int channels)
{
    int64_t total = 0;
    for (ptrdiff_t x = 0; x < width; x++) {
        const uint8_t *p = a + x * channels;
        const uint8_t *q = b + x * channels;
        int32_t dr = (int32_t)p[0] - (int32_t)q[0];
        int32_t dg = (int32_t)p[1] - (int32_t)q[1];
        int32_t db = (int32_t)p[2] - (int32_t)q[2];
        int32_t cb = CB_R * dr + CB_G * dg + CB_B * db;
        int32_t cr = CR_R * dr + CR_G * dg + CR_B * db;
        total += (int64_t)(cb < 0 ? -cb : cb) + (int64_t)(cr < 0 ? -cr : cr);
    }
    return total;
}

PIO_HOT static int64_t chroma_row3(const uint8_t *restrict a, const uint8_t *restrict b, ptrdiff_t width)
{
    return chroma_body(a, b, width, 3);
}

PIO_HOT static int64_t chroma_row4(const uint8_t *restrict a, const uint8_t *restrict b, ptrdiff_t width)
{
    return chroma_body(a, b, width, 4);
}

int pio_chroma_error_u8(const pio_view_u8 *a, const pio_view_u8 *b, uint64_t *out)
{
    if (a == NULL || b == NULL || out == NULL || a->data == NULL || b->data == NULL)
        return PIO_ERR_ARG;
    if (a->width < 1 || a->height < 1 || a->channels < 1 || a->channels > 4)
        return PIO_ERR_ARG;
    if (b->width != a->width || b->height != a->height || b->channels != a->channels)
        return PIO_ERR_SHAPE;
    uint64_t total = 0;
    for (ptrdiff_t y = 0; a->channels >= 3 && y < a->height; y++) {
        const uint8_t *ra = a->data + y * a->stride, *rb = b->data + y * b->stride;
        total += (uint64_t)(a->channels == 3 ? chroma_row3(ra, rb, a->width)
                                             : chroma_row4(ra, rb, a->width));
    }
    *out = total;
    return PIO_OK;
}
