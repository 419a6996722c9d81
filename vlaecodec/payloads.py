"""The two payloads of lossless and near-lossless files: one ANS stack, two coders.

The bits-back chain (:mod:`vlaecodec.bands`) pushes and pops three kinds of symbols: z under
the uniform prior, z under the posterior q(z|x), and pixels under p(x|z).  A payload says
how each is coded:

* :class:`RansPayload` (version 4, what new files use): the integer stack of
  :mod:`vlaecodec.rans`; z with the posterior's integer CDF rows, pixels straight from the
  network's integer CDF (:mod:`vlaecodec.wave_coder`), no probability table in between;
* :class:`ConstrictionPayload` (versions 2 and 3): constriction's ``AnsCoder``, with float
  probability rows built from the same integers (:mod:`vlaecodec.pixels`).

Both are stacks (last pushed, first popped) with the same methods, so the chain is written
once.
"""
from __future__ import annotations

import constriction
import numpy as np

from .latents import Latents
from .pixels import CATEGORICAL, Bins, PixelCoder
from .rans import AnsStack
from .wave_coder import WaveCoder

# Posterior tables are 2**z_bits entries per latent: a large band's would not fit in memory
# at once, so they are made and coded a chunk at a time.  Chunks pushed last-first are the
# same symbol-by-symbol pushes as one call, so the bits do not change.  A chunk's integer
# tables take 2**12 * 257 * 8 bytes twice (8 MB, where 2**14 took 34 MB): stripes decoded
# at once (stripes.py) each hold their own.
LATENT_CHUNK = 1 << 12


def _chunks(n: int) -> range:
    return range(0, n, LATENT_CHUNK)


class RansPayload:
    """Version 4: ``words`` to decode, None to encode; ``residuals``: pixels with the residual
    layer (:mod:`vlaecodec.residuals`; the header's flag)."""

    def __init__(self, waves: WaveCoder, latents: Latents, words: np.ndarray | None = None,
                 residuals: bool = False):
        self.waves, self.latents = waves, latents
        self.residuals = residuals
        self.stack = AnsStack(words)

    def num_bits(self) -> int:
        return self.stack.num_bits()

    def compressed(self) -> np.ndarray:
        return self.stack.compressed()

    def push_prior(self, z: np.ndarray) -> None:
        self.stack.push_uniform(z, self.latents.bits)

    def pop_prior(self, count: int) -> np.ndarray:
        return self.stack.pop_uniform(count, self.latents.bits).astype(np.int32)

    def pop_posterior(self, mean: np.ndarray, logscale: np.ndarray) -> np.ndarray:
        """z ~ q(z|x) read off the stack (the encoder's bits-back pop)."""
        return np.concatenate([self.stack.pop_rows(self.latents.posterior_cdf(mean[a:a + LATENT_CHUNK],
                                                                              logscale[a:a + LATENT_CHUNK]))
                               for a in _chunks(len(mean))]).astype(np.int32)

    def push_posterior(self, z: np.ndarray, mean: np.ndarray, logscale: np.ndarray) -> None:
        """The inverse of :meth:`pop_posterior` (the decoder gives the bits back)."""
        for a in reversed(_chunks(len(mean))):
            cdf = self.latents.posterior_cdf(mean[a:a + LATENT_CHUNK], logscale[a:a + LATENT_CHUNK])
            self.stack.push_rows(z[a:a + LATENT_CHUNK], cdf)

    def push_pixels(self, x, u_pad, zhalf, rows, bins: Bins) -> None:
        self.waves.push(self.stack, x, u_pad, zhalf, rows, bins, self.residuals)

    def pop_pixels(self, x, u_pad, zhalf, rows, bins: Bins) -> None:
        self.waves.pop(self.stack, x, u_pad, zhalf, rows, bins, self.residuals)


class ConstrictionPayload:
    """Versions 2 and 3: ``words`` to decode, None to encode."""

    def __init__(self, pixels: PixelCoder, latents: Latents, words: np.ndarray | None = None):
        self.pixels, self.latents = pixels, latents
        self.coder = constriction.stream.stack.AnsCoder(*([] if words is None else [words]))
        self.prior = constriction.stream.model.Uniform(latents.K)

    def num_bits(self) -> int:
        return self.coder.num_bits()

    def compressed(self) -> np.ndarray:
        return self.coder.get_compressed()

    def push_prior(self, z: np.ndarray) -> None:
        self.coder.encode_reverse(z, self.prior)

    def pop_prior(self, count: int) -> np.ndarray:
        return self.coder.decode(self.prior, count).astype(np.int32)

    def pop_posterior(self, mean: np.ndarray, logscale: np.ndarray) -> np.ndarray:
        n = LATENT_CHUNK
        return np.concatenate([
            self.coder.decode(CATEGORICAL, self.latents.posterior_probabilities(mean[a:a + n], logscale[a:a + n]))
            for a in _chunks(len(mean))]).astype(np.int32)

    def push_posterior(self, z: np.ndarray, mean: np.ndarray, logscale: np.ndarray) -> None:
        n = LATENT_CHUNK
        for a in reversed(_chunks(len(mean))):
            self.coder.encode_reverse(z[a:a + n], CATEGORICAL,
                                      self.latents.posterior_probabilities(mean[a:a + n], logscale[a:a + n]))

    def push_pixels(self, x, u_pad, zhalf, rows, bins: Bins) -> None:
        self.pixels.push(self.coder, x, u_pad, zhalf, rows, bins)

    def pop_pixels(self, x, u_pad, zhalf, rows, bins: Bins) -> None:
        def pop(probs, c, prev):
            return bins.value(self.coder.decode(CATEGORICAL, bins.masses(probs)))
        self.pixels.pop(pop, x, u_pad, zhalf, rows)
