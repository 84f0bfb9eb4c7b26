/*
 * pio_resize.c - separable resampling of uint8 images (see pio_resize.h).
 *
 * Shape of the computation, and why:
 *
 *   for each output row:
 *     make sure every source row its vertical window needs has been
 *       (1) loaded into a float row, premultiplying alpha (load_row), and
 *       (2) filtered horizontally into a ring of float rows (h_pass);
 *     (3) filter the window vertically into a float row (v_pass);
 *     (4) unpremultiply, round and clamp to uint8 (store_row).
 *
 * - Accumulation is float32, not int32 fixed point. Both are exact enough
 *   (float32 keeps ~24 bits; the error after two passes is far below the
 *   0.5 that decides the final rounding), but float lets the intermediate
 *   keep its full range: Pillow rounds and clips to uint8 between the passes,
 *   which loses Lanczos/bicubic overshoot and adds a second rounding. Float
 *   also makes premultiplied alpha free of the 8-bit quantisation that makes
 *   low-alpha colours coarse, and needs no per-filter fixed-point scaling.
 * - The horizontal result lives in a ring of `ksize` rows, not a full
 *   intermediate image: each source row is filtered exactly once (the
 *   vertical windows only move forward), memory stays O(ksize * out_width)
 *   instead of O(in_height * out_width) (a 10000x10000 RGBA source would
 *   otherwise need hundreds of MB of floats), and the rows stay in cache.
 * - Weight tables are built once per axis, in double, before any pixel loop;
 *   all scratch memory is allocated up front and freed on every exit path.
 * - The per-row functions are PIO_HOT (AVX2 + baseline clones). The channel
 *   count is passed as a constant to always-inlined bodies so GCC can unroll
 *   the per-pixel channel loop; v_pass and the L/RGB paths of load_row and
 *   store_row are flat loops over contiguous floats, which GCC vectorises.
 */
#include "pio_resize.h"

#include <math.h>
#include <string.h>

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

/* Sizes are bounded so that all index arithmetic below (including the exact
 * 64-bit nearest-neighbour mapping) cannot overflow. */
#define PIO_MAX_DIM ((ptrdiff_t)INT32_MAX)

/* ------------------------------------------------------------------------ */
/* Filters: the same kernels, supports and boundary conventions as Pillow. */

static double sinc(double x)
{
    if (x == 0.0)
        return 1.0;
    x *= M_PI;
    return sin(x) / x;
}

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
    case PIO_FILTER_LANCZOS3:
        return (x >= -3.0 && x < 3.0) ? sinc(x) * sinc(x / 3.0) : 0.0;
    default:
        return 0.0;
    }
}

/* ------------------------------------------------------------------------ */
/* Small helpers. */

static int mul_size(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > SIZE_MAX / a)
        return PIO_ERR_OVERFLOW;
    *out = a * b;
    return PIO_OK;
}

/* malloc(count * size) with an overflow check. Returns NULL and sets
 * *status (PIO_ERR_OVERFLOW or PIO_ERR_NOMEM) on failure; leaves *status
 * alone on success, so calls can be chained and checked once. */
static void *alloc_array(size_t count, size_t size, int *status)
{
    size_t bytes;
    if (mul_size(count, size, &bytes) != PIO_OK) {
        *status = PIO_ERR_OVERFLOW;
        return NULL;
    }
    void *p = malloc(bytes ? bytes : 1);
    if (p == NULL)
        *status = PIO_ERR_NOMEM;
    return p;
}

/* Round half up and clamp to 0..255. The clamp comes first, so the cast
 * sees a value in [0.5, 255.5] and truncation is floor. */
PIO_INLINE uint8_t clamp_u8(float v)
{
    v = v < 0.0f ? 0.0f : v;
    v = v > 255.0f ? 255.0f : v;
    return (uint8_t)(int)(v + 0.5f);
}

/* ------------------------------------------------------------------------ */
/* Per-axis weight tables. */

typedef struct {
    ptrdiff_t *start; /* first source index feeding each output sample */
    int *count;       /* number of taps for each output sample, <= ksize */
    float *weights;   /* out_size rows of ksize; row i uses count[i] entries */
    int ksize;
} axis_coeffs;

static void axis_coeffs_free(axis_coeffs *ac)
{
    free(ac->start);
    free(ac->count);
    free(ac->weights);
    ac->start = NULL;
    ac->count = NULL;
    ac->weights = NULL;
}

/*
 * Pillow's precompute_coeffs: for output i, center = (i + 0.5) * scale; the
 * support is stretched by scale when downscaling; taps are the source
 * indices [xmin, xmax) clipped to the image; each tap's weight is
 * filter((x - center + 0.5) / filterscale), normalised to sum 1.
 */
static int axis_coeffs_init(axis_coeffs *ac, ptrdiff_t in_size, ptrdiff_t out_size, int filter)
{
    memset(ac, 0, sizeof(*ac));
    const double scale = (double)in_size / (double)out_size;
    const double filterscale = scale < 1.0 ? 1.0 : scale;
    const double support = filter_support(filter) * filterscale;
    /* No window can hold more than in_size taps, so cap ksize there; this
     * also keeps huge downscale factors from overflowing int. */
    double kd = ceil(support) * 2.0 + 1.0;
    ac->ksize = kd > (double)in_size ? (int)in_size : (int)kd;

    int status = PIO_OK;
    size_t table;
    if ((status = mul_size((size_t)out_size, (size_t)ac->ksize, &table)) != PIO_OK)
        return status;
    ac->start = alloc_array((size_t)out_size, sizeof(ptrdiff_t), &status);
    ac->count = alloc_array((size_t)out_size, sizeof(int), &status);
    ac->weights = alloc_array(table, sizeof(float), &status);
    double *tmp = alloc_array((size_t)ac->ksize, sizeof(double), &status);
    if (status != PIO_OK) {
        free(tmp);
        axis_coeffs_free(ac);
        return status;
    }

    const double ss = 1.0 / filterscale;
    for (ptrdiff_t i = 0; i < out_size; i++) {
        const double center = ((double)i + 0.5) * scale;
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
        if (n > ac->ksize) /* cannot happen; keeps the table write in bounds */
            n = ac->ksize;

        double total = 0.0;
        for (ptrdiff_t k = 0; k < n; k++) {
            tmp[k] = filter_eval(filter, ((double)(xmin + k) - center + 0.5) * ss);
            total += tmp[k];
        }
        float *w = ac->weights + (size_t)i * (size_t)ac->ksize;
        for (ptrdiff_t k = 0; k < n; k++)
            w[k] = (float)(total != 0.0 ? tmp[k] / total : tmp[k]);
        for (ptrdiff_t k = n; k < ac->ksize; k++)
            w[k] = 0.0f;
        ac->start[i] = xmin;
        ac->count[i] = (int)n;
    }
    free(tmp);
    return PIO_OK;
}

/* ------------------------------------------------------------------------ */
/* Row kernels. */

/* uint8 row -> float row; with alpha (2 or 4 channels) colour is multiplied
 * by alpha / 255 so that filtering weights colour by coverage. */
PIO_INLINE void load_row_c(const uint8_t *restrict src, float *restrict dst, ptrdiff_t width,
                           const int C)
{
    if (C == 1 || C == 3) {
        const ptrdiff_t len = width * C;
        for (ptrdiff_t i = 0; i < len; i++)
            dst[i] = (float)src[i];
        return;
    }
    const float inv255 = 1.0f / 255.0f;
    for (ptrdiff_t x = 0; x < width; x++) {
        const float a = (float)src[x * C + C - 1];
        const float s = a * inv255;
        for (int c = 0; c < C - 1; c++)
            dst[x * C + c] = (float)src[x * C + c] * s;
        dst[x * C + C - 1] = a;
    }
}

PIO_HOT static void load_row(const uint8_t *restrict src, float *restrict dst, ptrdiff_t width,
                             int C)
{
    switch (C) {
    case 1: load_row_c(src, dst, width, 1); break;
    case 2: load_row_c(src, dst, width, 2); break;
    case 3: load_row_c(src, dst, width, 3); break;
    default: load_row_c(src, dst, width, 4); break;
    }
}

/* One row, horizontally: out[x] = sum_k w[x][k] * in[start[x] + k]. */
PIO_INLINE void h_pass_c(const float *restrict in, float *restrict out, ptrdiff_t out_w,
                         const axis_coeffs *ac, const int C)
{
    const int ks = ac->ksize;
    for (ptrdiff_t x = 0; x < out_w; x++) {
        const float *restrict w = ac->weights + (size_t)x * (size_t)ks;
        const float *restrict p = in + ac->start[x] * C;
        const int n = ac->count[x];
        float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (int k = 0; k < n; k++)
            for (int c = 0; c < C; c++)
                acc[c] += w[k] * p[k * C + c];
        for (int c = 0; c < C; c++)
            out[x * C + c] = acc[c];
    }
}

PIO_HOT static void h_pass(const float *restrict in, float *restrict out, ptrdiff_t out_w,
                           const axis_coeffs *ac, int C)
{
    switch (C) {
    case 1: h_pass_c(in, out, out_w, ac, 1); break;
    case 2: h_pass_c(in, out, out_w, ac, 2); break;
    case 3: h_pass_c(in, out, out_w, ac, 3); break;
    default: h_pass_c(in, out, out_w, ac, 4); break;
    }
}

/* One row, vertically: acc[i] = sum_k w[k] * rows[k][i], over the whole
 * row at once (len = out_w * C), which is a contiguous multiply-add that
 * GCC vectorises. */
PIO_HOT static void v_pass(const float *const *rows, const float *w, int n, float *restrict acc,
                           ptrdiff_t len)
{
    if (n <= 0) {
        memset(acc, 0, (size_t)len * sizeof(float));
        return;
    }
    const float *restrict r0 = rows[0];
    const float w0 = w[0];
    for (ptrdiff_t i = 0; i < len; i++)
        acc[i] = w0 * r0[i];
    for (int k = 1; k < n; k++) {
        const float *restrict r = rows[k];
        const float wk = w[k];
        for (ptrdiff_t i = 0; i < len; i++)
            acc[i] += wk * r[i];
    }
}

/* float row -> uint8 row; with alpha, colour is divided by the filtered
 * alpha (kept in float for accuracy). A pixel whose alpha rounds to 0 gets
 * colour 0, as pio_unpremultiply_u8 does. */
PIO_INLINE void store_row_c(const float *restrict acc, uint8_t *restrict dst, ptrdiff_t width,
                            const int C)
{
    if (C == 1 || C == 3) {
        const ptrdiff_t len = width * C;
        for (ptrdiff_t i = 0; i < len; i++)
            dst[i] = clamp_u8(acc[i]);
        return;
    }
    for (ptrdiff_t x = 0; x < width; x++) {
        const float a = acc[x * C + C - 1];
        const uint8_t ua = clamp_u8(a);
        /* ua >= 1 implies a >= 0.5, so the division is safe. */
        const float inv = ua ? 255.0f / a : 0.0f;
        for (int c = 0; c < C - 1; c++)
            dst[x * C + c] = ua ? clamp_u8(acc[x * C + c] * inv) : 0;
        dst[x * C + C - 1] = ua;
    }
}

PIO_HOT static void store_row(const float *restrict acc, uint8_t *restrict dst, ptrdiff_t width,
                              int C)
{
    switch (C) {
    case 1: store_row_c(acc, dst, width, 1); break;
    case 2: store_row_c(acc, dst, width, 2); break;
    case 3: store_row_c(acc, dst, width, 3); break;
    default: store_row_c(acc, dst, width, 4); break;
    }
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
    ptrdiff_t *xs = alloc_array((size_t)dst->width, sizeof(ptrdiff_t), &status);
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

int pio_resize_u8(const pio_view_u8 *src, const pio_view_u8 *dst, int filter)
{
    if (!pio_view_ok(src) || !pio_view_ok(dst))
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

    if (filter == PIO_FILTER_NEAREST)
        return resize_nearest(src, dst);

    const ptrdiff_t in_len = src->width * C;
    const ptrdiff_t out_len = dst->width * C;
    axis_coeffs hx, vy;
    int status = axis_coeffs_init(&hx, src->width, dst->width, filter);
    if (status != PIO_OK)
        return status;
    status = axis_coeffs_init(&vy, src->height, dst->height, filter);
    if (status != PIO_OK) {
        axis_coeffs_free(&hx);
        return status;
    }
    const int K = vy.ksize; /* ring rows: every vertical window fits */
    size_t ring_len = 0;
    if ((status = mul_size((size_t)K, (size_t)out_len, &ring_len)) != PIO_OK) {
        axis_coeffs_free(&vy);
        axis_coeffs_free(&hx);
        return status;
    }
    float *rowbuf = alloc_array((size_t)in_len, sizeof(float), &status);
    float *ring = alloc_array(ring_len, sizeof(float), &status);
    float *acc = alloc_array((size_t)out_len, sizeof(float), &status);
    const float **rows = alloc_array((size_t)K, sizeof(float *), &status);
    if (status == PIO_OK) {
        /* Source rows below `next` have been filtered horizontally (or skipped
         * because no window needs them); row r lives in ring slot r % K. Windows
         * only move forward, and hold at most K rows, so a slot is reused only
         * once its row has left every later window. */
        ptrdiff_t next = 0;
        for (ptrdiff_t y = 0; y < dst->height; y++) {
            const ptrdiff_t s = vy.start[y];
            const int n = vy.count[y];
            if (next < s)
                next = s;
            for (; next < s + n; next++) {
                load_row(src->data + next * src->stride, rowbuf, src->width, C);
                h_pass(rowbuf, ring + (size_t)(next % K) * (size_t)out_len, dst->width, &hx, C);
            }
            for (int k = 0; k < n; k++)
                rows[k] = ring + (size_t)((s + k) % K) * (size_t)out_len;
            v_pass(rows, vy.weights + (size_t)y * (size_t)K, n, acc, out_len);
            store_row(acc, dst->data + y * dst->stride, dst->width, C);
        }
    }

    free((void *)rows);
    free(acc);
    free(ring);
    free(rowbuf);
    axis_coeffs_free(&vy);
    axis_coeffs_free(&hx);
    return status;
}
