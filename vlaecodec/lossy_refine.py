"""Encoder-side search for better latents: a lossy file at ``--effort 2``.

The analysis transform gives latents that are good on average over the training pictures,
not the best for this picture.  The encoder knows the picture and every step the decoder will
take, so it can look for latents (y, z) that cost less, D + beta R, under the same decoder:
the file format and the decoder do not change, and neither does decoding time.

The search runs Adam on y and z through the float model (``LossyModel``), starting from the
analysis.  Rounding has no useful gradient, and straight-through rounding gives the rate none
at a symbol's centre (measured: files grew).  So each latent is drawn to its floor or its
ceiling with stochastic Gumbel annealing (Yang, Bamler and Mandt, "Improving inference for
neural image compression", NeurIPS 2020): the nearer value is the likelier, and the draw
sharpens to rounding as a temperature falls.  The coder then rounds the result exactly as it
rounds the analysis's latents.

Large images are searched in windows of :data:`WINDOW` z units (1024 pixels) a side, one after
another, each seeing a margin of its neighbours' latents, held fixed, so that memory stays
bounded.  The draws come from a seeded generator: the same image, beta and thread count give
the same file.  Float sums may be ordered differently with another thread count or machine,
so effort 2's files may differ between them in a few symbols; each decodes the same
everywhere.

>>> import torch
>>> from vlaecodec.lossy_model import LossyConfig, LossyModel
>>> torch.manual_seed(0) and None
>>> model = LossyModel(LossyConfig(n=8, m=8)).eval()
>>> x = np.random.default_rng(0).uniform(0, 255, (3, 64, 128)).astype(np.float32)
>>> with torch.no_grad():
...     y, z = (t[0].numpy() for t in model.analysis(torch.from_numpy(x)[None], 2.0))
>>> refiner = LatentRefiner(model, steps=5)
>>> y2, z2 = refiner.refine(x, 64, 100, beta=100.0, y=y, z=z)
>>> y2.shape == y.shape and z2.shape == z.shape, y2.dtype
(True, dtype('float32'))
>>> bool(np.array_equal(refiner.refine(x, 64, 100, beta=100.0, y=y, z=z)[0], y2))   # seeded
True
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .lossy_model import LossyModel, gaussian_likelihood

WINDOW = 16      # z units (64 pixels) per side of a window searched at once
MARGIN = 1       # z units of fixed neighbours around a window: more than g_s's and h_s's reach


def gumbel_round(u: torch.Tensor, tau: float, gen: torch.Generator) -> torch.Tensor:
    """u drawn to floor(u) or floor(u) + 1, softly: a Gumbel-softmax over the two, each
    with logit -atanh(distance) / tau, so the nearer is likelier and, as tau falls, the draw
    becomes rounding (stochastic Gumbel annealing)."""
    low = torch.floor(u)
    d = u - low
    near = 1.0 - 1e-5
    logits = torch.stack([-torch.atanh(d.clamp(max=near)), -torch.atanh((1.0 - d).clamp(max=near))], -1) / tau
    noise = -torch.log(-torch.log(torch.rand(logits.shape, generator=gen).clamp_min(1e-10)))
    return low + torch.softmax(logits + noise, -1)[..., 1]


class LatentRefiner:
    """Searches latents for one image at one beta (:meth:`refine`).  ``steps``: Adam steps
    per window; ``lr_y``, ``lr_z``: its step sizes on y and z (in quantization bins); the
    temperature falls from ``tau`` to ``tau_end``; ``window``: z units per side of a window."""

    def __init__(self, model: LossyModel, steps: int = 20, lr_y: float = 0.015, lr_z: float = 0.03,
                 tau: float = 0.5, tau_end: float = 0.06, seed: int = 0, threads: int = 1, window: int = WINDOW):
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.steps, self.lr_y, self.lr_z = steps, lr_y, lr_z
        self.tau, self.tau_end, self.seed, self.threads, self.window = tau, tau_end, seed, threads, window

    def refine(self, x: np.ndarray, height: int, width: int, beta: float, y: np.ndarray, z: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        """Pixels x [3, H, W] (padded to a multiple of 64; the image is its top-left
        ``height`` x ``width``) and the analysis's (y, z) at ``beta`` -> better (y, z)."""
        gen = torch.Generator().manual_seed(self.seed)
        x_t = torch.from_numpy(np.ascontiguousarray(x, np.float32))
        y_t, z_t = torch.from_numpy(np.array(y, np.float32)), torch.from_numpy(np.array(z, np.float32))
        old = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            zh, zw = z_t.shape[1:]
            w = self.window
            for r in range(0, zh, w):
                for c in range(0, zw, w):
                    self._window(x_t, y_t, z_t, (r, min(r + w, zh), c, min(c + w, zw)),
                                 height, width, beta, gen)
        finally:
            torch.set_num_threads(old)
        return y_t.numpy(), z_t.numpy()

    def _window(self, x, y, z, inner, height, width, beta, gen) -> None:
        """Searches the z units ``inner`` (r0, r1, c0, c1) and their y, in place."""
        r0, r1, c0, c1 = inner
        zh, zw = z.shape[1:]
        a, b, c, d = max(r0 - MARGIN, 0), min(r1 + MARGIN, zh), max(c0 - MARGIN, 0), min(c1 + MARGIN, zw)
        z_in = torch.zeros(b - a, d - c)
        z_in[r0 - a:r1 - a, c0 - c:c1 - c] = 1.0
        y_in = z_in.repeat_interleave(4, 0).repeat_interleave(4, 1)
        # pixels of the image proper (not its padding) count in the distortion
        seen = ((torch.arange(64 * a, 64 * b) < height)[:, None] & (torch.arange(64 * c, 64 * d) < width)[None])
        seen = seen.float()
        xs = x[:, 64 * a:64 * b, 64 * c:64 * d][None]
        ys = y[:, 4 * a:4 * b, 4 * c:4 * d][None].clone().requires_grad_(True)
        zs = z[:, a:b, c:d][None].clone().requires_grad_(True)
        z_fixed, y_fixed = zs.detach().round(), ys.detach()
        level = self.model.level(beta)
        opt = torch.optim.Adam([{"params": [ys], "lr": self.lr_y}, {"params": [zs], "lr": self.lr_z}])
        m = self.model
        for step in range(self.steps):
            tau = self.tau * (self.tau_end / self.tau) ** (step / max(self.steps - 1, 1))

            def rounded(u, fixed_u, inside):   # the window's latents drawn, its margin's rounded
                return torch.round(fixed_u) * (1 - inside) + gumbel_round(u, tau, gen) * inside
            z_hat = rounded(zs, z_fixed, z_in)
            # each part's means and widths read the parts coded before it (LossyModel.contexts)
            y_hat, mean, raw = m.contexts(m.h_s(z_hat),
                                          lambda mean: mean + rounded(ys - mean, y_fixed - mean.detach(), y_in))
            x_hat = m.synthesis(y_hat, level)
            squared = (((x_hat - xs) ** 2).sum(1) * seen).sum() / 3
            bits = -(torch.log2(gaussian_likelihood(y_hat, mean, F.softplus(raw))) * y_in).sum() \
                - (torch.log2(m.z_density.likelihood(z_hat)) * z_in).sum()
            loss = (squared / beta + bits) / max(float(seen.sum()), 1.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            y[:, 4 * r0:4 * r1, 4 * c0:4 * c1] = ys[0, :, 4 * (r0 - a):4 * (r1 - a), 4 * (c0 - c):4 * (c1 - c)]
            z[:, r0:r1, c0:c1] = zs[0, :, r0 - a:r1 - a, c0 - c:c1 - c]

