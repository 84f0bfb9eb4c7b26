/*
 * pio_ssim.c - SSIM with a 7x7 uniform window (see pio_ssim.h).
 *
 * Shape of the computation, and why:
 *
 *   keep, per sample column, the sums over the current 7 rows of
 *     x, y, x*x, y*y, x*y                      (col_update, +row / -row)
 *   for each window row:
 *     add the row entering the window; for every window of the row, take
 *     the 7-column sums of those five column sums and evaluate SSIM
 *     (ssim_row); add the values to per-channel totals (sum_lanes); and
 *     subtract the row leaving the window.
 *
 * - O(pixels): every source row is loaded twice (entering and leaving) and
 *   each window costs a fixed number of operations, independent of its size.
 * - All sums are of integers, held in double, and stay below 2^53, so they
 *   are exact: running sums never drift, however tall the image, and the
 *   variance numerators N*Sxx - Sx^2 are computed without cancellation error.
 *   For colour SSIM the samples are the uint8 values (sums of squares over a
 *   window <= 49 * 255^2). For luma they are 1000 * Y = 299 R + 587 G + 114 B,
 *   an integer <= 255000, so window sums of squares stay <= 49 * 255000^2
 *   ~ 3.2e12 and products such as 49 * Sxy or Sx * Sy <= ~1.6e14 < 2^53 ~ 9e15.
 * - SSIM is written in terms of the window sums, with the common
 *   denominators cancelled (derivation at ssim_row), so identical inputs give
 *   numerator == denominator bit for bit, hence exactly 1.0.
 * - scikit-image filters with reflected borders and then crops 3 pixels on
 *   each side; the windows that survive the crop are exactly those fully
 *   inside the image, which is all this code evaluates.
 * - Scratch rows are allocated once, in one block, before any loop. The
 *   per-row functions are PIO_HOT (AVX2 + baseline clones): all are flat loops
 *   over contiguous doubles that GCC vectorises (the final sum uses 12
 *   independent lanes rather than one serial accumulator, so it vectorises
 *   without reassociating any addition; 12 is a multiple of every channel
 *   count, so lane j always holds channel j % channels).
 */
#include "pio_ssim.h"

#include <string.h>

#define WIN PIO_SSIM_WIN
#define NP ((double)(WIN * WIN))
#define LANES 12

/* scikit-image defaults: K1, K2 and the data range of uint8. */
#define SSIM_K1 0.01
#define SSIM_K2 0.03
#define SSIM_L 255.0

/* Luma weights times 1000, so 1000 * Y is an exact integer. */
#define LUMA_R 299.0
#define LUMA_G 587.0
#define LUMA_B 114.0
#define LUMA_SCALE 1000.0

/* ------------------------------------------------------------------------ */
/* Small helpers. */

static int mul_size(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > SIZE_MAX / a)
        return PIO_ERR_OVERFLOW;
    *out = a * b;
    return PIO_OK;
}

/* ------------------------------------------------------------------------ */
/* Row loaders: one image row to doubles holding integer sample values. */

PIO_HOT static void load_plain(const uint8_t *restrict src, double *restrict dst, ptrdiff_t n)
{
    for (ptrdiff_t i = 0; i < n; i++)
        dst[i] = (double)src[i];
}

PIO_INLINE void luma_body(const uint8_t *restrict src, double *restrict dst, ptrdiff_t width,
                          int channels)
{
    for (ptrdiff_t x = 0; x < width; x++) {
        const uint8_t *p = src + x * channels;
        dst[x] = LUMA_R * p[0] + LUMA_G * p[1] + LUMA_B * p[2];
    }
}

/* 1000 * Y for 3 or 4 channels (alpha ignored), or channel 0 for 1 or 2. */
PIO_HOT static void load_luma(const uint8_t *restrict src, double *restrict dst, ptrdiff_t width,
                              int channels)
{
    /* Constant channel counts let GCC unroll and vectorise the gathers. */
    switch (channels) {
    case 1: load_plain(src, dst, width); break;
    case 2:
        for (ptrdiff_t x = 0; x < width; x++)
            dst[x] = (double)src[2 * x];
        break;
    case 3: luma_body(src, dst, width, 3); break;
    default: luma_body(src, dst, width, 4); break;
    }
}

/* ------------------------------------------------------------------------ */
/* Window sums. */

typedef struct {
    double *x, *y, *xx, *yy, *xy;
} sums5;

/* Add (sign = +1) or remove (sign = -1) one row pair from the column sums.
 * Multiplying by +-1 is exact, so adding then removing a row restores the
 * sums bit for bit. */
PIO_HOT static void col_update(const double *restrict ra, const double *restrict rb,
                               double *restrict sx, double *restrict sy, double *restrict sxx,
                               double *restrict syy, double *restrict sxy, ptrdiff_t n,
                               double sign)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        double a = ra[i], b = rb[i];
        sx[i] += sign * a;
        sy[i] += sign * b;
        sxx[i] += sign * (a * a);
        syy[i] += sign * (b * b);
        sxy[i] += sign * (a * b);
    }
}

/* Sum of col[i + k * planes] for k in 0..WIN-1: the 7-pixel horizontal
 * window of one channel. A direct sum, not a running one, so the loop that
 * calls it has no carried dependency and vectorises; and it is computed where
 * it is used, so the five window sums never go through memory. */
PIO_INLINE double win_sum(const double *col, ptrdiff_t i, ptrdiff_t planes)
{
    return ((col[i] + col[i + planes]) + (col[i + 2 * planes] + col[i + 3 * planes])) +
           ((col[i + 4 * planes] + col[i + 5 * planes]) + col[i + 6 * planes]);
}

/*
 * SSIM of each window from its sums (samples scaled by s, N = 49):
 *   ux = Sx / (N s),  vx = N/(N-1) * (Sxx/(N s^2) - ux^2) = (N Sxx - Sx^2) / (N (N-1) s^2),
 *   vxy = (N Sxy - Sx Sy) / (N (N-1) s^2), so
 *   SSIM = (2 ux uy + C1)(2 vxy + C2) / ((ux^2 + uy^2 + C1)(vx + vy + C2))
 *        = (2 Sx Sy + c1)(2 (N Sxy - Sx Sy) + c2)
 *          / ((Sx^2 + Sy^2 + c1)((N Sxx - Sx^2) + (N Syy - Sy^2) + c2))
 * with c1 = C1 N^2 s^2 and c2 = C2 N (N-1) s^2. Every product of sums is an
 * exact integer (see the file comment); only c1, c2 and the final products
 * and division round.
 */
PIO_HOT static void ssim_row(const double *restrict cx, const double *restrict cy,
                             const double *restrict cxx, const double *restrict cyy,
                             const double *restrict cxy, double *restrict s, ptrdiff_t n,
                             ptrdiff_t planes, double c1, double c2)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        double sx = win_sum(cx, i, planes), sy = win_sum(cy, i, planes);
        double sxx = win_sum(cxx, i, planes), syy = win_sum(cyy, i, planes);
        double sxy = win_sum(cxy, i, planes);
        double pxy = sx * sy;
        double pxx = sx * sx, pyy = sy * sy;
        double num = (2.0 * pxy + c1) * (2.0 * (NP * sxy - pxy) + c2);
        double den = (pxx + pyy + c1) * ((NP * sxx - pxx) + (NP * syy - pyy) + c2);
        s[i] = num / den;
    }
}

/* lanes[j] += sum of s[i] over i = j (mod LANES). The row is summed on its
 * own first and then added to the running totals, which keeps each partial
 * sum small relative to the total (less rounding on big images). */
PIO_HOT static void sum_lanes(const double *restrict s, ptrdiff_t n, double *restrict lanes)
{
    double acc[LANES] = {0};
    ptrdiff_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++)
            acc[j] += s[i + j];
    for (int j = 0; i + j < n; j++)
        acc[j] += s[i + j];
    for (int j = 0; j < LANES; j++)
        lanes[j] += acc[j];
}

/* ------------------------------------------------------------------------ */
/* Driver. */

static void load_row(const pio_view_u8 *v, int luma, ptrdiff_t y, double *dst)
{
    const uint8_t *src = v->data + y * v->stride;
    if (luma)
        load_luma(src, dst, v->width, v->channels);
    else
        load_plain(src, dst, v->width * v->channels);
}

static int ssim_driver(const pio_view_u8 *a, const pio_view_u8 *b, int luma, double *out)
{
    if (out == NULL || !pio_view_ok(a) || !pio_view_ok(b))
        return PIO_ERR_ARG;
    if (a->width != b->width || a->height != b->height || a->channels != b->channels)
        return PIO_ERR_SHAPE;
    if (a->width < WIN || a->height < WIN)
        return PIO_ERR_SHAPE;

    const ptrdiff_t width = a->width, height = a->height;
    const int planes = luma ? 1 : a->channels;
    const double scale = (luma && a->channels >= 3) ? LUMA_SCALE : 1.0;
    const double c1 = (SSIM_K1 * SSIM_L) * (SSIM_K1 * SSIM_L) * NP * NP * scale * scale;
    const double c2 = (SSIM_K2 * SSIM_L) * (SSIM_K2 * SSIM_L) * NP * (NP - 1.0) * scale * scale;

    /* One scratch block: 2 loaded rows + 5 column sums (n_in each), then
     * the SSIM values of one row of windows (n_out). */
    size_t n_in, n_out, total, bytes;
    if (mul_size((size_t)width, (size_t)planes, &n_in) != PIO_OK)
        return PIO_ERR_OVERFLOW;
    n_out = n_in - (size_t)(WIN - 1) * (size_t)planes;
    if (mul_size(n_in, 2 + 5, &total) != PIO_OK || total > SIZE_MAX - n_out)
        return PIO_ERR_OVERFLOW;
    total += n_out;
    if (mul_size(total, sizeof(double), &bytes) != PIO_OK)
        return PIO_ERR_OVERFLOW;
    double *block = malloc(bytes);
    if (block == NULL)
        return PIO_ERR_NOMEM;

    double *ra = block, *rb = ra + n_in;
    sums5 col = {rb + n_in, rb + 2 * n_in, rb + 3 * n_in, rb + 4 * n_in, rb + 5 * n_in};
    double *srow = col.xy + n_in;
    memset(col.x, 0, 5 * n_in * sizeof(double));

    const ptrdiff_t nin = (ptrdiff_t)n_in, nout = (ptrdiff_t)n_out;
    for (ptrdiff_t y = 0; y < WIN - 1; y++) {
        load_row(a, luma, y, ra);
        load_row(b, luma, y, rb);
        col_update(ra, rb, col.x, col.y, col.xx, col.yy, col.xy, nin, 1.0);
    }

    double lanes[LANES] = {0};
    for (ptrdiff_t y = 0; y + WIN <= height; y++) {
        load_row(a, luma, y + WIN - 1, ra);
        load_row(b, luma, y + WIN - 1, rb);
        col_update(ra, rb, col.x, col.y, col.xx, col.yy, col.xy, nin, 1.0);

        ssim_row(col.x, col.y, col.xx, col.yy, col.xy, srow, nout, planes, c1, c2);
        sum_lanes(srow, nout, lanes);

        if (y + WIN < height) {
            load_row(a, luma, y, ra);
            load_row(b, luma, y, rb);
            col_update(ra, rb, col.x, col.y, col.xx, col.yy, col.xy, nin, -1.0);
        }
    }
    free(block);

    /* Mean per channel, then the mean of the channel means (scikit-image). */
    const double count = (double)(width - (WIN - 1)) * (double)(height - (WIN - 1));
    double mean = 0.0;
    for (int c = 0; c < planes; c++) {
        double channel_sum = 0.0;
        for (int j = c; j < LANES; j += planes)
            channel_sum += lanes[j];
        mean += channel_sum / count;
    }
    *out = mean / planes;
    return PIO_OK;
}

int pio_ssim_u8(const pio_view_u8 *a, const pio_view_u8 *b, double *out)
{
    return ssim_driver(a, b, 0, out);
}

int pio_ssim_luma_u8(const pio_view_u8 *a, const pio_view_u8 *b, double *out)
{
    return ssim_driver(a, b, 1, out);
}
