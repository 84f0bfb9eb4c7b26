/*
 * pio_chroma.h - the colour difference of two interleaved uint8 images: the
 * sum over pixels of |dCb| + |dCr|, where Cb and Cr are the BT.601
 * full-range chroma of JPEG/JFIF (as Pillow converts RGB to YCbCr, but
 * unrounded):
 *
 *   Cb = -0.168736 R - 0.331264 G + 0.5      B
 *   Cr =  0.5      R - 0.418688 G - 0.081312 B
 *
 * computed exactly in integers: with the weights times 1e6 every pixel's
 * 1e6 * (|dCb| + |dCr|) is an integer <= 2 * 255e6, and the total over at most
 * 2^33 pixels stays far below 2^63. The pure NumPy twin in
 * pyimgopt/_fallback.py sums the same integers, so both return the same
 * total; the mean is total / (pixels * 1e6), divided in double by both.
 *
 * With 3 or 4 channels R, G, B are channels 0-2 (alpha is ignored); with 1 or
 * 2 channels (gray) the chroma is constant and the sum is 0. Both images must
 * have the same width, height and channels (PIO_ERR_SHAPE otherwise).
 * Returns PIO_OK, PIO_ERR_ARG or PIO_ERR_SHAPE; *out is written only on
 * success.
 */
#ifndef PIO_CHROMA_H
#define PIO_CHROMA_H

#include "pio_common.h"

/* The weights' scale: 1e6 * |dCb| and 1e6 * |dCr| are integers. */
#define PIO_CHROMA_SCALE 1000000

int pio_chroma_error_u8(const pio_view_u8 *a, const pio_view_u8 *b, uint64_t *out);

#endif /* PIO_CHROMA_H */
