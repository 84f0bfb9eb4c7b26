/*
 * pio_resize_float.c - the float32 resize path (see pio_resize_impl.h):
 * every alpha image, and any resize whose fixed-point error bound is loose.
 *
 * Shape of the computation, and why:
 *
 *   for each block of PIO_RB output rows:
 *     make sure every source row the block's vertical windows need is
 *       available: without alpha the source row itself; with alpha a
 *       premultiplied uint16 copy in a ring (load_row);
 *     (1) filter the windows vertically, two output rows per pass, into
 *         PIO_RB float rows of source width (v_pass2);
 *     (2) filter those rows horizontally, all PIO_RB at once (h_pass);
 *     (3) unpremultiply, round and clamp to uint8 (store_row).
 *
 * - Vertical first: the vertical pass then runs along whole contiguous rows
 *   (the longest, simplest vectorised loop) and the horizontal pass, the
 *   awkward one, only sees out_height rows instead of in_height. Filtering
 *   two neighbouring output rows in one pass loads and converts each source
 *   value once for both; their windows mostly overlap.
 * - The horizontal pass uses weights expanded to one float per tap and
 *   channel (h_table), so each output pixel is a run of full-vector
 *   multiply-adds over a contiguous span; the PIO_RB rows share every
 *   weight load. RGB is padded to 4 floats per pixel in between so that
 *   vector lanes line up with channels (inner_channels).
 * - Accumulation is float32, not fixed point: colour is divided by the
 *   filtered alpha at the end, which magnifies any absolute error by
 *   255 / alpha (up to 510), and int16 weights would show there.
 * - Premultiplication is exact: the ring holds c * a and a * 255 as uint16
 *   (half the bytes of float, no rounding); the common factor 255 cancels in
 *   colour * 255 / alpha and is divided out of alpha in store_row.
 * - Memory is O(window * in_width): the ring holds the union of the windows
 *   of one block (rows are loaded once each, windows only move forward),
 *   never a whole intermediate image, so it stays in cache.
 * - SIMD: the four hot functions exist twice (PIO_FLOAT_VARIANTS): baseline
 *   and AVX2+FMA, picked per call. Their loops are left to the
 *   auto-vectoriser, or written with GCC vector extensions where it does
 *   badly (the horizontal accumulators, lane shuffles for RGB padding and
 *   alpha), with plain loops computing the same values for other compilers
 *   (PIO_VECTOR_EXT / PIO_VECTOR_SHUFFLE). FMA rounds once where a multiply
 *   then add rounds twice, so the two variants may differ in the last float
 *   bit, and very rarely an output pixel by one level.
 */
#include "pio_resize_impl.h"

#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(PIO_NO_SIMD)
#define PIO_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define PIO_HAVE_AVX2_VARIANT 1
#else
#define PIO_TARGET_AVX2
#endif
#if defined(__GNUC__) && !defined(__clang__)
/* -std=c11 turns contraction off (ISO C mode); allow it in this file so
 * that a * b + c can become one FMA where the target has it. */
#pragma GCC optimize("fp-contract=fast")
#endif

/* Round half up and clamp to 0..255. Truncating v + 0.5 is floor(v + 0.5)
 * wherever the result is >= 0, and every negative result clamps to 0, so
 * the clamp can follow the conversion; done in integers it vectorises (a
 * float compare-and-select does not, for NaN's sake). Callers pass values
 * far inside int range: sums of bounded weights times 0..255, or such a sum
 * times 255 / alpha with alpha >= 0.5. */
PIO_INLINE uint8_t clamp_u8(float v)
{
    int i = (int)(v + 0.5f);
    i = i < 0 ? 0 : i;
    i = i > 255 ? 255 : i;
    return (uint8_t)i;
}

/* ------------------------------------------------------------------------ */
/* Row kernels. */

/* Lanes of one AVX2 float vector: the horizontal pass accumulates in groups
 * of this many floats, and the expanded weight rows are padded to it. */
#define PIO_LANES 8
/* Output rows filtered horizontally together, so each weight loaded from
 * the (large) expanded table feeds PIO_RB multiply-adds. */
#define PIO_RB 6

/* Floats per pixel in the rows the horizontal pass reads. RGB is padded to
 * 4 so that a pixel is a group of 4 lanes and every lane of an 8-float
 * accumulator always holds the same channel (8 is a multiple of 1, 2 and
 * 4); the pad lane carries zeros. */
static int inner_channels(int C)
{
    return C == 3 ? 4 : C;
}

/* Horizontal weights expanded to one float per tap per inner channel, so the
 * horizontal pass is a plain element-wise multiply-add over a contiguous
 * span of the row (no broadcast, no per-channel loop): for output x,
 *   acc[l] += weights[x][j] * row[offset[x] + j],  j < PIO_LANES * chunks[x],
 * and lane l holds channel l % P (P = inner_channels(C)). Entries past the
 * window are zero. */
typedef struct {
    ptrdiff_t *offset; /* first float of the window in the row */
    int *chunks;       /* window length in chunks of PIO_LANES floats */
    float *weights;    /* out_size rows of `stride` floats */
    size_t stride;
} h_table;

static void h_table_free(h_table *ht)
{
    free(ht->offset);
    free(ht->chunks);
    free(ht->weights);
    ht->offset = NULL;
    ht->chunks = NULL;
    ht->weights = NULL;
}

static int h_table_init(h_table *ht, const pio_axis *ac, ptrdiff_t out_size, int P)
{
    memset(ht, 0, sizeof(*ht));
    int status = PIO_OK;
    const size_t taps = (size_t)ac->ksize * (size_t)P;
    const size_t chunk = PIO_LANES;
    ht->stride = (taps + chunk - 1) / chunk * chunk;
    size_t table;
    if ((status = pio_mul_size((size_t)out_size, ht->stride, &table)) != PIO_OK)
        return status;
    ht->offset = pio_alloc_array((size_t)out_size, sizeof(ptrdiff_t), &status);
    ht->chunks = pio_alloc_array((size_t)out_size, sizeof(int), &status);
    ht->weights = pio_alloc_array(table, sizeof(float), &status);
    if (status != PIO_OK) {
        h_table_free(ht);
        return status;
    }
    for (ptrdiff_t x = 0; x < out_size; x++) {
        const double *w = ac->weights + (size_t)x * (size_t)ac->ksize;
        float *e = ht->weights + (size_t)x * ht->stride;
        const int n = ac->count[x];
        for (int k = 0; k < n; k++)
            for (int c = 0; c < P; c++)
                e[k * P + c] = (float)w[k];
        for (size_t j = (size_t)n * (size_t)P; j < ht->stride; j++)
            e[j] = 0.0f;
        ht->offset[x] = ac->start[x] * P;
        ht->chunks[x] = (int)(((size_t)n * (size_t)P + chunk - 1) / chunk);
    }
    return PIO_OK;
}

/* GCC/Clang vector extensions (not intrinsics: portable C that each clone
 * lowers to its own instruction set) where the auto-vectoriser falls short:
 * keeping the horizontal accumulators in registers, and the lane shuffles
 * of RGB padding and alpha. Other compilers (or -DPIO_NO_VECTOR_EXT) get
 * the plain loops, which compute the same values. */
#if (defined(__GNUC__) || defined(__clang__)) && !defined(PIO_NO_VECTOR_EXT)
#define PIO_VECTOR_EXT 1
typedef float pio_v8f __attribute__((vector_size(8 * sizeof(float))));
typedef float pio_v4f __attribute__((vector_size(4 * sizeof(float))));
typedef int32_t pio_v8i __attribute__((vector_size(8 * sizeof(int32_t))));
typedef uint8_t pio_v32u8 __attribute__((vector_size(32)));
typedef uint16_t pio_v16u16 __attribute__((vector_size(16 * sizeof(uint16_t))));
/* Unaligned load/store of a whole vector (memcpy compiles to one move). */
#define PIO_VLOAD(v, p) memcpy(&(v), (p), sizeof(v))
#define PIO_VSTORE(p, v) memcpy((p), &(v), sizeof(v))
#if defined(__has_builtin)
#if __has_builtin(__builtin_shufflevector) /* GCC 12+, Clang */
#define PIO_VECTOR_SHUFFLE 1
#endif
#endif
#endif

/* uint8 row with alpha (2 or 4 channels, alpha last) -> uint16 row in which
 * colour is c * a and alpha is a * 255: premultiplied, exactly, with every
 * channel scaled by the same 255 (divided out in store_row). Half the bytes
 * of a float row, and no rounding at all. */
PIO_INLINE void load_row_c(const uint8_t *restrict src, uint16_t *restrict dst, ptrdiff_t width,
                           const int C)
{
    ptrdiff_t x = 0;
#ifdef PIO_VECTOR_SHUFFLE
    /* Widen flat (auto-vectorised), then multiply 16 lanes = 16 / C pixels
     * at a time by their alpha (alpha lanes by 255), in blocks of 64
     * pixels that stay in L1. */
    const pio_v16u16 k255 = {255, 255, 255, 255, 255, 255, 255, 255,
                             255, 255, 255, 255, 255, 255, 255, 255};
    for (; x + 64 <= width; x += 64) {
        const uint8_t *restrict s8 = src + x * C;
        uint16_t *restrict d = dst + x * C;
        for (int i = 0; i < 64 * C; i++)
            d[i] = s8[i];
        for (int i = 0; i < 64 * C; i += 16) {
            pio_v16u16 v;
            PIO_VLOAD(v, d + i);
            const pio_v16u16 m =
                C == 4 ? __builtin_shufflevector(v, k255, 3, 3, 3, 16, 7, 7, 7, 16, 11, 11, 11,
                                                 16, 15, 15, 15, 16)
                       : __builtin_shufflevector(v, k255, 1, 16, 3, 16, 5, 16, 7, 16, 9, 16, 11,
                                                 16, 13, 16, 15, 16);
            v *= m;
            PIO_VSTORE(d + i, v);
        }
    }
#endif
    for (; x < width; x++) {
        const unsigned a = src[x * C + C - 1];
        for (int c = 0; c < C - 1; c++)
            dst[x * C + c] = (uint16_t)(src[x * C + c] * a);
        dst[x * C + C - 1] = (uint16_t)(a * 255u);
    }
}

#define PIO_DEF_LOAD_ROW(name, attr)                                                         \
    attr static void name(const uint8_t *restrict src, uint16_t *restrict dst,               \
                          ptrdiff_t width, int C)                                            \
    {                                                                                        \
        if (C == 2)                                                                          \
            load_row_c(src, dst, width, 2);                                                  \
        else                                                                                 \
            load_row_c(src, dst, width, 4);                                                  \
    }

/* RGB float row -> RGB0 float row (see inner_channels). */
PIO_INLINE void expand_rgb(const float *restrict src, float *restrict dst, ptrdiff_t width)
{
    ptrdiff_t x = 0;
#ifdef PIO_VECTOR_SHUFFLE
    const pio_v8f zero = {0}, keep = {1, 1, 1, 0, 1, 1, 1, 0};
    for (; x + 8 <= width; x += 8) { /* 8 pixels: 3 vectors in, 4 out */
        pio_v8f a, b, c;
        PIO_VLOAD(a, src + x * 3);
        PIO_VLOAD(b, src + x * 3 + 8);
        PIO_VLOAD(c, src + x * 3 + 16);
        const pio_v8f o0 = __builtin_shufflevector(a, zero, 0, 1, 2, 8, 3, 4, 5, 8);
        const pio_v8f o1 = __builtin_shufflevector(a, b, 6, 7, 8, 8, 9, 10, 11, 11) * keep;
        const pio_v8f o2 = __builtin_shufflevector(b, c, 4, 5, 6, 6, 7, 8, 9, 9) * keep;
        const pio_v8f o3 = __builtin_shufflevector(c, zero, 2, 3, 4, 8, 5, 6, 7, 8);
        PIO_VSTORE(dst + x * 4, o0);
        PIO_VSTORE(dst + x * 4 + 8, o1);
        PIO_VSTORE(dst + x * 4 + 16, o2);
        PIO_VSTORE(dst + x * 4 + 24, o3);
    }
#endif
    for (; x < width; x++) {
        dst[x * 4 + 0] = src[x * 3 + 0];
        dst[x * 4 + 1] = src[x * 3 + 1];
        dst[x * 4 + 2] = src[x * 3 + 2];
        dst[x * 4 + 3] = 0.0f;
    }
}

/* Two rows, vertically: a[i] = sum_k wa[k] * rows[k][i] and likewise b with
 * wb, over the whole row (contiguous multiply-adds that GCC vectorises).
 * rows[] is the union of two neighbouring output rows' windows, each weight
 * list zero outside its own window: every source value is loaded (and, for
 * uint8, converted) once for both rows, which costs fewer instructions than
 * the few extra zero-weight multiply-adds. The row is walked in strips that
 * stay in L1, and taps are taken four at a time, so each accumulator load
 * and store is shared by four multiply-adds. Without alpha the source rows
 * are read in place (uint8); with alpha, the uint16 premultiplied rows of
 * load_row. Either is converted to float on the fly. */
#define PIO_VSTRIP 960 /* a multiple of 3 and of 8 */

/* Element i of a row of uint8 (es == 1) or uint16 (es == 2) values. */
PIO_INLINE float v_load(const void *row, ptrdiff_t i, const int es)
{
    return es == 1 ? (float)((const uint8_t *)row)[i] : (float)((const uint16_t *)row)[i];
}

/* Taps k .. k + t - 1 of v_pass2 over one strip of m values; `first`
 * starts the sums instead of adding to them. */
PIO_INLINE void v_taps(const void *const *rows, const float *wa, const float *wb, int k,
                       ptrdiff_t i0, ptrdiff_t m, float *restrict a, float *restrict b,
                       const int es, const int t, const int first)
{
    const char *r[4];
    float ca[4], cb[4];
    for (int j = 0; j < t; j++) {
        r[j] = (const char *)rows[k + j] + (size_t)i0 * (size_t)es;
        ca[j] = wa[k + j];
        cb[j] = wb[k + j];
    }
    for (ptrdiff_t i = 0; i < m; i++) {
        float sa = first ? 0.0f : a[i];
        float sb = first ? 0.0f : b[i];
        for (int j = 0; j < t; j++) {
            const float v = v_load(r[j], i, es);
            sa += ca[j] * v;
            sb += cb[j] * v;
        }
        a[i] = sa;
        b[i] = sb;
    }
}

PIO_INLINE void v_pass2_c(const void *const *rows, const float *wa, const float *wb, int n,
                          float *restrict outa, float *restrict outb, ptrdiff_t len,
                          const int es, const int rgb)
{
    /* RGB is summed into strips here, then padded into out (see
     * inner_channels) while the strip is still in L1. */
    float tmp[2][PIO_VSTRIP];
    /* The first group takes n % 4 taps (or 4), every later group 4. */
    const int t0 = n % 4 ? n % 4 : 4;
    for (ptrdiff_t i0 = 0; i0 < len; i0 += PIO_VSTRIP) {
        const ptrdiff_t m = len - i0 < PIO_VSTRIP ? len - i0 : PIO_VSTRIP;
        float *restrict a = rgb ? tmp[0] : outa + i0;
        float *restrict b = rgb ? tmp[1] : outb + i0;
        if (n <= 0) {
            for (ptrdiff_t i = 0; i < m; i++)
                a[i] = b[i] = 0.0f;
        } else {
            switch (t0) {
            case 1: v_taps(rows, wa, wb, 0, i0, m, a, b, es, 1, 1); break;
            case 2: v_taps(rows, wa, wb, 0, i0, m, a, b, es, 2, 1); break;
            case 3: v_taps(rows, wa, wb, 0, i0, m, a, b, es, 3, 1); break;
            default: v_taps(rows, wa, wb, 0, i0, m, a, b, es, 4, 1); break;
            }
            for (int k = t0; k < n; k += 4)
                v_taps(rows, wa, wb, k, i0, m, a, b, es, 4, 0);
        }
        if (rgb) {
            expand_rgb(a, outa + i0 / 3 * 4, m / 3);
            expand_rgb(b, outb + i0 / 3 * 4, m / 3);
        }
    }
}

#define PIO_DEF_V_PASS2(name, attr)                                                          \
    attr static void name(const void *const *rows, const float *wa, const float *wb, int n,  \
                          float *restrict outa, float *restrict outb, ptrdiff_t len, int C)  \
    {                                                                                        \
        switch (C) {                                                                         \
        case 1: v_pass2_c(rows, wa, wb, n, outa, outb, len, 1, 0); break;                    \
        case 3: v_pass2_c(rows, wa, wb, n, outa, outb, len, 1, 1); break;                    \
        default: v_pass2_c(rows, wa, wb, n, outa, outb, len, 2, 0); break;                   \
        }                                                                                    \
    }

/* PIO_RB rows (`vstride` floats apart), horizontally, into PIO_RB rows of
 * out_w * P floats (`ostride` apart). The lanes of each accumulator are
 * folded into the P channels once per output pixel. */
PIO_INLINE void h_pass_c(const float *restrict in, ptrdiff_t vstride, float *restrict out,
                         ptrdiff_t ostride, ptrdiff_t out_w, const h_table *ht, const int P)
{
    for (ptrdiff_t x = 0; x < out_w; x++) {
        const float *restrict w = ht->weights + (size_t)x * ht->stride;
        const float *restrict p = in + ht->offset[x];
        const int nch = ht->chunks[x];
#ifdef PIO_VECTOR_EXT
        pio_v8f acc[PIO_RB];
        const float *pr[PIO_RB];
        for (int r = 0; r < PIO_RB; r++) {
            acc[r] = (pio_v8f){0};
            pr[r] = p + r * vstride;
        }
        for (ptrdiff_t o = 0; o < (ptrdiff_t)nch * PIO_LANES; o += PIO_LANES) {
            pio_v8f wj, pj;
            PIO_VLOAD(wj, w + o);
            for (int r = 0; r < PIO_RB; r++) {
                PIO_VLOAD(pj, pr[r] + o);
                acc[r] += wj * pj;
            }
        }
        for (int r = 0; r < PIO_RB; r++) {
            if (P == 4) {
                pio_v4f lo, hi;
                memcpy(&lo, &acc[r], sizeof(lo));
                memcpy(&hi, (const char *)&acc[r] + sizeof(lo), sizeof(hi));
                lo += hi;
                PIO_VSTORE(out + r * ostride + x * 4, lo);
            } else {
                for (int c = 0; c < P; c++) {
                    float s = 0.0f;
                    for (int l = c; l < PIO_LANES; l += P)
                        s += acc[r][l];
                    out[r * ostride + x * P + c] = s;
                }
            }
        }
#else
        float acc[PIO_RB][PIO_LANES];
        for (int r = 0; r < PIO_RB; r++)
            for (int l = 0; l < PIO_LANES; l++)
                acc[r][l] = 0.0f;
        for (int j = 0; j < nch; j++) {
            const float *restrict wj = w + j * PIO_LANES;
            const float *restrict pj = p + j * PIO_LANES;
            for (int r = 0; r < PIO_RB; r++)
                for (int l = 0; l < PIO_LANES; l++)
                    acc[r][l] += wj[l] * pj[r * vstride + l];
        }
        for (int r = 0; r < PIO_RB; r++) {
            for (int c = 0; c < P; c++) {
                float s = 0.0f;
                for (int l = c; l < PIO_LANES; l += P)
                    s += acc[r][l];
                out[r * ostride + x * P + c] = s;
            }
        }
#endif
    }
}

#define PIO_DEF_H_PASS(name, attr)                                                           \
    attr static void name(const float *restrict in, ptrdiff_t vstride, float *restrict out,  \
                          ptrdiff_t ostride, ptrdiff_t out_w, const h_table *ht, int P)      \
    {                                                                                        \
        switch (P) {                                                                         \
        case 1: h_pass_c(in, vstride, out, ostride, out_w, ht, 1); break;                    \
        case 2: h_pass_c(in, vstride, out, ostride, out_w, ht, 2); break;                    \
        default: h_pass_c(in, vstride, out, ostride, out_w, ht, 4); break;                   \
        }                                                                                    \
    }

/* float row -> uint8 row; with alpha,
 * colour is divided by the filtered alpha (kept in float for accuracy). A
 * pixel whose alpha rounds to 0 gets colour 0, as pio_unpremultiply_u8 does. */
PIO_INLINE void store_row_c(float *restrict acc, uint8_t *restrict dst,
                            uint8_t *restrict tmp, ptrdiff_t width, const int C)
{
    if (C == 1) {
        for (ptrdiff_t i = 0; i < width; i++)
            dst[i] = clamp_u8(acc[i]);
        return;
    }
    if (C == 3) {
        /* RGB0 in: round the row flat (which vectorises) into tmp, then
         * move 4 bytes per pixel, each store's pad byte overwritten by the
         * next pixel; the last pixel moves 3. */
        const ptrdiff_t len = width * 4;
        for (ptrdiff_t i = 0; i < len; i++)
            tmp[i] = clamp_u8(acc[i]);
        ptrdiff_t x = 0;
#ifdef PIO_VECTOR_SHUFFLE
        for (; x + 8 < width; x += 8) { /* 8 pixels, 32 bytes -> 24 */
            pio_v32u8 t;
            PIO_VLOAD(t, tmp + x * 4);
            const pio_v32u8 o = __builtin_shufflevector(t, t, 0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13,
                                                        14, 16, 17, 18, 20, 21, 22, 24, 25, 26,
                                                        28, 29, 30, 0, 0, 0, 0, 0, 0, 0, 0);
            memcpy(dst + x * 3, &o, 24);
        }
#endif
        for (; x + 1 < width; x++)
            memcpy(dst + x * 3, tmp + x * 4, 4);
        memcpy(dst + (width - 1) * 3, tmp + (width - 1) * 4, 3);
        return;
    }
    ptrdiff_t x = 0;
#ifdef PIO_VECTOR_SHUFFLE
    /* Colour and alpha both arrive scaled by 255 (see load_row), so
     * colour * 255 / alpha needs no correction and alpha is divided by 255.
     * Divide in place, 8 / C pixels at a time, then round the row flat
     * (which vectorises). Same values as the loop below: the rounded alpha
     * ua is >= 1 exactly when av + 0.5f >= 1.0f (av, used twice, is never
     * fused into that add), and a pixel with ua == 0 has its colour
     * multiplied by 0. */
    const float inv255 = 1.0f / 255.0f;
    const ptrdiff_t vec_w = width / (8 / C) * (8 / C);
    for (; x < vec_w; x += 8 / C) {
        pio_v8f v;
        PIO_VLOAD(v, acc + x * C);
        const pio_v8f av = v * inv255;
        const pio_v8i visible = (av + 0.5f) >= 1.0f;
        const pio_v8f inv = (pio_v8f)((pio_v8i)(255.0f / v) & visible);
        pio_v8f o;
        if (C == 4) {
            o = v * __builtin_shufflevector(inv, inv, 3, 3, 3, 3, 7, 7, 7, 7);
            o = __builtin_shufflevector(o, av, 0, 1, 2, 11, 4, 5, 6, 15);
        } else {
            o = v * __builtin_shufflevector(inv, inv, 1, 1, 3, 3, 5, 5, 7, 7);
            o = __builtin_shufflevector(o, av, 0, 9, 2, 11, 4, 13, 6, 15);
        }
        PIO_VSTORE(acc + x * C, o);
    }
    for (ptrdiff_t i = 0; i < vec_w * C; i++)
        dst[i] = clamp_u8(acc[i]);
#endif
    for (; x < width; x++) {
        const float a = acc[x * C + C - 1];
        const uint8_t ua = clamp_u8(a * (1.0f / 255.0f));
        /* ua >= 1 implies a >= 127.5, so the division is safe. */
        const float inv = ua ? 255.0f / a : 0.0f;
        for (int c = 0; c < C - 1; c++)
            dst[x * C + c] = ua ? clamp_u8(acc[x * C + c] * inv) : 0;
        dst[x * C + C - 1] = ua;
    }
}

#define PIO_DEF_STORE_ROW(name, attr)                                                        \
    attr static void name(float *restrict acc, uint8_t *restrict dst, uint8_t *restrict tmp, \
                          ptrdiff_t width, int C)                                            \
    {                                                                                        \
        switch (C) {                                                                         \
        case 1: store_row_c(acc, dst, tmp, width, 1); break;                                 \
        case 2: store_row_c(acc, dst, tmp, width, 2); break;                                 \
        case 3: store_row_c(acc, dst, tmp, width, 3); break;                                 \
        default: store_row_c(acc, dst, tmp, width, 4); break;                                \
        }                                                                                    \
    }

/* ------------------------------------------------------------------------ */
/* The two variants of the hot functions, and the table that picks one. */

typedef struct {
    void (*load_row)(const uint8_t *restrict, uint16_t *restrict, ptrdiff_t, int);
    void (*v_pass2)(const void *const *, const float *, const float *, int, float *restrict,
                    float *restrict, ptrdiff_t, int);
    void (*h_pass)(const float *restrict, ptrdiff_t, float *restrict, ptrdiff_t, ptrdiff_t,
                   const h_table *, int);
    void (*store_row)(float *restrict, uint8_t *restrict, uint8_t *restrict, ptrdiff_t, int);
} float_kernels;

#define PIO_FLOAT_VARIANTS(suffix, attr)                                                     \
    PIO_DEF_LOAD_ROW(load_row_##suffix, attr)                                                \
    PIO_DEF_V_PASS2(v_pass2_##suffix, attr)                                                  \
    PIO_DEF_H_PASS(h_pass_##suffix, attr)                                                    \
    PIO_DEF_STORE_ROW(store_row_##suffix, attr)                                              \
    static const float_kernels float_kernels_##suffix = {load_row_##suffix, v_pass2_##suffix, \
                                                         h_pass_##suffix, store_row_##suffix};

PIO_FLOAT_VARIANTS(base, )
#ifdef PIO_HAVE_AVX2_VARIANT
PIO_FLOAT_VARIANTS(avx2, PIO_TARGET_AVX2)
#endif

/* ------------------------------------------------------------------------ */

int pio_resize_float(const pio_view_u8 *src, const pio_view_u8 *dst, const pio_axis *hx,
                     const pio_axis *vy, int level)
{
    const float_kernels *kern = &float_kernels_base;
#ifdef PIO_HAVE_AVX2_VARIANT
    if (level >= PIO_SIMD_AVX2)
        kern = &float_kernels_avx2;
#else
    (void)level;
#endif
    const int C = src->channels;
    /* Without alpha the vertical pass reads the source rows in place;
     * with alpha it reads a ring of premultiplied uint16 rows. */
    const int direct = C == 1 || C == 3;
    const int P = inner_channels(C);
    h_table ht;
    int status = h_table_init(&ht, hx, dst->width, P);
    if (status != PIO_OK)
        return status;

    /* Ring rows: enough for the union of the vertical windows of any block
     * of PIO_RB consecutive output rows. Window starts and ends only move
     * forward, so the largest span over all blocks is enough. */
    ptrdiff_t K = 1;
    for (ptrdiff_t y0 = 0; y0 < dst->height; y0 += PIO_RB) {
        const ptrdiff_t y1 = y0 + PIO_RB < dst->height ? y0 + PIO_RB : dst->height;
        ptrdiff_t e = vy->start[y0];
        for (ptrdiff_t y = y0; y < y1; y++)
            if (vy->start[y] + vy->count[y] > e)
                e = vy->start[y] + vy->count[y];
        if (e - vy->start[y0] > K)
            K = e - vy->start[y0];
    }

    const size_t row_len = (size_t)src->width * (size_t)C;
    /* The horizontal pass reads whole chunks, up to PIO_LANES - 1 floats
     * past the end of a row: that overrun is kept zero. */
    const size_t vstride = (size_t)src->width * (size_t)P + PIO_LANES;
    const size_t ostride = (size_t)dst->width * (size_t)P;
    size_t ring_len = 0, vbuf_len = 0, hbuf_len = 0;
    if ((status = pio_mul_size(direct ? 0 : (size_t)K, row_len, &ring_len)) == PIO_OK &&
        (status = pio_mul_size(PIO_RB, vstride, &vbuf_len)) == PIO_OK)
        status = pio_mul_size(PIO_RB, ostride, &hbuf_len);
    if (status != PIO_OK) {
        h_table_free(&ht);
        return status;
    }
    uint16_t *ring = pio_alloc_array(ring_len, sizeof(uint16_t), &status);
    float *vbuf = pio_alloc_array(vbuf_len, sizeof(float), &status);
    float *hbuf = pio_alloc_array(hbuf_len, sizeof(float), &status);
    uint8_t *btmp = pio_alloc_array(ostride, 1, &status); /* store_row's RGB0 bytes */
    /* Two neighbouring windows together span at most K rows. */
    const void **rows = pio_alloc_array((size_t)K, sizeof(void *), &status);
    float *wa = pio_alloc_array((size_t)K, sizeof(float), &status);
    float *wb = pio_alloc_array((size_t)K, sizeof(float), &status);
    if (status == PIO_OK) {
        /* Rows of a short last block are never stored, but the horizontal
         * pass reads them: keep them (and every row's overrun) finite. */
        memset(vbuf, 0, vbuf_len * sizeof(float));
        /* Source rows below `next` have been loaded (or skipped because no
         * window needs them); row r lives in ring slot r % K, and a slot is
         * reused only once its row has left every later window. */
        ptrdiff_t next = 0;
        for (ptrdiff_t y0 = 0; y0 < dst->height; y0 += PIO_RB) {
            const int nb = (int)(dst->height - y0 < PIO_RB ? dst->height - y0 : PIO_RB);
            ptrdiff_t e = vy->start[y0];
            for (int r = 0; r < nb; r++)
                if (vy->start[y0 + r] + vy->count[y0 + r] > e)
                    e = vy->start[y0 + r] + vy->count[y0 + r];
            if (next < vy->start[y0])
                next = vy->start[y0];
            for (; !direct && next < e; next++)
                kern->load_row(src->data + next * src->stride,
                               ring + (size_t)(next % K) * row_len, src->width, C);
            for (int r = 0; r < PIO_RB; r += 2) {
                /* Rows past the image (a short last block) repeat the last
                 * one; they are filtered but never stored. */
                const ptrdiff_t ya = y0 + r < dst->height ? y0 + r : dst->height - 1;
                const ptrdiff_t yb = ya + 1 < dst->height ? ya + 1 : ya;
                const ptrdiff_t s = vy->start[ya];
                const ptrdiff_t db = vy->start[yb] - s; /* >= 0: windows move forward */
                const int na = vy->count[ya], nb2 = vy->count[yb];
                const int n = (int)(na > db + nb2 ? na : db + nb2);
                const double *w_a = vy->weights + (size_t)ya * (size_t)vy->ksize;
                const double *w_b = vy->weights + (size_t)yb * (size_t)vy->ksize;
                for (int k = 0; k < n; k++) {
                    wa[k] = k < na ? (float)w_a[k] : 0.0f;
                    wb[k] = k >= db && k - db < nb2 ? (float)w_b[k - db] : 0.0f;
                    rows[k] = direct ? (const void *)(src->data + (s + k) * src->stride)
                                     : (const void *)(ring + (size_t)((s + k) % K) * row_len);
                }
                float *outa = vbuf + (size_t)r * vstride, *outb = outa + vstride;
                kern->v_pass2(rows, wa, wb, n, outa, outb, (ptrdiff_t)row_len, C);
            }
            kern->h_pass(vbuf, (ptrdiff_t)vstride, hbuf, (ptrdiff_t)ostride, dst->width, &ht, P);
            for (int r = 0; r < nb; r++)
                kern->store_row(hbuf + (size_t)r * ostride, dst->data + (y0 + r) * dst->stride,
                                btmp, dst->width, C);
        }
    }

    free(btmp);
    free(wb);
    free(wa);
    free((void *)rows);
    free(hbuf);
    free(vbuf);
    free(ring);
    h_table_free(&ht);
    return status;
}
