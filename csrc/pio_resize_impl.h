/*
 * pio_resize_impl.h - what the three resize files share (not a public API):
 *
 *   pio_resize.c        filters, per-axis weight tables, nearest neighbour,
 *                       and the choice between the two paths below;
 *   pio_resize_fixed.c  the fixed-point path (images without alpha, with
 *                       AVX2): int16 weights, exact int32 sums, AVX2 or
 *                       AVX-512 VNNI loops and their portable C twin;
 *   pio_resize_float.c  the float32 path (alpha images, CPUs without AVX2,
 *                       and any resize whose fixed-point error bound is too
 *                       loose).
 */
#ifndef PIO_RESIZE_IMPL_H
#define PIO_RESIZE_IMPL_H

#include "pio_resize.h"

/* Sizes are bounded so that all index arithmetic (including the exact 64-bit
 * nearest-neighbour mapping) cannot overflow. */
#define PIO_MAX_DIM ((ptrdiff_t)INT32_MAX)

/* Weights of one axis, in double, as Pillow's precompute_coeffs defines
 * them: output i reads source samples start[i] .. start[i] + count[i] - 1
 * with weights[i * ksize + k] (k < count[i]; entries past count are 0). */
typedef struct {
    ptrdiff_t *start;
    int *count;
    double *weights;
    int ksize;
    /* Largest sum of |weights| over all outputs (1 without negative lobes):
     * how much the axis can amplify an error in its input. */
    double abs_sum;
    /* Largest sum of positive weights, and of |negative weights|, over all
     * outputs: the range of values the axis can produce from 0..1 input. */
    double pos_sum, neg_sum;
} pio_axis;

/* The out_size outputs cover input coordinates [lo, hi) (0 and in_size for
 * the whole axis; a part of the first or last sample when that sample stands
 * for only part of a sample's width, as after a DCT-scaled JPEG decode or a
 * box reduce of a size that is not a multiple of the factor). */
int pio_axis_init(pio_axis *ax, ptrdiff_t in_size, double lo, double hi, ptrdiff_t out_size,
                  int filter);
void pio_axis_free(pio_axis *ax);

/* a * b with an overflow check (PIO_OK or PIO_ERR_OVERFLOW). */
int pio_mul_size(size_t a, size_t b, size_t *out);

/* malloc(count * size) with an overflow check. Returns NULL and sets *status
 * (PIO_ERR_OVERFLOW or PIO_ERR_NOMEM) on failure; leaves *status alone on
 * success, so calls can be chained and checked once. */
void *pio_alloc_array(size_t count, size_t size, int *status);

/* Returned by pio_resize_fixed when it declines (its worst-case error bound
 * is above PIO_FIXED_MAX_ERROR, or a size exceeds its int16/int32 ranges):
 * the caller then runs the float path. Positive, so never a PIO_ERR_*. */
#define PIO_FIXED_DECLINED 1

/* The fixed-point path runs only when its proven worst-case deviation from
 * the exact (real-number) filter result, before the final rounding, is at
 * most this many levels. Two values less than 1 apart round to levels at
 * most 1 apart, so the output is then always within 1 level of the exact
 * result; in practice the bound is 0.01 .. 0.25 and the typical error a
 * hundredth of a level. */
#define PIO_FIXED_MAX_ERROR 0.5

/* Instruction-set levels of the SIMD variants, each including the last. */
enum {
    PIO_SIMD_NONE = 0,      /* portable C (what compilers auto-vectorise) */
    PIO_SIMD_AVX2 = 1,      /* x86-64 AVX2 + FMA */
    PIO_SIMD_AVX512VNNI = 2 /* + AVX-512 VNNI and VL (256-bit vpdpwssd) */
};

/* The highest level this CPU (and OS) supports, capped by the
 * PIO_RESIZE_NO_SIMD / PIO_RESIZE_NO_AVX512 flags. Always PIO_SIMD_NONE off
 * x86-64 or without GCC/Clang. */
int pio_simd_level(unsigned flags);

/* Fixed-point resize of a 1-, 3- or 4-channel image, every channel filtered
 * alike (no premultiplication: callers pass only images without alpha, or
 * whose alpha is opaque everywhere), with the loops of `level`; every level
 * computes bit-identical results (PIO_SIMD_NONE: the portable loops, which
 * the caller uses only when a test asks). Returns PIO_OK,
 * PIO_FIXED_DECLINED, PIO_ERR_NOMEM or PIO_ERR_OVERFLOW. */
int pio_resize_fixed(const pio_view_u8 *src, const pio_view_u8 *dst, const pio_axis *hx,
                     const pio_axis *vy, int level);

/* Float32 resize of a 1..4-channel image (2 and 4 channels: alpha last,
 * filtered premultiplied). Level PIO_SIMD_NONE runs the baseline x86-64 (or
 * plain C) variant of its loops, any higher level the AVX2+FMA variant,
 * which may differ from it by one float rounding, very rarely one output
 * level. Returns PIO_OK, PIO_ERR_NOMEM or PIO_ERR_OVERFLOW. */
int pio_resize_float(const pio_view_u8 *src, const pio_view_u8 *dst, const pio_axis *hx,
                     const pio_axis *vy, int level);

#endif /* PIO_RESIZE_IMPL_H */
