"""What an image array must be to be coded: checked before any model is loaded or run.

>>> check_image(np.zeros((2, 3, 3), np.uint8), 3)
>>> check_image(np.zeros((2, 3), np.uint8), 3)
Traceback (most recent call last):
  ...
vlaecodec.errors.VlaeError: image must be a uint8 array [H, W, 1] (grey), [H, W, 3] (RGB), or either with alpha last ([H, W, 2], [H, W, 4])
"""
from __future__ import annotations

import numpy as np

from .errors import VlaeError
from .fileformat import max_pixels


def check_image(img: np.ndarray, model_channels: int) -> None:
    """Raises a one-line VlaeError unless ``img`` is a uint8 [H, W, C] image (C = 1 to 4,
    at least one pixel, within the pixel limit) that a model of ``model_channels`` codes."""
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or not 1 <= img.shape[2] <= 4:
        raise VlaeError("image must be a uint8 array [H, W, 1] (grey), [H, W, 3] (RGB), "
                        "or either with alpha last ([H, W, 2], [H, W, 4])")
    if img.shape[0] < 1 or img.shape[1] < 1:
        raise VlaeError("image is empty (0 pixels)")
    if img.shape[0] * img.shape[1] > max_pixels():
        raise VlaeError(f"image has {img.shape[0] * img.shape[1]} pixels, over the limit {max_pixels()}")
    if (3 if img.shape[2] >= 3 else 1) > model_channels:
        raise VlaeError("this model codes grey images only")
