"""q(z|x) on whole images: the exact encoder's integer (mean, logscale) of the latents.

The bits-back chain reads each band's posterior to borrow and give back its z, the lossy
coder to choose the bins it sends, the figures to draw a latent grid.

>>> import numpy as np
>>> from vlaecodec.exact import ExactVLAE
>>> from vlaecodec.model import VLAE, VLAEConfig
>>> q = Posterior(ExactVLAE.from_module(VLAE(VLAEConfig(hidden=8, pixel_hidden=8, z_channels=2, res_blocks=1))))
>>> img = np.zeros((5, 7, 1), np.uint8)                   # grey: coded as R = G = B
>>> mean, logscale = q.rows(q.image(img), [1])
>>> tuple(mean.shape), tuple(q.mean(img).shape)          # one channel of a 2 x 2 grid; all of it
((4,), (2, 2, 2))
"""
from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

from .exact import ExactVLAE


def pad4(x: np.ndarray) -> np.ndarray:
    """Edge-pad [C,H,W] to multiples of 4 (the latent grid)."""
    H, W = x.shape[-2:]
    ph, pw = (-H) % 4, (-W) % 4
    if ph or pw:
        x = np.pad(x, ((0, 0), (0, ph), (0, pw)), mode="edge")
    return x


class Posterior:
    """The posterior of one exact network; ``threads``: BLAS threads for its convolutions
    (the results do not depend on it)."""

    def __init__(self, net: ExactVLAE, threads: int = 1):
        self.net = net
        self.cfg = net.cfg
        self.threads = max(1, threads)

    def image(self, img: np.ndarray) -> np.ndarray:
        """A uint8 image [H,W,C] as the network's integer input [channels,H,W] (int64): grey
        images go through an RGB model as R = G = B (a read-only view of the one channel)."""
        # one contiguous int64 array (the coders read it as is; a strided view would be
        # copied for every band of a large image)
        x = np.ascontiguousarray(np.asarray(img).transpose(2, 0, 1), dtype=np.int64)
        return np.broadcast_to(x, (self.cfg.channels, *x.shape[1:])) if x.shape[0] < self.cfg.channels else x

    def rows(self, x: np.ndarray, channels: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(mean, logscale) rows of the given latent channels of x [C,H,W], in (channel, y, x)
        order, integers at scale 2**12."""
        with threadpool_limits(limits=self.threads, user_api="blas"):
            mean, logscale = self.net.posterior(pad4(x)[None])
        return mean[0, channels].reshape(-1), logscale[0, channels].reshape(-1)

    def mean(self, img: np.ndarray):
        """The posterior mean of z [z_channels, H/4, W/4] for a uint8 image [H,W,C], as floats:
        a torch tensor, for the figures that draw from it with the float model (the one
        method here that imports torch)."""
        import torch
        mean, _ = self.net.posterior(pad4(self.image(img))[None])
        return torch.from_numpy(mean[0] / (1 << 12))
