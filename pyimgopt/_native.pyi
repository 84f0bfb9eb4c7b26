"""Type stubs for pyimgopt._native (the compiled kernels)."""

import numpy as np
import numpy.typing as npt

FILTERS: tuple[str, ...]

def premultiply(img: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]: ...
def unpremultiply(img: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]: ...
def resize(
    img: npt.NDArray[np.uint8],
    width: int,
    height: int,
    filter: str = "lanczos3",
    *,
    box: tuple[float, float, float, float] | None = None,
) -> npt.NDArray[np.uint8]: ...
def _resize_ex(
    img: npt.NDArray[np.uint8],
    width: int,
    height: int,
    filter: str = "lanczos3",
    *,
    simd: bool = True,
    avx512: bool = True,
    fixed: bool | None = None,
) -> npt.NDArray[np.uint8]: ...
def _simd_level() -> str: ...
def ssim(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8]) -> float: ...
def ssim_luma(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8]) -> float: ...
def reduce_box(img: npt.NDArray[np.uint8], fx: int, fy: int) -> npt.NDArray[np.uint8]: ...
def chroma_error(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8]) -> float: ...
