"""How alike two images look: luma SSIM, held down by a colour-difference floor.

Owns the one number every quality decision compares with a target
(``target_ssim``, ``format="auto"``, the lossy-palette check). Luma SSIM alone
cannot see colour: a red/green pattern of equal luma turned to brown mush by
4:2:0 chroma keeps a luma SSIM near 1. So the score is

    min(luma SSIM, 1 - mean(|dCb| + |dCr|) / COLOUR_SCALE)

where dCb and dCr are the per-pixel differences of the BT.601 full-range
chroma (JPEG's YCbCr, unrounded; :func:`pyimgopt._kernels.chroma_error`).
With the default 0.985 target a mean chroma error up to 7.5 levels is
allowed: the 31 corpus stills at the quality their luma SSIM picks, in JPEG,
WebP and AVIF at 4:2:0, measured at most 4.6 (a 32 px icon 6.5), while an
equal-luma red/green checkerboard measured 8.3-9.9 with 16 px squares,
17-23 with 8 px and over 31 below that. The mean is over the whole image:
damage to a small region (a logo in a photo) weighs by its area. For photos
the score is simply their luma SSIM.

Both kernel backends give the same answer: the chroma error is an exact
integer sum in both (native C or NumPy), divided the same way; the luma SSIM
agrees to float64 rounding.
"""

from __future__ import annotations

import numpy as np

from .. import _kernels

__all__ = ["COLOUR_SCALE", "score", "luma_ssim", "chroma_error"]

#: Mean chroma error (|dCb| + |dCr|, 8-bit levels) that costs the whole score:
#: 500 puts the floor of the default 0.985 target at 7.5 levels (see above).
COLOUR_SCALE = 500.0
_WIN = 7  # the SSIM window


def luma_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of the luma of two RGB arrays of one shape (1.0 below the 7 px window)."""
    if min(a.shape[:2]) < _WIN:
        return 1.0
    return float(_kernels.ssim_luma(a, b))


def chroma_error(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over pixels of ``|dCb| + |dCr|`` between two RGB arrays of one shape
    (:func:`pyimgopt._kernels.chroma_error`)."""
    return float(_kernels.chroma_error(a, b))


def score(ref: np.ndarray, got: np.ndarray) -> float:
    """``min(luma SSIM, 1 - chroma_error / COLOUR_SCALE)`` of two RGB arrays.

    ``ref`` and ``got`` are uint8 (H, W, 3) arrays of one shape (alpha
    already composited). At most 1.0; exactly 1.0 for identical images.
    """
    luma = luma_ssim(ref, got)
    return min(luma, 1.0 - chroma_error(ref, got) / COLOUR_SCALE)
