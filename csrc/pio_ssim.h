/*
 * pio_ssim.h - structural similarity (SSIM) of two interleaved uint8 images
 * with 1..4 channels.
 *
 * The result equals scikit-image's default
 *
 *   skimage.metrics.structural_similarity(a, b, data_range=255,
 *                                         channel_axis=-1)   (None for 1 channel)
 *
 * up to float64 rounding (far below 1e-6):
 *   - 7x7 uniform window, K1 = 0.01, K2 = 0.03, L = 255, so
 *     C1 = (K1 L)^2 and C2 = (K2 L)^2;
 *   - sample covariance: variances and covariance are scaled by
 *     NP / (NP - 1) with NP = 49;
 *   - the SSIM map is averaged over the windows that lie fully inside the
 *     image, i.e. scikit-image's map cropped by 3 pixels on every side, which
 *     is (W - 6) x (H - 6) values (the reflected border never enters);
 *   - with several channels, the result is the mean of the per-channel means.
 * With 2 or 4 channels the alpha channel is compared like any other channel,
 * as scikit-image does.
 *
 * pio_ssim_luma_u8 first maps each pixel to luma
 *   Y = 0.299 R + 0.587 G + 0.114 B   (exact, no rounding; alpha ignored)
 * for 3 and 4 channels, or Y = channel 0 for 1 and 2 channels, and returns
 * the single-channel SSIM of the two luma planes (L = 255). It is about three
 * times cheaper than the colour SSIM of an RGB image.
 *
 * Both images must have the same width, height and channels, and width and
 * height must each be >= 7 (the window size): otherwise PIO_ERR_SHAPE.
 * Identical images give exactly 1.0. Returns PIO_OK, PIO_ERR_ARG (null
 * pointer, bad view), PIO_ERR_SHAPE, PIO_ERR_OVERFLOW or PIO_ERR_NOMEM; *out
 * is written only on success.
 */
#ifndef PIO_SSIM_H
#define PIO_SSIM_H

#include "pio_common.h"

/* Side of the square SSIM window; images smaller than this are rejected. */
#define PIO_SSIM_WIN 7

int pio_ssim_u8(const pio_view_u8 *a, const pio_view_u8 *b, double *out);
int pio_ssim_luma_u8(const pio_view_u8 *a, const pio_view_u8 *b, double *out);

#endif /* PIO_SSIM_H */
