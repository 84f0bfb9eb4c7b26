/*
 * pio_common.h - what every pyimgopt C kernel shares: the image view struct,
 * the status codes, and the portability macros for SIMD multiversioning.
 *
 * Kernels take views in, write into caller-owned views, and return an int
 * status (PIO_OK or a negative PIO_ERR_*). They never call into Python, never
 * print and never abort: the Cython wrapper maps the status to an exception.
 */
#ifndef PIO_COMMON_H
#define PIO_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h> /* pulls in <features.h>, which defines __GLIBC__ below */

/* Status codes. Zero is success; every error is negative. */
enum {
    PIO_OK = 0,
    PIO_ERR_ARG = -1,      /* null pointer, size < 1, unsupported channel count */
    PIO_ERR_NOMEM = -2,    /* a scratch allocation failed */
    PIO_ERR_FILTER = -3,   /* unknown pio_filter value */
    PIO_ERR_OVERFLOW = -4, /* a size computation would overflow size_t */
    PIO_ERR_SHAPE = -5     /* source and destination views do not fit together */
};

/*
 * An interleaved uint8 image, borrowed: the struct never owns `data`.
 * Pixels within a row are packed (pixel stride == channels bytes); rows are
 * `stride` bytes apart, and stride may exceed width * channels (a crop) or be
 * negative (a vertically flipped view). Row y starts at data + y * stride.
 * Sizes are signed so that a bad value from the caller is detected, not
 * wrapped.
 */
typedef struct {
    uint8_t *data;
    ptrdiff_t width;
    ptrdiff_t height;
    int channels;
    ptrdiff_t stride;
} pio_view_u8;

/* A short, static description of a status code (never NULL). */
static inline const char *pio_status_message(int status)
{
    switch (status) {
    case PIO_OK: return "ok";
    case PIO_ERR_ARG: return "invalid argument";
    case PIO_ERR_NOMEM: return "out of memory";
    case PIO_ERR_FILTER: return "unknown filter";
    case PIO_ERR_OVERFLOW: return "image size overflows the address space";
    case PIO_ERR_SHAPE: return "source and destination views do not match";
    default: return "unknown status";
    }
}

/*
 * PIO_HOT marks a function whose body is compiled twice, for AVX2 and for
 * baseline x86-64, with the variant picked once at load time (GCC
 * target_clones, resolved through an ifunc). This, not -march=native, is how
 * a wheel built anywhere uses AVX2 where it exists and still runs where it
 * does not. ifuncs need GCC and glibc, so every other toolchain or libc gets
 * the plain baseline function. Define PIO_NO_TARGET_CLONES to turn it off.
 */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && \
    defined(__GLIBC__) && !defined(PIO_NO_TARGET_CLONES)
#define PIO_HOT __attribute__((target_clones("avx2", "default")))
#else
#define PIO_HOT
#endif

/* Inline helpers whose constant arguments must be propagated into hot loops. */
#if defined(__GNUC__) || defined(__clang__)
#define PIO_INLINE static inline __attribute__((always_inline))
#else
#define PIO_INLINE static inline
#endif

/* Basic validation shared by every kernel: non-null, sizes >= 1. */
static inline int pio_view_ok(const pio_view_u8 *v)
{
    return v != NULL && v->data != NULL && v->width >= 1 && v->height >= 1 &&
           v->channels >= 1 && v->channels <= 4;
}

#endif /* PIO_COMMON_H */
