/*
 * pio_resize_fixed.c - the fixed-point resize path (see pio_resize_impl.h):
 * images without alpha, and RGBA whose alpha is 255 everywhere, on CPUs with
 * AVX2 (without, the float path's compiler-vectorised loops are faster than
 * the portable loops here, which are the exact twin the tests hold the SIMD
 * loops to).
 *
 * Shape of the computation, and why:
 *
 *   for each pair of output rows (a, b):
 *     load every source row pair (2m, 2m + 1) their windows reach that is
 *       not in the ring yet, interleaved byte by byte and reordered into
 *       the "pair layout" (fx_ring_load);
 *     (1) vertically, from the ring: int16 weights, exact int32 sums, both
 *         output rows at once, rounded to int16 rows with FX_F fractional
 *         bits, already in the pair layout (fx_vpass2);
 *     (2) horizontally, int16 weights again, exact int32 sums, rounded and
 *         saturated to uint8 (fx_hpass2).
 *
 * - Integers because pmaddwd multiplies 16 int16 pairs and adds them
 *   pairwise into 8 exact int32 sums in one instruction: twice the
 *   multiply-adds of an 8-float FMA, with no uint8 -> float conversion and
 *   half the bytes in the intermediate. Sums are exact, so the AVX2 loops
 *   and the portable loops give bit-identical results in any order.
 * - Vertical first, on the 8-bit rows: the big pass (output height x source
 *   width x taps) is then a flat multiply-add along whole rows, and the
 *   horizontal pass sees only output rows. The two output rows of a pass
 *   share every load and shuffle; their windows mostly overlap.
 * - The ring holds source rows two by two, byte-interleaved: one 32-byte
 *   load is 16 (row 2m, row 2m + 1) pairs, which widen to int16 with one
 *   unpack and go straight into pmaddwd against (w, w'). Each source row is
 *   read from memory once, front to back; the vertical pass then streams
 *   one ring row per tap pair instead of two source rows. A window that
 *   starts at an odd row starts one row early with weight 0.
 * - The pair layout puts the two pixels of a pair next to each other per
 *   channel: pixels 2j and 2j+1 are c0 c0' c1 c1' c2 c2' (c3 c3'). The
 *   ring is stored in that order, so the vertical pass writes it for free,
 *   and in the horizontal pass 4C int16 (two pixel pairs: four taps of
 *   every channel) meet one 16-lane pmaddwd against w0 w1 ... w2 w3 ...
 *   (for RGB the last 4 lanes weigh 0). One channel (L) needs no reorder:
 *   16 neighbouring pixels are 16 taps.
 * - Accuracy, proven per call: weights are quantised to q / 2^shift with
 *   the largest shift that keeps every q in int16 and every sum in int32,
 *   and nudged so each output's weights sum to exactly 2^shift (gain exactly
 *   1: a flat field is exact at every stage, not only after rounding, and
 *   no rounding residue builds up over wide windows). From the quantisation
 *   errors and the intermediate's rounding, the plan bounds the worst-case
 *   deviation from the exact result; above PIO_FIXED_MAX_ERROR (windows of
 *   more than a few hundred taps) the path declines and the float path
 *   runs. FX_F = 6 keeps Lanczos overshoot (up to ~1.3 x 255) inside int16.
 * - SIMD: AVX2 (and AVX-512 VNNI) intrinsics in functions compiled with a
 *   target attribute, chosen at run time; the portable loops compute the
 *   same integers plainly.
 */
#include "pio_resize_impl.h"

#include <math.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(PIO_NO_SIMD)
#include <immintrin.h>
#define FX_AVX2 1
#define FX_TARGET __attribute__((target("avx2,fma")))
#define FX_AVX2_INLINE static inline __attribute__((always_inline, target("avx2,fma")))
/* AVX-512 VNNI on 256-bit registers (vpdpwssd), in GCC 8+ and Clang 6+. */
#if (defined(__clang__) && __clang_major__ >= 6) || (!defined(__clang__) && __GNUC__ >= 8)
#define FX_VNNI 1
#endif
#if defined(__GNUC__) && !defined(__clang__)
/* GCC 12's partial redundancy elimination turns the eight loop-carried
 * sums of the vertical pass into register copies and a spill that makes
 * every step wait on a store (measured: ~25% slower); without it they stay
 * in registers. */
#define FX_HOT_LOOP __attribute__((optimize("no-tree-pre")))
#else
#define FX_HOT_LOOP
#endif
#endif

/* Fractional bits of the int16 intermediate. 255 * 2^6 * 2.0 fits int16,
 * so any filter whose positive (and negative) weights sum to at most 2 is
 * representable; the plan checks the actual range. */
#define FX_F 6
/* Values per strip of the portable vertical pass (its int32 sums stay in
 * L1), and the multiple the pair-layout rows are padded to (the AVX2 pass
 * takes 32 values per step). */
#define FX_STRIP 512
#define FX_ALIGN 32

/* floor(x / 2^s), for any sign (>> of a negative int is implementation
 * defined in C; this is what every compiler's arithmetic shift gives). */
static inline int32_t asr32(int32_t x, int s)
{
    return x >= 0 ? x >> s : ~(~x >> s);
}

static inline int16_t sat16(int32_t v)
{
    return (int16_t)(v < -32768 ? -32768 : v > 32767 ? 32767 : v);
}

static inline uint8_t sat8(int32_t v)
{
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* Position of pixel x, channel c in a pair-layout row of C channels. */
static inline ptrdiff_t pair_pos(ptrdiff_t x, int c, int C)
{
    return C == 1 ? x : (x >> 1) * 2 * C + 2 * c + (x & 1);
}

/* ------------------------------------------------------------------------ */
/* Quantised weights and the error bound. */

/*
 * Quantise one axis: q[i * ksize + k] = round(w * 2^shift), then add the
 * rounding residue of each output to its largest weight so the q sum to
 * exactly 2^shift (when the w sum to 1, i.e. always but for an all-zero
 * window). shift is the largest for which every |q| <= 32767 and
 * vmax * sum|q| + 2^(shift + FX_F) stays inside int32 for every output. On success
 * *err is the largest sum over an output of |q / 2^shift - w|. Returns 0,
 * or -1 when no shift >= min_shift fits.
 */
static int quantise_axis(const pio_axis *ax, ptrdiff_t out_size, double vmax, int min_shift,
                         int16_t *q, int *shift, double *err)
{
    const int K = ax->ksize;
    double maxw = 0.0;
    for (size_t j = 0; j < (size_t)out_size * (size_t)K; j++)
        if (fabs(ax->weights[j]) > maxw)
            maxw = fabs(ax->weights[j]);
    int s = 30;
    while (s > min_shift && maxw * ldexp(1.0, s) > 32767.0)
        s--;
    for (; s >= min_shift; s--) {
        const double scale = ldexp(1.0, s);
        int ok = 1;
        double worst = 0.0;
        for (ptrdiff_t i = 0; i < out_size && ok; i++) {
            const double *w = ax->weights + (size_t)i * (size_t)K;
            int16_t *qi = q + (size_t)i * (size_t)K;
            const int n = ax->count[i];
            double wsum = 0.0;
            int64_t qsum = 0;
            int big = 0;
            for (int k = 0; k < K; k++) {
                const double v = floor(w[k] * scale + 0.5);
                if (fabs(v) > 32767.0) {
                    ok = 0;
                    break;
                }
                qi[k] = (int16_t)v;
                qsum += qi[k];
                wsum += w[k];
                if (k < n && w[k] > w[big])
                    big = k;
            }
            if (!ok)
                break;
            if (n > 0 && fabs(wsum - 1.0) < 1e-9) {
                const int64_t fixed = (int64_t)qi[big] + ((int64_t)1 << s) - qsum;
                if (fixed > 32767 || fixed < -32767) {
                    ok = 0;
                    break;
                }
                qi[big] = (int16_t)fixed;
            }
            double e = 0.0, abs_q = 0.0;
            for (int k = 0; k < K; k++) {
                e += fabs((double)qi[k] / scale - w[k]);
                abs_q += fabs((double)qi[k]);
            }
            /* Every partial sum of the SIMD loops is bounded by this too;
             * 2^(s + FX_F) exceeds either pass's rounding term. */
            if (vmax * abs_q + ldexp(1.0, s + FX_F) >= 2147483647.0)
                ok = 0;
            if (e > worst)
                worst = e;
        }
        if (ok) {
            *shift = s;
            *err = worst;
            return 0;
        }
    }
    return -1;
}

/* The largest |intermediate| (in int16 units) the vertical weights can
 * produce from 0..255 input, after the rounding shift: exact, from the
 * integers. */
static int32_t vertical_range(const int16_t *q, const pio_axis *vy, ptrdiff_t out_h, int shift)
{
    int64_t worst = 0;
    for (ptrdiff_t i = 0; i < out_h; i++) {
        int64_t pos = 0, neg = 0;
        for (int k = 0; k < vy->ksize; k++) {
            const int16_t v = q[(size_t)i * (size_t)vy->ksize + (size_t)k];
            if (v > 0)
                pos += v;
            else
                neg -= v;
        }
        if (pos > worst)
            worst = pos;
        if (neg > worst)
            worst = neg;
    }
    const int64_t r = (255 * worst + ((int64_t)1 << (shift - FX_F - 1))) >> (shift - FX_F);
    return r > INT32_MAX ? INT32_MAX : (int32_t)r;
}

/* ------------------------------------------------------------------------ */
/* Horizontal weight tables. */

/*
 * Per output x: its window starts at pixel s (C > 1: rounded down to even,
 * for the pair layout), found at pos[x] in a pair-layout row. Every output
 * reads `groups` vector groups from there, each `gstep` int16 further on
 * (C = 1: 16 pixels = 16 taps; C = 3, 4: two pixel pairs = 4 taps, 4C
 * values), against 16 weights per group at w + (x * groups + g) * 16 (taps
 * outside its window, and RGB's last 4 lanes, weigh 0). One group count for
 * all keeps the inner loop free of per-pixel bounds: windows differ by at
 * most one tap but at the image edges. `span` is the int16 length a row
 * must have for every load (16 int16 per group) to stay inside it.
 */
typedef struct {
    ptrdiff_t *pos;
    int16_t *w;
    int groups;
    int gstep;
    size_t span;
} fx_htable;

static void fx_htable_free(fx_htable *ht)
{
    free(ht->pos);
    free(ht->w);
    memset(ht, 0, sizeof(*ht));
}

static int fx_htable_init(fx_htable *ht, const pio_axis *hx, const int16_t *q, ptrdiff_t out_w,
                          int C, size_t row_len)
{
    memset(ht, 0, sizeof(*ht));
    int status = PIO_OK;
    const int taps = C == 1 ? 16 : 4; /* taps per group */
    ht->gstep = C == 1 ? 16 : 4 * C;
    ht->groups = 1;
    ht->span = row_len;
    for (ptrdiff_t x = 0; x < out_w; x++) {
        const ptrdiff_t s = hx->start[x];
        const ptrdiff_t s0 = C == 1 ? s : s & ~(ptrdiff_t)1;
        const ptrdiff_t g = (s + hx->count[x] - s0 + taps - 1) / taps;
        if (g > ht->groups)
            ht->groups = (int)g; /* <= ksize / 4 + 2, an int */
    }
    size_t table;
    if ((status = pio_mul_size((size_t)out_w, (size_t)ht->groups * 16, &table)) != PIO_OK)
        return status;
    ht->pos = pio_alloc_array((size_t)out_w, sizeof(ptrdiff_t), &status);
    ht->w = pio_alloc_array(table, sizeof(int16_t), &status);
    if (status != PIO_OK) {
        fx_htable_free(ht);
        return status;
    }
    for (ptrdiff_t x = 0; x < out_w; x++) {
        const int16_t *qx = q + (size_t)x * (size_t)hx->ksize;
        const ptrdiff_t s = hx->start[x];
        const ptrdiff_t s0 = C == 1 ? s : s & ~(ptrdiff_t)1;
        const int n = hx->count[x];
        ht->pos[x] = pair_pos(s0, 0, C);
        const size_t end = (size_t)ht->pos[x] + (size_t)(ht->groups - 1) * (size_t)ht->gstep + 16;
        if (end > ht->span)
            ht->span = end;
        for (int g = 0; g < ht->groups; g++) {
            int16_t *w = ht->w + ((size_t)x * (size_t)ht->groups + (size_t)g) * 16;
            for (int t = 0; t < 16; t++) {
                /* lane t holds pixel s0 + j of the group, or nothing */
                ptrdiff_t j = -1;
                if (C == 1)
                    j = t;
                else if (t < 4 * C)
                    j = 2 * (t / (2 * C)) + (t & 1);
                const ptrdiff_t k = j < 0 ? -1 : s0 + (ptrdiff_t)g * taps + j - s;
                w[t] = k >= 0 && k < n ? qx[k] : 0;
            }
        }
    }
    return PIO_OK;
}

/* ------------------------------------------------------------------------ */
/* Portable loops. */

/* Source rows a and b -> one ring row: byte 2e is row a's value at
 * pair-layout position e, byte 2e + 1 row b's. Pixels [x0, width). */
static void fx_ring_load_c(const uint8_t *a, const uint8_t *b, uint8_t *ring, ptrdiff_t x0,
                           ptrdiff_t width, int C)
{
    for (ptrdiff_t x = x0; x < width; x++)
        for (int c = 0; c < C; c++) {
            const ptrdiff_t e = pair_pos(x, c, C);
            ring[2 * e] = a[x * C + c];
            ring[2 * e + 1] = b[x * C + c];
        }
}

/* Vertical pass of values [e0, len) of two output rows from np ring rows:
 * out[e] = round(sum_j (w[2j] * ring_j[2e] + w[2j+1] * ring_j[2e+1]) /
 * 2^shift), saturated to int16. Strips of FX_STRIP int32 sums: loops GCC
 * and Clang vectorise. */
static void fx_vpass2_c(const uint8_t *const *ring, const int16_t *qa, const int16_t *qb, int np,
                        ptrdiff_t e0, ptrdiff_t len, int shift, int16_t *restrict outa,
                        int16_t *restrict outb)
{
    int32_t sa[FX_STRIP], sb[FX_STRIP];
    const int32_t rnd = (int32_t)1 << (shift - 1);
    for (; e0 < len; e0 += FX_STRIP) {
        const ptrdiff_t m = len - e0 < FX_STRIP ? len - e0 : FX_STRIP;
        for (ptrdiff_t i = 0; i < m; i++)
            sa[i] = sb[i] = rnd;
        for (int j = 0; j < np; j++) {
            const uint8_t *restrict r = ring[j] + 2 * e0;
            const int32_t a0 = qa[2 * j], a1 = qa[2 * j + 1];
            const int32_t b0 = qb[2 * j], b1 = qb[2 * j + 1];
            for (ptrdiff_t i = 0; i < m; i++) {
                const int32_t v0 = r[2 * i], v1 = r[2 * i + 1];
                sa[i] += a0 * v0 + a1 * v1;
                sb[i] += b0 * v0 + b1 * v1;
            }
        }
        for (ptrdiff_t i = 0; i < m; i++) {
            outa[e0 + i] = sat16(asr32(sa[i], shift));
            outb[e0 + i] = sat16(asr32(sb[i], shift));
        }
    }
}

/* Horizontal pass of two pair-layout rows, outputs [x0, out_w): dst =
 * round(sum over the window / 2^shift), saturated to uint8; db may be NULL
 * (row b not stored). Walks the same groups and lanes as the SIMD loop
 * (lane pair l of a group feeds channel l % C); the integer sums are equal
 * in any order. */
static void fx_hpass2_c(const int16_t *rowa, const int16_t *rowb, uint8_t *da, uint8_t *db,
                        ptrdiff_t x0, ptrdiff_t out_w, const fx_htable *ht, int shift, int C)
{
    const int32_t rnd = (int32_t)1 << (shift - 1);
    for (ptrdiff_t x = x0; x < out_w; x++) {
        for (int r = 0; r < 2; r++) {
            uint8_t *d = r ? db : da;
            if (d == NULL)
                continue;
            const int16_t *p = (r ? rowb : rowa) + ht->pos[x];
            const int16_t *w = ht->w + (size_t)x * (size_t)ht->groups * 16;
            int32_t s[4] = {rnd, rnd, rnd, rnd};
            for (int g = 0; g < ht->groups; g++, p += ht->gstep, w += 16)
                for (int t = 0; t < 16; t++)
                    s[(t >> 1) % C] += (int32_t)w[t] * p[t];
            for (int c = 0; c < C; c++)
                d[x * C + c] = sat8(asr32(s[c], shift));
        }
    }
}

/* ------------------------------------------------------------------------ */
/* AVX2 loops (bit-identical to the portable ones). */

#ifdef FX_AVX2

/* fx_ring_load_c, 8 to 32 pixels per step (b is never NULL here: the
 * caller passes a zero row instead). */
FX_TARGET static void fx_ring_load_avx2(const uint8_t *a, const uint8_t *b, uint8_t *ring,
                                        ptrdiff_t width, int C)
{
    ptrdiff_t x = 0;
    if (C == 1) {
        for (; x + 32 <= width; x += 32) {
            const __m256i va = _mm256_loadu_si256((const __m256i *)(a + x));
            const __m256i vb = _mm256_loadu_si256((const __m256i *)(b + x));
            const __m256i lo = _mm256_unpacklo_epi8(va, vb); /* 0-7 | 16-23 */
            const __m256i hi = _mm256_unpackhi_epi8(va, vb); /* 8-15 | 24-31 */
            _mm256_storeu_si256((__m256i *)(ring + 2 * x), _mm256_permute2x128_si256(lo, hi, 0x20));
            _mm256_storeu_si256((__m256i *)(ring + 2 * x + 32),
                                _mm256_permute2x128_si256(lo, hi, 0x31));
        }
    } else if (C == 4) {
        /* 8 pixels: r0 g0 b0 a0 r1 .. -> r0 r1 g0 g1 b0 b1 a0 a1 r2 r3 .. */
        const __m256i m = _mm256_setr_epi8(0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15,
                                           0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15);
        for (; x + 8 <= width; x += 8) {
            const __m256i va =
                _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)(a + 4 * x)), m);
            const __m256i vb =
                _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)(b + 4 * x)), m);
            const __m256i lo = _mm256_unpacklo_epi8(va, vb);
            const __m256i hi = _mm256_unpackhi_epi8(va, vb);
            _mm256_storeu_si256((__m256i *)(ring + 8 * x), _mm256_permute2x128_si256(lo, hi, 0x20));
            _mm256_storeu_si256((__m256i *)(ring + 8 * x + 32),
                                _mm256_permute2x128_si256(lo, hi, 0x31));
        }
    } else {
        /* 8 pixels = 24 bytes, loaded as 32 (so stop 11 pixels short of
         * the row's end), 12 per lane, then per lane r0 g0 b0 r1 g1 b1 ..
         * -> r0 r1 g0 g1 b0 b1 r2 r3 .., 4 zero bytes last. Each lane's
         * 12 values become 24 ring bytes, stored as 16 + 16 with the
         * second store's zero tail overwritten by what follows (or left
         * in the padding, which must stay zero). */
        const __m256i spread = _mm256_setr_epi32(0, 1, 2, 7, 3, 4, 5, 7);
        const __m256i m = _mm256_setr_epi8(0, 3, 1, 4, 2, 5, 6, 9, 7, 10, 8, 11, -1, -1, -1, -1,
                                           0, 3, 1, 4, 2, 5, 6, 9, 7, 10, 8, 11, -1, -1, -1, -1);
        for (; x + 11 <= width; x += 8) {
            const __m256i va = _mm256_shuffle_epi8(
                _mm256_permutevar8x32_epi32(_mm256_loadu_si256((const __m256i *)(a + 3 * x)),
                                            spread),
                m);
            const __m256i vb = _mm256_shuffle_epi8(
                _mm256_permutevar8x32_epi32(_mm256_loadu_si256((const __m256i *)(b + 3 * x)),
                                            spread),
                m);
            const __m256i lo = _mm256_unpacklo_epi8(va, vb);
            const __m256i hi = _mm256_unpackhi_epi8(va, vb);
            uint8_t *r = ring + 6 * x;
            _mm_storeu_si128((__m128i *)r, _mm256_castsi256_si128(lo));
            _mm_storeu_si128((__m128i *)(r + 16), _mm256_castsi256_si128(hi));
            _mm_storeu_si128((__m128i *)(r + 24), _mm256_extracti128_si256(lo, 1));
            _mm_storeu_si128((__m128i *)(r + 40), _mm256_extracti128_si256(hi, 1));
        }
    }
    fx_ring_load_c(a, b, ring, x, width, C);
}

/* Round, shift and narrow two int32 vectors holding values 0-3 | 8-11 and
 * 4-7 | 12-15 (pmaddwd's order after the byte unpacks) into 16 int16 in
 * order. */
FX_AVX2_INLINE void fx_store16(int16_t *out, __m256i v0, __m256i v1, __m256i rnd, __m128i sh)
{
    v0 = _mm256_sra_epi32(_mm256_add_epi32(v0, rnd), sh);
    v1 = _mm256_sra_epi32(_mm256_add_epi32(v1, rnd), sh);
    _mm256_storeu_si256((__m256i *)out, _mm256_packs_epi32(v0, v1));
}

/* (lo + hi lanes of s0) | (lo + hi lanes of s1): RGBA's 4 channel sums of
 * two pixels. */
FX_AVX2_INLINE __m256i fx_fold4(__m256i s0, __m256i s1)
{
    return _mm256_add_epi32(_mm256_permute2x128_si256(s0, s1, 0x20),
                            _mm256_permute2x128_si256(s0, s1, 0x31));
}

/* RGB's sums of two pixels: lanes 0-2 and 3-5 of each hold the channels of
 * the two pixel pairs of a group; add them and line the results up as
 * fx_fold4 does (lane 3 of each half is garbage and never stored). */
FX_AVX2_INLINE __m256i fx_fold3(__m256i s0, __m256i s1)
{
    const __m256i up = _mm256_setr_epi32(3, 4, 5, 7, 7, 7, 7, 7);
    s0 = _mm256_add_epi32(s0, _mm256_permutevar8x32_epi32(s0, up));
    s1 = _mm256_add_epi32(s1, _mm256_permutevar8x32_epi32(s1, up));
    return _mm256_permute2x128_si256(s0, s1, 0x20);
}

FX_AVX2_INLINE int32_t fx_hsum8(__m256i acc)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

/* The vertical and horizontal passes, once per instruction set: AVX2
 * (pmaddwd then paddd) and, where the CPU has it, AVX-512 VNNI on 256-bit
 * registers (vpdpwssd: the same exact int32 sums in one instruction, ~10%
 * faster on Zen 4). */
#define FX_NAME(name) name##_avx2
#define FX_VTARGET FX_TARGET
#define FX_MADD(acc, x, w) _mm256_add_epi32((acc), _mm256_madd_epi16((x), (w)))
#include "pio_resize_fixed_simd.h"
#undef FX_NAME
#undef FX_VTARGET
#undef FX_MADD
#ifdef FX_VNNI
#define FX_NAME(name) name##_vnni
#define FX_VTARGET __attribute__((target("avx2,fma,avx512vnni,avx512vl")))
#define FX_MADD(acc, x, w) _mm256_dpwssd_epi32((acc), (x), (w))
#include "pio_resize_fixed_simd.h"
#undef FX_NAME
#undef FX_VTARGET
#undef FX_MADD
#endif

#endif /* FX_AVX2 */

/* ------------------------------------------------------------------------ */

/* Start bringing two rows of `bytes` bytes, `stride` apart, into L2. */
static void fx_prefetch_rows(const uint8_t *row, ptrdiff_t stride, size_t bytes)
{
#if defined(__GNUC__) || defined(__clang__)
    for (size_t o = 0; o < bytes; o += 64) {
        __builtin_prefetch(row + o, 0, 2);
        __builtin_prefetch(row + stride + o, 0, 2);
    }
#else
    (void)row;
    (void)stride;
    (void)bytes;
#endif
}

/* Weight of tap k of a window of n taps (0 outside it). */
static inline int16_t tap(const int16_t *q, int n, ptrdiff_t k)
{
    return k >= 0 && k < n ? q[k] : 0;
}

static inline int32_t pack_pair(int16_t lo, int16_t hi)
{
    return (int32_t)((uint32_t)(uint16_t)lo | ((uint32_t)(uint16_t)hi << 16));
}

/* One instruction set's passes. */
typedef struct {
    void (*vpass2)(const uint8_t *const *, const int32_t *, const int32_t *, int, ptrdiff_t, int,
                   int16_t *, int16_t *);
    ptrdiff_t (*hpass2_rgb)(const int16_t *, const int16_t *, uint8_t *, uint8_t *, ptrdiff_t,
                            const fx_htable *, int, int);
    ptrdiff_t (*hpass2_l)(const int16_t *, const int16_t *, uint8_t *, uint8_t *, ptrdiff_t,
                          const fx_htable *, int);
} fx_kernels;

#ifdef FX_AVX2
static const fx_kernels fx_kernels_avx2 = {fx_vpass2_avx2, fx_hpass2_rgb_avx2, fx_hpass2_l_avx2};
#ifdef FX_VNNI
static const fx_kernels fx_kernels_vnni = {fx_vpass2_vnni, fx_hpass2_rgb_vnni, fx_hpass2_l_vnni};
#endif
#endif

int pio_resize_fixed(const pio_view_u8 *src, const pio_view_u8 *dst, const pio_axis *hx,
                     const pio_axis *vy, int level)
{
    const fx_kernels *kern = NULL; /* NULL: the portable loops */
#ifdef FX_AVX2
    if (level >= PIO_SIMD_AVX2)
        kern = &fx_kernels_avx2;
#ifdef FX_VNNI
    if (level >= PIO_SIMD_AVX512VNNI)
        kern = &fx_kernels_vnni;
#endif
#else
    (void)level;
#endif
    const int C = src->channels;
    const ptrdiff_t in_w = src->width, in_h = src->height;
    const ptrdiff_t out_w = dst->width, out_h = dst->height;
    int status = PIO_OK;
    size_t vtab, htab;
    if ((status = pio_mul_size((size_t)out_h, (size_t)vy->ksize, &vtab)) != PIO_OK ||
        (status = pio_mul_size((size_t)out_w, (size_t)hx->ksize, &htab)) != PIO_OK)
        return status;
    int16_t *vq = pio_alloc_array(vtab, sizeof(int16_t), &status);
    int16_t *hq = pio_alloc_array(htab, sizeof(int16_t), &status);
    if (status != PIO_OK) {
        free(vq);
        free(hq);
        return status;
    }

    /* Plan: shifts, ranges and the error bound (see the top). */
    int vshift = 0, hshift = 0;
    double verr = 0.0, herr = 0.0;
    int declined = quantise_axis(vy, out_h, 255.0, FX_F + 1, vq, &vshift, &verr) != 0;
    int32_t tmax = 0;
    if (!declined) {
        tmax = vertical_range(vq, vy, out_h, vshift);
        declined = tmax > 32767 ||
                   quantise_axis(hx, out_w, (double)tmax, 1, hq, &hshift, &herr) != 0 ||
                   hshift + FX_F > 30;
    }
    if (!declined) {
        /* |t/2^F - t*| <= 255 verr + 2^-(F+1) for the intermediate t; the
         * horizontal weights scale that by at most abs_sum + herr and add
         * herr times the largest |t*|. */
        const double dv = 255.0 * verr + ldexp(0.5, -FX_F);
        const double tstar = 255.0 * (vy->pos_sum > vy->neg_sum ? vy->pos_sum : vy->neg_sum);
        const double bound = (hx->abs_sum + herr) * dv + herr * tstar;
        declined = !(bound <= PIO_FIXED_MAX_ERROR);
    }
    if (declined) {
        free(vq);
        free(hq);
        return PIO_FIXED_DECLINED;
    }

    /* Pair-layout row length: whole pixel pairs, padded to FX_ALIGN. */
    const size_t len = C == 1 ? (size_t)in_w : (size_t)((in_w + 1) / 2) * 2 * (size_t)C;
    const size_t padded = (len + FX_ALIGN - 1) / FX_ALIGN * FX_ALIGN;
    fx_htable ht;
    status = fx_htable_init(&ht, hx, hq, out_w, C, padded);
    free(hq);
    if (status != PIO_OK) {
        free(vq);
        return status;
    }

    /* Ring slots: the most row pairs any two neighbouring windows reach. */
    int R = 1;
    for (ptrdiff_t ya = 0; ya < out_h; ya += 2) {
        const ptrdiff_t yb = ya + 1 < out_h ? ya + 1 : ya;
        ptrdiff_t e = vy->start[ya] + vy->count[ya];
        if (vy->start[yb] + vy->count[yb] > e)
            e = vy->start[yb] + vy->count[yb];
        const ptrdiff_t np = e > vy->start[ya] ? (e - 1) / 2 - vy->start[ya] / 2 + 1 : 0;
        if (np > R)
            R = (int)np; /* <= ksize / 2 + 2, an int */
    }
    /* Ring rows a whole number of 64-byte lines apart, and an odd number:
     * the slots the vertical pass reads side by side then fall in different
     * L1 sets (a power-of-two stride put all of them in one set, measured
     * ~35% slower). */
    size_t rstride = (2 * padded + 63) / 64 * 64;
    if (!((rstride / 64) & 1))
        rstride += 64;
    size_t ring_bytes = 0;
    if ((status = pio_mul_size((size_t)R, rstride, &ring_bytes)) != PIO_OK) {
        free(vq);
        fx_htable_free(&ht);
        return status;
    }
    uint8_t *ring = pio_alloc_array(ring_bytes, 1, &status);
    int16_t *rows = pio_alloc_array(2 * ht.span, sizeof(int16_t), &status);
    const uint8_t **rp = pio_alloc_array((size_t)R, sizeof(*rp), &status);
    int16_t *qa = pio_alloc_array(2 * (size_t)R, sizeof(int16_t), &status);
    int16_t *qb = pio_alloc_array(2 * (size_t)R, sizeof(int16_t), &status);
    int32_t *pa = pio_alloc_array((size_t)R, sizeof(int32_t), &status);
    int32_t *pb = pio_alloc_array((size_t)R, sizeof(int32_t), &status);
    /* The partner of an odd last row: zeros (weighted 0, but loaded). */
    uint8_t *zeros = (in_h & 1) ? pio_alloc_array((size_t)in_w * (size_t)C, 1, &status) : NULL;
    if (status == PIO_OK) {
        if (zeros != NULL)
            memset(zeros, 0, (size_t)in_w * (size_t)C);
        /* Padding (positions past the last pixel, never weighted but
         * loaded) stays 0: ring loads only write pixel positions. */
        memset(ring, 0, ring_bytes);
        memset(rows, 0, 2 * ht.span * sizeof(int16_t));
        int16_t *ra = rows, *rb = rows + ht.span;
        ptrdiff_t next = 0; /* first row pair not loaded yet */
        for (ptrdiff_t ya = 0; ya < out_h; ya += 2) {
            const ptrdiff_t yb = ya + 1 < out_h ? ya + 1 : ya;
            const ptrdiff_t s = vy->start[ya];
            const ptrdiff_t d = vy->start[yb] - s; /* >= 0: windows move forward */
            const int na = vy->count[ya], nb = vy->count[yb];
            const ptrdiff_t e = na > d + nb ? s + na : s + d + nb;
            const ptrdiff_t m0 = s / 2;
            const int np = e > s ? (int)((e - 1) / 2 - m0 + 1) : 0;
            if (next < m0)
                next = m0;
            for (; next < m0 + np; next++) {
                /* Ask for the row pair two ahead now: loads come in small
                 * bursts between filtering passes, too short for the
                 * hardware prefetcher to get going (measured 4-6 % faster overall
                 * with the source out of cache). */
                if (2 * next + 5 < in_h)
                    fx_prefetch_rows(src->data + (2 * next + 4) * src->stride, src->stride,
                                     (size_t)in_w * (size_t)C);
                const uint8_t *a = src->data + 2 * next * src->stride;
                const uint8_t *b = 2 * next + 1 < in_h ? a + src->stride : zeros;
                uint8_t *slot = ring + (size_t)(next % R) * rstride;
#ifdef FX_AVX2
                if (kern != NULL) {
                    fx_ring_load_avx2(a, b, slot, in_w, C);
                    continue;
                }
#endif
                fx_ring_load_c(a, b, slot, 0, in_w, C);
            }
            const int16_t *wa = vq + (size_t)ya * (size_t)vy->ksize;
            const int16_t *wb = vq + (size_t)yb * (size_t)vy->ksize;
            for (int j = 0; j < np; j++) {
                const ptrdiff_t k = 2 * (m0 + j) - s; /* tap of row 2(m0 + j) in window a */
                qa[2 * j] = tap(wa, na, k);
                qa[2 * j + 1] = tap(wa, na, k + 1);
                qb[2 * j] = tap(wb, nb, k - d);
                qb[2 * j + 1] = tap(wb, nb, k + 1 - d);
                pa[j] = pack_pair(qa[2 * j], qa[2 * j + 1]);
                pb[j] = pack_pair(qb[2 * j], qb[2 * j + 1]);
                rp[j] = ring + (size_t)((m0 + j) % R) * rstride;
            }
            uint8_t *da = dst->data + ya * dst->stride;
            uint8_t *db = yb != ya ? dst->data + yb * dst->stride : NULL;
            const int sh = hshift + FX_F;
            ptrdiff_t x = 0;
            if (kern != NULL) {
                kern->vpass2(rp, pa, pb, np, (ptrdiff_t)padded, vshift - FX_F, ra, rb);
                x = C == 1 ? kern->hpass2_l(ra, rb, da, db, out_w, &ht, sh)
                           : kern->hpass2_rgb(ra, rb, da, db, out_w, &ht, sh, C);
            } else {
                fx_vpass2_c(rp, qa, qb, np, 0, (ptrdiff_t)padded, vshift - FX_F, ra, rb);
            }
            fx_hpass2_c(ra, rb, da, db, x, out_w, &ht, sh, C);
        }
    }
    free(zeros);
    free(pb);
    free(pa);
    free(qb);
    free(qa);
    free((void *)rp);
    free(rows);
    free(ring);
    free(vq);
    fx_htable_free(&ht);
    return status;
}
