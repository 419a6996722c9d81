"""Discretized latents for bits-back coding, in integer arithmetic.

Each latent is coded as one of ``K = 2**bits`` bins of equal mass under the standard-normal
prior, so the prior is uniform over bins (exactly ``bits`` bits per latent) and the decoder
uses the bin's prior median as z.  The posterior N(mean, sigma) becomes a table over the same
bins: Phi((edge - mean) / sigma) from an integer table of Phi on a 1/128 grid, with
1/sigma from an integer exp table (:mod:`vlaecodec.fixedpoint`).  Every input is an integer,
so the tables are identical wherever they are computed.

>>> t = Latents(6)
>>> probs = t.posterior_probabilities(np.array([0.0, 4096.0]), np.array([-4096.0, -4096.0]))
>>> probs.shape, int(probs[0].argmax()) in (31, 32), int(probs[1].argmax()) > 50
((2, 64), True, True)
"""
from __future__ import annotations

from statistics import NormalDist

import numpy as np

from .fixedpoint import (CDF_BITS, ACT_BITS, checked_round, normal_bin_cdf, normal_bin_probabilities,
                         normal_bin_probabilities_numpy)
from .rans import quantized_cdf


class Latents:
    """The bin grid for ``bits`` bits per latent."""

    def __init__(self, bits: int):
        self.bits = bits
        self.K = 1 << bits
        nd = NormalDist()
        scale = float(1 << ACT_BITS)
        # inner edges (K-1 of them) and bin medians, as integers at scale 2**12
        self.edges = np.array([checked_round(nd.inv_cdf(k / self.K) * scale) for k in range(1, self.K)],
                              dtype=np.int64)
        self.centers = np.array([checked_round(nd.inv_cdf((k + 0.5) / self.K) * scale)
                                 for k in range(self.K)], dtype=np.int64)

    def posterior_probabilities(self, mean: np.ndarray, logscale: np.ndarray) -> np.ndarray:
        """Rows [n, K] of bin probabilities for integer mean / logscale [n] (float64, scale
        2**12) (the compiled kernel; :meth:`posterior_probabilities_numpy` is the reference)."""
        return normal_bin_probabilities(np.asarray(mean, np.float64), np.asarray(logscale, np.float64), self.edges)

    def posterior_cdf(self, mean: np.ndarray, logscale: np.ndarray) -> np.ndarray:
        """The same bins as the integer coder's cumulative frequencies [n, K+1]
        (:func:`vlaecodec.rans.quantized_cdf`): what version 4 files code z with."""
        cum = normal_bin_cdf(np.asarray(mean, np.float64), np.asarray(logscale, np.float64), self.edges)
        return quantized_cdf(cum, 1 << CDF_BITS)

    def posterior_probabilities_numpy(self, mean: np.ndarray, logscale: np.ndarray) -> np.ndarray:
        return normal_bin_probabilities_numpy(np.asarray(mean, np.float64), np.asarray(logscale, np.float64),
                                              self.edges)

    def mode_bins(self, mean: np.ndarray) -> np.ndarray:
        """The bin that holds each mean (used where there are no bits to borrow)."""
        return np.searchsorted(self.edges, np.asarray(mean).astype(np.int64), side="right").astype(np.int32)

    def values(self, bins: np.ndarray) -> np.ndarray:
        """Integer z (scale 2**12, float64) of bins."""
        return self.centers[bins].astype(np.float64)
