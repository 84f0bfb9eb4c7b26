/*
 * pio_resize.c - separable resampling of uint8 images (see pio_resize.h):
 * the filters, the per-axis weight tables, nearest neighbour, and the choice
 * of path. The filtering itself lives in two files:
 *
 *   pio_resize_fixed.c  images without alpha, and RGBA that is opaque
 *                       everywhere, on CPUs with AVX2: 8-bit rows times
 *                       int16 weights into exact int32 sums (pmaddwd), an
 *                       int16 intermediate. 1.2-1.8x the float path's speed.
 *   pio_resize_float.c  alpha images (premultiplied exactly in uint16, then
 *                       float32): the colour of a faint pixel is divided by
 *                       its small filtered alpha, which magnifies any
 *                       absolute error up to 510x; int16 weights would be
 *                       visibly wrong there, float32 ones are not. Also the
 *                       path without AVX2 (its compiler-vectorised loops
 *                       beat the fixed path's portable ones there), and the
 *                       fallback when the fixed-point error bound is loose.
 *
 * Both read the source once, in horizontal bands, and never hold a whole
 * intermediate image; both are within 1 level of the exact result.
 *
 * SIMD without -march=native: each hot loop exists as a baseline variant and
 * an AVX2 (+FMA) variant compiled with a target attribute, and the AVX2 one
 * is chosen at run time when the CPU has it (pio_cpu_has_avx2), so one build
 * runs on any x86-64 and builds anywhere else with the portable loops only.
 * PIO_RESIZE_NO_SIMD forces the portable loops (the tests compare them).
 */
#include "pio_resize_impl.h"

#include <math.h>
#include <string.h>

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

/* ------------------------------------------------------------------------ */
/* Filters: the same kernels, supports and boundary conventions as Pillow. */

static double filter_support(int filter)
{
    switch (filter) {
    case PIO_FILTER_BOX: return 0.5;
    case PIO_FILTER_BILINEAR: return 1.0;
    case PIO_FILTER_BICUBIC: return 2.0;
    case PIO_FILTER_LANCZOS3: return 3.0;
    default: return 0.0;
    }
}

static double filter_eval(int filter, double x)
{
    switch (filter) {
    case PIO_FILTER_BOX:
        /* Half-open on the left, as Pillow: a sample exactly between two
         * source pixels belongs to one of them, never to both. */
        return (x > -0.5 && x <= 0.5) ? 1.0 : 0.0;
    case PIO_FILTER_BILINEAR:
        x = fabs(x);
        return x < 1.0 ? 1.0 - x : 0.0;
    case PIO_FILTER_BICUBIC: {
        const double a = -0.5;
        x = fabs(x);
        if (x < 1.0)
            return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
        if (x < 2.0)
            return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
        return 0.0;
    }
    case PIO_FILTER_LANCZOS3: {
        if (!(x >= -3.0 && x < 3.0))
            return 0.0;
        if (x == 0.0)
            return 1.0;
        /* sinc(x) * sinc(x / 3) with one sin: sin(3t) = 3 sin t - 4 sin^3 t
         * for t = pi x / 3 (the tables cost a visible share of a resize). */
        const double t = x * (M_PI / 3.0);
        const double st = sin(t);
        return (st * (3.0 - 4.0 * st * st)) * st / (3.0 * t * t);
    }
    default:
        return 0.0;
    }
}

/*
 * w[k] = lanczos3(x0 + k * step) for k < n, with one sin and cos per 32
 * taps instead of one sin per tap (the weight tables were ~7% of a
 * downscale): sin and cos of t = pi x / 3 advance by a fixed rotation, and
 * the few-ulp drift of that recurrence is reset every 32 taps. Values are
 * those of filter_eval to ~1e-15.
 */
static void lanczos3_taps(double *w, double x0, double step, ptrdiff_t n)
{
    const double k3 = M_PI / 3.0;
    const double cd = cos(step * k3), sd = sin(step * k3);
    double st = 0.0, ct = 1.0;
    for (ptrdiff_t k = 0; k < n; k++) {
        const double x = x0 + (double)k * step;
        const double t = x * k3;
        if ((k & 31) == 0) {
            st = sin(t);
            ct = cos(t);
        }
        if (!(x >= -3.0 && x < 3.0))
            w[k] = 0.0;
        else if (x == 0.0)
            w[k] = 1.0;
        else
            w[k] = (st * (3.0 - 4.0 * st * st)) * st / (3.0 * t * t);
        const double sn = st * cd + ct * sd;
        ct = ct * cd - st * sd;
        st = sn;
    }
}

/* ------------------------------------------------------------------------ */
/* Helpers shared with the two paths. */

int pio_mul_size(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > SIZE_MAX / a)
        return PIO_ERR_OVERFLOW;
    *out = a * b;
    return PIO_OK;
}

void *pio_alloc_array(size_t count, size_t size, int *status)
{
    size_t bytes;
    if (pio_mul_size(count, size, &bytes) != PIO_OK) {
        *status = PIO_ERR_OVERFLOW;
        return NULL;
    }
    void *p = malloc(bytes ? bytes : 1);
    if (p == NULL)
        *status = PIO_ERR_NOMEM;
    return p;
}

int pio_simd_level(unsigned flags)
{
    if (flags & PIO_RESIZE_NO_SIMD)
        return PIO_SIMD_NONE;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(PIO_NO_SIMD)
    /* Both compilers' runtimes check that the OS saves the AVX (and
     * AVX-512) registers (XGETBV) before reporting these features. */
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma"))
        return PIO_SIMD_NONE;
    if (!(flags & PIO_RESIZE_NO_AVX512) && __builtin_cpu_supports("avx512vnni") &&
        __builtin_cpu_supports("avx512vl"))
        return PIO_SIMD_AVX512VNNI;
    return PIO_SIMD_AVX2;
#else
    return PIO_SIMD_NONE;
#endif
}

/* ------------------------------------------------------------------------ */
/* Per-axis weight tables. */

void pio_axis_free(pio_axis *ax)
{
    free(ax->start);
    free(ax->count);
    free(ax->weights);
    ax->start = NULL;
    ax->count = NULL;
    ax->weights = NULL;
}

/*
 * Pillow's precompute_coeffs: for output i, center = (i + 0.5) * scale; the
 * support is stretched by scale when downscaling; taps are the source
 * indices [xmin, xmax) clipped to the image; each tap's weight is
 * filter((x - center + 0.5) / filterscale), normalised to sum 1.
 */
int pio_axis_init(pio_axis *ax, ptrdiff_t in_size, double lo, double hi, ptrdiff_t out_size,
                  int filter)
{
    memset(ax, 0, sizeof(*ax));
    const double scale = (hi - lo) / (double)out_size;
    const double filterscale = scale < 1.0 ? 1.0 : scale;
    const double support = filter_support(filter) * filterscale;
    /* No window can hold more than in_size taps, so cap ksize there; this
     * also keeps huge downscale factors from overflowing int. */
    double kd = ceil(support) * 2.0 + 1.0;
    ax->ksize = kd > (double)in_size ? (int)in_size : (int)kd;

    int status = PIO_OK;
    size_t table;
    if ((status = pio_mul_size((size_t)out_size, (size_t)ax->ksize, &table)) != PIO_OK)
        return status;
    ax->start = pio_alloc_array((size_t)out_size, sizeof(ptrdiff_t), &status);
    ax->count = pio_alloc_array((size_t)out_size, sizeof(int), &status);
    ax->weights = pio_alloc_array(table, sizeof(double), &status);
    if (status != PIO_OK) {
        pio_axis_free(ax);
        return status;
    }

    const double ss = 1.0 / filterscale;
    for (ptrdiff_t i = 0; i < out_size; i++) {
        const double center = lo + ((double)i + 0.5) * scale;
        /* (ptrdiff_t) truncates toward zero exactly like Pillow's (int) cast;
         * both ends are then clipped into the image. */
        ptrdiff_t xmin = (ptrdiff_t)(center - support + 0.5);
        ptrdiff_t xmax = (ptrdiff_t)(center + support + 0.5);
        if (xmin < 0)
            xmin = 0;
        if (xmax > in_size)
            xmax = in_size;
        ptrdiff_t n = xmax - xmin;
        if (n < 0)
            n = 0;
        if (n > ax->ksize) /* cannot happen; keeps the table write in bounds */
            n = ax->ksize;

        double *w = ax->weights + (size_t)i * (size_t)ax->ksize;
        const double x0 = ((double)xmin - center + 0.5) * ss;
        if (filter == PIO_FILTER_LANCZOS3)
            lanczos3_taps(w, x0, ss, n);
        else
            for (ptrdiff_t k = 0; k < n; k++)
                w[k] = filter_eval(filter, ((double)(xmin + k) - center + 0.5) * ss);
        double total = 0.0;
        for (ptrdiff_t k = 0; k < n; k++)
            total += w[k];
        double pos = 0.0, neg = 0.0;
        for (ptrdiff_t k = 0; k < n; k++) {
            if (total != 0.0)
                w[k] /= total;
            if (w[k] > 0.0)
                pos += w[k];
            else
                neg -= w[k];
        }
        for (ptrdiff_t k = n; k < ax->ksize; k++)
            w[k] = 0.0;
        ax->start[i] = xmin;
        ax->count[i] = (int)n;
        if (pos + neg > ax->abs_sum)
            ax->abs_sum = pos + neg;
        if (pos > ax->pos_sum)
            ax->pos_sum = pos;
        if (neg > ax->neg_sum)
            ax->neg_sum = neg;
    }
    return PIO_OK;
}

/* ------------------------------------------------------------------------ */
/* Nearest neighbour: a gather of whole pixels, no arithmetic on values. */

/* floor((i + 0.5) * in / out), exactly: floating point would land on the
 * wrong side of integer boundaries for some size pairs. */
static inline ptrdiff_t nearest_index(ptrdiff_t i, ptrdiff_t in_size, ptrdiff_t out_size)
{
    return (ptrdiff_t)(((uint64_t)(2 * i + 1) * (uint64_t)in_size) / (2 * (uint64_t)out_size));
}

PIO_INLINE void nearest_row_c(const uint8_t *restrict src, uint8_t *restrict dst,
                              const ptrdiff_t *restrict xs, ptrdiff_t out_w, const int C)
{
    for (ptrdiff_t x = 0; x < out_w; x++)
        for (int c = 0; c < C; c++)
            dst[x * C + c] = src[xs[x] * C + c];
}

static int resize_nearest(const pio_view_u8 *src, const pio_view_u8 *dst)
{
    const int C = src->channels;
    int status = PIO_OK;
    ptrdiff_t *xs = pio_alloc_array((size_t)dst->width, sizeof(ptrdiff_t), &status);
    if (status != PIO_OK)
        return status;
    for (ptrdiff_t x = 0; x < dst->width; x++)
        xs[x] = nearest_index(x, src->width, dst->width);
    for (ptrdiff_t y = 0; y < dst->height; y++) {
        const uint8_t *in = src->data + nearest_index(y, src->height, dst->height) * src->stride;
        uint8_t *out = dst->data + y * dst->stride;
        switch (C) {
        case 1: nearest_row_c(in, out, xs, dst->width, 1); break;
        case 2: nearest_row_c(in, out, xs, dst->width, 2); break;
        case 3: nearest_row_c(in, out, xs, dst->width, 3); break;
        default: nearest_row_c(in, out, xs, dst->width, 4); break;
        }
    }
    free(xs);
    return PIO_OK;
}

/* ------------------------------------------------------------------------ */

/* 1 if every alpha byte of a 4-channel image is 255: then premultiplying is
 * the identity and the image can take the fixed-point path like RGB. Stops
 * at the first translucent pixel, which in most alpha images is early. */
static int alpha_opaque(const pio_view_u8 *src)
{
    for (ptrdiff_t y = 0; y < src->height; y++) {
        const uint8_t *row = src->data + y * src->stride;
        unsigned all = 255;
        for (ptrdiff_t x = 0; x < src->width; x++)
            all &= row[x * 4 + 3];
        if (all != 255)
            return 0;
    }
    return 1;
}

int pio_resize_u8_ex(const pio_view_u8 *src, const pio_view_u8 *dst, int filter, unsigned flags)
{
    if (!pio_view_ok(src) || !pio_view_ok(dst))
        return PIO_ERR_ARG;
    return pio_resize_u8_box(src, dst, filter, flags, 0.0, 0.0, (double)src->width,
                             (double)src->height);
}

int pio_resize_u8_box(const pio_view_u8 *src, const pio_view_u8 *dst, int filter, unsigned flags,
                      double x0, double y0, double x1, double y1)
{
    if (!pio_view_ok(src) || !pio_view_ok(dst))
        return PIO_ERR_ARG;
    /* The box starts inside the first sample and ends inside the last (NaN
     * fails every test). */
    if (!(x0 >= 0.0 && x0 < 1.0 && x1 > (double)src->width - 1.0 && x1 <= (double)src->width) ||
        !(y0 >= 0.0 && y0 < 1.0 && y1 > (double)src->height - 1.0 && y1 <= (double)src->height))
        return PIO_ERR_ARG;
    const int whole = x0 == 0.0 && y0 == 0.0 && x1 == (double)src->width &&
                      y1 == (double)src->height;
    if ((flags & ~(unsigned)PIO_RESIZE_FLAGS_ALL) ||
        ((flags & PIO_RESIZE_NO_FIXED) && (flags & PIO_RESIZE_FORCE_FIXED)))
        return PIO_ERR_ARG;
    if (src->channels != dst->channels)
        return PIO_ERR_SHAPE;
    if (filter < 0 || filter >= PIO_FILTER_COUNT)
        return PIO_ERR_FILTER;
    if (src->width > PIO_MAX_DIM || src->height > PIO_MAX_DIM || dst->width > PIO_MAX_DIM ||
        dst->height > PIO_MAX_DIM)
        return PIO_ERR_OVERFLOW;
    const int C = src->channels;
    /* Output rows must not overlap each other (input rows may: a broadcast
     * view with stride 0 is a valid, read-only source). */
    if (dst->height > 1 && (dst->stride < 0 ? -dst->stride : dst->stride) < dst->width * C)
        return PIO_ERR_SHAPE;

    if (filter == PIO_FILTER_NEAREST) {
        if (!whole)
            return PIO_ERR_ARG; /* nearest neighbour maps whole samples only */
        return resize_nearest(src, dst);
    }

    pio_axis hx, vy;
    int status = pio_axis_init(&hx, src->width, x0, x1, dst->width, filter);
    if (status != PIO_OK)
        return status;
    status = pio_axis_init(&vy, src->height, y0, y1, dst->height, filter);
    if (status != PIO_OK) {
        pio_axis_free(&hx);
        return status;
    }
    const int level = pio_simd_level(flags);
    /* The fixed-point path needs SIMD to pay: its portable loops measured
     * ~2x slower than the float path's auto-vectorised ones (lanczos3
     * 2725x2225 -> 720x588 RGB: 56 ms against 26), so without SIMD the
     * float path runs unless a test forces the fixed one. */
    const int fixed = (flags & PIO_RESIZE_FORCE_FIXED) ||
                      (!(flags & PIO_RESIZE_NO_FIXED) && level >= PIO_SIMD_AVX2);
    status = PIO_FIXED_DECLINED;
    if (fixed && (C == 1 || C == 3 || (C == 4 && alpha_opaque(src))))
        status = pio_resize_fixed(src, dst, &hx, &vy, level);
    if (status == PIO_FIXED_DECLINED)
        status = pio_resize_float(src, dst, &hx, &vy, level);
    pio_axis_free(&hx);
    pio_axis_free(&vy);
    return status;
}

int pio_resize_simd_level(void)
{
    return pio_simd_level(0);
}

int pio_resize_u8(const pio_view_u8 *src, const pio_view_u8 *dst, int filter)
{
    return pio_resize_u8_ex(src, dst, filter, 0);
}
