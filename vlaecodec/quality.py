"""Picture quality of a lossy decode, as a user reads it.

>>> import numpy as np
>>> a = np.full((4, 4, 3), 100, np.uint8)
>>> round(psnr(a, a + 1), 2)
48.13
"""
from __future__ import annotations

import numpy as np


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB over all subpixels (8-bit peak); infinite for identical pictures."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))
