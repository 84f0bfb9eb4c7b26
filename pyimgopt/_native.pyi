"""Type stubs for pyimgopt._native (the compiled kernels)."""

import numpy as np
import numpy.typing as npt

FILTERS: tuple[str, ...]

def premultiply(img: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]: ...
def unpremultiply(img: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]: ...
def resize(
    img: npt.NDArray[np.uint8], width: int, height: int, filter: str = "lanczos3"
) -> npt.NDArray[np.uint8]: ...
