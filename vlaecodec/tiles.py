"""A fully convolutional network evaluated tile by tile, so that memory follows the tile, not
the image.

The lossy model's transforms keep about 300 bytes of activations per pixel: a 24-megapixel
photo would need 8 GB at once.  Each tile is cut with a margin (``halo``) wider than the
network's reach, so the part of its output that is kept is the whole image's output at those
places: the transforms reach 30 pixels (analysis: four 5x5 stride-2 layers) and under 2 latent
units (synthesis), within a halo of 3 latent units (48 pixels).  Encoder and decoder cut the
same tiles (they depend on the image's size alone), so the encoder's picture is the decoder's.

>>> x = np.arange(2 * 64 * 96, dtype=np.float32).reshape(2, 64, 96)
>>> pool = lambda t: t.reshape(t.shape[0], t.shape[1] // 16, 16, t.shape[2] // 16, 16).mean((2, 4))
>>> bool(np.array_equal(on_tiles(pool, x, 16, 1, tile=2, halo=1), pool(x)))
True
"""
from __future__ import annotations

import numpy as np


def on_tiles(fn, x: np.ndarray, inp: int, out: int, tile: int, halo: int) -> np.ndarray:
    """``fn(x)`` for x [C, H, W] whose every ``inp`` rows and columns make ``out`` rows and
    columns of the output (a grid of units: 16 pixels to 1 latent, or back), computed on tiles
    of ``tile`` x ``tile`` units with ``halo`` units around each.  An input of at most one
    tile goes through ``fn`` whole."""
    rows, cols = x.shape[1] // inp, x.shape[2] // inp
    if rows <= tile and cols <= tile:
        return fn(x)
    result = None
    for r in range(0, rows, tile):
        for c in range(0, cols, tile):
            r0, c0 = max(r - halo, 0), max(c - halo, 0)
            r1, c1 = min(r + tile + halo, rows), min(c + tile + halo, cols)
            y = fn(x[:, r0 * inp:r1 * inp, c0 * inp:c1 * inp])
            if result is None:
                result = np.empty((y.shape[0], rows * out, cols * out), y.dtype)
            h, w = min(tile, rows - r), min(tile, cols - c)
            result[:, r * out:(r + h) * out, c * out:(c + w) * out] = \
                y[:, (r - r0) * out:(r - r0 + h) * out, (c - c0) * out:(c - c0 + w) * out]
    return result
