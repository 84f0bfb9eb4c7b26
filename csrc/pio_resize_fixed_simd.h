/*
 * pio_resize_fixed_simd.h - the SIMD vertical and horizontal passes of
 * pio_resize_fixed.c, written once and included there once per instruction
 * set (a template, not a header of declarations). The includer defines:
 *
 *   FX_NAME(name)       the function names of this variant (name##_avx2 ...)
 *   FX_VTARGET          its target attribute
 *   FX_MADD(acc, x, w)  acc + pmaddwd(x, w): 8 exact int32 sums of int16
 *                       pair products (paddd + pmaddwd, or vpdpwssd)
 *
 * and the shared helpers it uses (fx_store16, fx_fold3/4, fx_hsum8, sat8,
 * asr32, fx_htable). Every variant computes bit-identical results.
 */

/* fx_vpass2_c, 32 values per step (len is a multiple of FX_ALIGN): per
 * ring row, two 32-byte loads of (v, v') byte pairs, widened by unpacking
 * with zero and pmaddwd'ed with both output rows' (w, w'); the eight sums
 * stay in registers across all taps. */
FX_HOT_LOOP FX_VTARGET static void FX_NAME(fx_vpass2)(const uint8_t *const *ring,
                                                     const int32_t *pa, const int32_t *pb,
                                                     int np, ptrdiff_t len, int shift,
                                                     int16_t *outa, int16_t *outb)
{
    const __m256i zero = _mm256_setzero_si256();
    const __m256i rnd = _mm256_set1_epi32((int32_t)1 << (shift - 1));
    const __m128i sh = _mm_cvtsi32_si128(shift);
    for (ptrdiff_t e = 0; e < len; e += 32) {
        __m256i a0 = zero, a1 = zero, a2 = zero, a3 = zero;
        __m256i b0 = zero, b1 = zero, b2 = zero, b3 = zero;
        for (int j = 0; j < np; j++) {
            const uint8_t *r = ring[j] + 2 * e;
            const __m256i wa = _mm256_set1_epi32(pa[j]), wb = _mm256_set1_epi32(pb[j]);
            __m256i v = _mm256_loadu_si256((const __m256i *)r);
            __m256i lo = _mm256_unpacklo_epi8(v, zero), hi = _mm256_unpackhi_epi8(v, zero);
            a0 = FX_MADD(a0, lo, wa);
            b0 = FX_MADD(b0, lo, wb);
            a1 = FX_MADD(a1, hi, wa);
            b1 = FX_MADD(b1, hi, wb);
            v = _mm256_loadu_si256((const __m256i *)(r + 32));
            lo = _mm256_unpacklo_epi8(v, zero);
            hi = _mm256_unpackhi_epi8(v, zero);
            a2 = FX_MADD(a2, lo, wa);
            b2 = FX_MADD(b2, lo, wb);
            a3 = FX_MADD(a3, hi, wa);
            b3 = FX_MADD(b3, hi, wb);
        }
        fx_store16(outa + e, a0, a1, rnd, sh);
        fx_store16(outa + e + 16, a2, a3, rnd, sh);
        fx_store16(outb + e, b0, b1, rnd, sh);
        fx_store16(outb + e + 16, b2, b3, rnd, sh);
    }
}

/* One group of taps of one output pixel, rows a (p) and b (p + d): the
 * weights are loaded once and the row values are pmaddwd's memory operand. */
FX_VTARGET static inline __attribute__((always_inline)) void FX_NAME(fx_htaps)(
    const int16_t *w, const int16_t *p, ptrdiff_t d, __m256i *a, __m256i *b)
{
    const __m256i wv = _mm256_loadu_si256((const __m256i *)w);
    *a = FX_MADD(*a, wv, _mm256_loadu_si256((const __m256i *)p));
    *b = FX_MADD(*b, wv, _mm256_loadu_si256((const __m256i *)(p + d)));
}

/* Horizontal pass, C = 3 or 4: four output pixels of both rows per step,
 * all eight sums in registers, then folded, rounded, narrowed and stored
 * together (one store per row: 16 bytes of RGBA, or 12 of RGB). Returns
 * the first output left for the portable loop. */
FX_HOT_LOOP FX_VTARGET static ptrdiff_t FX_NAME(fx_hpass2_rgb)(const int16_t *rowa,
                                                               const int16_t *rowb, uint8_t *da,
                                                               uint8_t *db, ptrdiff_t out_w,
                                                               const fx_htable *ht, int shift,
                                                               int C)
{
    const __m128i sh = _mm_cvtsi32_si128(shift);
    const __m256i rnd = _mm256_set1_epi32((int32_t)1 << (shift - 1));
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    const __m256i rgb = _mm256_setr_epi8(0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1,
                                         0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1);
    const int G = ht->groups, gs = ht->gstep;
    const size_t wstep = (size_t)G * 16;
    const ptrdiff_t d = rowb - rowa;
    /* RGB stores 16 bytes for 12: stop where that would pass the row. */
    const ptrdiff_t end = C == 3 ? out_w - 2 : out_w;
    ptrdiff_t x = 0;
    for (; x + 4 <= end; x += 4) {
        const int16_t *w = ht->w + (size_t)x * wstep;
        const int16_t *p0 = rowa + ht->pos[x], *p1 = rowa + ht->pos[x + 1];
        const int16_t *p2 = rowa + ht->pos[x + 2], *p3 = rowa + ht->pos[x + 3];
        __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
        __m256i b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        for (int g = 0; g < G; g++, w += 16, p0 += gs, p1 += gs, p2 += gs, p3 += gs) {
            FX_NAME(fx_htaps)(w, p0, d, &a0, &b0);
            FX_NAME(fx_htaps)(w + wstep, p1, d, &a1, &b1);
            FX_NAME(fx_htaps)(w + 2 * wstep, p2, d, &a2, &b2);
            FX_NAME(fx_htaps)(w + 3 * wstep, p3, d, &a3, &b3);
        }
        /* [p0 | p1], [p2 | p3] per row, 4 channel sums each */
        __m256i a01, a23, b01, b23;
        if (C == 4) {
            a01 = fx_fold4(a0, a1);
            a23 = fx_fold4(a2, a3);
            b01 = fx_fold4(b0, b1);
            b23 = fx_fold4(b2, b3);
        } else {
            a01 = fx_fold3(a0, a1);
            a23 = fx_fold3(a2, a3);
            b01 = fx_fold3(b0, b1);
            b23 = fx_fold3(b2, b3);
        }
        a01 = _mm256_sra_epi32(_mm256_add_epi32(a01, rnd), sh);
        a23 = _mm256_sra_epi32(_mm256_add_epi32(a23, rnd), sh);
        b01 = _mm256_sra_epi32(_mm256_add_epi32(b01, rnd), sh);
        b23 = _mm256_sra_epi32(_mm256_add_epi32(b23, rnd), sh);
        /* int16 [p0 p2 | p1 p3], bytes [p0a p2a p0b p2b | p1a p3a p1b p3b],
         * then [p0a p1a p2a p3a | p0b p1b p2b p3b] */
        __m256i v =
            _mm256_packus_epi16(_mm256_packs_epi32(a01, a23), _mm256_packs_epi32(b01, b23));
        v = _mm256_permutevar8x32_epi32(v, order);
        if (C == 3)
            v = _mm256_shuffle_epi8(v, rgb);
        _mm_storeu_si128((__m128i *)(da + x * C), _mm256_castsi256_si128(v));
        if (db != NULL)
            _mm_storeu_si128((__m128i *)(db + x * C), _mm256_extracti128_si256(v, 1));
    }
    return x;
}

/* Horizontal pass, one channel: one output pixel of both rows per step. */
FX_HOT_LOOP FX_VTARGET static ptrdiff_t FX_NAME(fx_hpass2_l)(const int16_t *rowa,
                                                             const int16_t *rowb, uint8_t *da,
                                                             uint8_t *db, ptrdiff_t out_w,
                                                             const fx_htable *ht, int shift)
{
    const int32_t rnd = (int32_t)1 << (shift - 1);
    const int G = ht->groups;
    ptrdiff_t x = 0;
    for (; x < out_w; x++) {
        const int16_t *w = ht->w + (size_t)x * (size_t)G * 16;
        const int16_t *pa = rowa + ht->pos[x], *pb = rowb + ht->pos[x];
        __m256i sa = _mm256_setzero_si256(), sb = _mm256_setzero_si256();
        for (int g = 0; g < G; g++) {
            const __m256i wv = _mm256_loadu_si256((const __m256i *)(w + g * 16));
            sa = FX_MADD(sa, wv, _mm256_loadu_si256((const __m256i *)(pa + g * 16)));
            sb = FX_MADD(sb, wv, _mm256_loadu_si256((const __m256i *)(pb + g * 16)));
        }
        da[x] = sat8(asr32(fx_hsum8(sa) + rnd, shift));
        if (db != NULL)
            db[x] = sat8(asr32(fx_hsum8(sb) + rnd, shift));
    }
    return x;
}

