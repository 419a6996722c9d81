"""Image quality: PSNR and MS-SSIM (pytorch-msssim, the standard 5-scale Wang et al. weights).

>>> import numpy as np
>>> a = np.full((4, 4, 3), 100, np.uint8)
>>> round(psnr(a, a + 1), 2)
48.13
"""
from __future__ import annotations

import numpy as np

from vlaecodec.quality import psnr  # noqa: F401 - the bench uses the library's PSNR


def ms_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """MS-SSIM on RGB (grey repeated); needs both sides > 160 pixels (5 scales, 11-tap window)."""
    import torch
    from pytorch_msssim import ms_ssim as _ms_ssim

    def t(x):
        x = np.repeat(x, 3, axis=2) if x.shape[2] == 1 else x
        return torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)[None].double()

    return float(_ms_ssim(t(a), t(b), data_range=255.0))
