/*
 * pio_alpha.h - premultiply and unpremultiply alpha in interleaved uint8
 * images with 2 (LA) or 4 (RGBA) channels, alpha last.
 *
 * Both functions round half up, in exact integer arithmetic, so the NumPy
 * fallback (pyimgopt/_fallback.py) reproduces them bit for bit:
 *
 *   premultiply:    c' = round(c * a / 255)
 *   unpremultiply:  c  = a == 0 ? 0 : min(255, round(c' * 255 / a))
 *
 * Alpha itself is copied unchanged. src and dst must have the same width,
 * height and channels; they may be the same view (in place), but must not
 * otherwise overlap.
 */
#ifndef PIO_ALPHA_H
#define PIO_ALPHA_H

#include "pio_common.h"

int pio_premultiply_u8(const pio_view_u8 *src, const pio_view_u8 *dst);
int pio_unpremultiply_u8(const pio_view_u8 *src, const pio_view_u8 *dst);

#endif /* PIO_ALPHA_H */
