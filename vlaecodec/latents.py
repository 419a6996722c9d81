"""Discretized latents for bits-back coding, in integer arithmetic.

Each latent is coded as one of ``K = 2**bits`` bins of equal mass under the standard-normal
prior, so the prior is uniform over bins (exactly ``bits`` bits per latent) and the decoder
uses the bin's prior median as z.  The posterior N(mean, sigma) becomes a table over the same
bins: Phi((edge - mean) / sigma) from an integer table of Phi on a 1/128 grid, with
1/sigma from an integer exp table.  Every input is an integer, so the tables are identical
wherever they are computed.

>>> import torch
>>> t = Latents(6)
>>> probs = t.posterior_probabilities(torch.tensor([0.0, 4096.0]), torch.tensor([-4096.0, -4096.0]))
>>> probs.shape, int(probs[0].argmax()) in (31, 32), int(probs[1].argmax()) > 50
((2, 64), True, True)
"""
from __future__ import annotations

import math
from decimal import Decimal, getcontext
from functools import lru_cache
from statistics import NormalDist

import numpy as np
import torch

from .exact import ACT_BITS
from .tables import normal_bin_tables
from .model import LOGSCALE_MAX, LOGSCALE_MIN

CDF_GRID_BITS = 7        # Phi tabulated every 1/128
CDF_RANGE = 8            # on [-8, 8]
CDF_BITS = 31
LOGSCALE_GRID_BITS = 6   # log sigma rounded down to 1/64 for the 1/sigma table


def _checked_round(v: float) -> int:
    """round(v), refusing values so close to .5 that another libm might round them otherwise."""
    frac = v - math.floor(v)
    if abs(frac - 0.5) < 1e-6:
        raise ArithmeticError(f"table value {v!r} too close to a rounding boundary")
    return int(math.floor(v + 0.5))


@lru_cache(maxsize=1)
def cdf_table() -> np.ndarray:
    """round(2**31 * Phi(j/128)) for j = -1024 .. 1024."""
    n = CDF_RANGE << CDF_GRID_BITS
    vals = [_checked_round(0.5 * math.erfc(-(j / (1 << CDF_GRID_BITS)) / math.sqrt(2)) * 2 ** CDF_BITS)
            for j in range(-n, n + 1)]
    return np.array(vals, dtype=np.int64)


@lru_cache(maxsize=1)
def inv_sigma_table() -> np.ndarray:
    """round(2**12 * exp(-s/64)) for s/64 in [LOGSCALE_MIN, LOGSCALE_MAX], from ``decimal``."""
    getcontext().prec = 40
    lo = int(LOGSCALE_MIN * (1 << LOGSCALE_GRID_BITS))
    hi = int(LOGSCALE_MAX * (1 << LOGSCALE_GRID_BITS))
    out = [int(((Decimal(-s) / (1 << LOGSCALE_GRID_BITS)).exp() * (1 << ACT_BITS)).to_integral_value())
           for s in range(lo, hi + 1)]
    return np.array(out, dtype=np.int64)


class Latents:
    """The bin grid for ``bits`` bits per latent."""

    def __init__(self, bits: int):
        self.bits = bits
        self.K = 1 << bits
        nd = NormalDist()
        scale = float(1 << ACT_BITS)
        # inner edges (K-1 of them) and bin medians, as integers at scale 2**12
        self.edges = np.array([_checked_round(nd.inv_cdf(k / self.K) * scale) for k in range(1, self.K)],
                              dtype=np.int64)
        self.centers = np.array([_checked_round(nd.inv_cdf((k + 0.5) / self.K) * scale)
                                 for k in range(self.K)], dtype=np.int64)

    def _integer_mean_and_inv_sigma(self, mean: torch.Tensor, logscale: torch.Tensor):
        mean = mean.numpy().astype(np.int64)
        ls = np.floor_divide(logscale.numpy().astype(np.int64), 1 << (ACT_BITS - LOGSCALE_GRID_BITS))
        return mean, inv_sigma_table()[ls - int(LOGSCALE_MIN * (1 << LOGSCALE_GRID_BITS))]

    def posterior_probabilities(self, mean: torch.Tensor, logscale: torch.Tensor) -> np.ndarray:
        """Rows [n, K] of bin probabilities for integer mean / logscale [n] (scale 2**12)
        (the compiled kernel; :meth:`posterior_probabilities_numpy` is the reference)."""
        mean, inv_sigma = self._integer_mean_and_inv_sigma(mean, logscale)
        return normal_bin_tables(np.ascontiguousarray(mean), np.ascontiguousarray(inv_sigma), self.edges,
                                 cdf_table(), 2 * ACT_BITS - CDF_GRID_BITS, 1 << CDF_BITS)

    def posterior_probabilities_numpy(self, mean: torch.Tensor, logscale: torch.Tensor) -> np.ndarray:
        mean, inv_sigma = self._integer_mean_and_inv_sigma(mean, logscale)
        # t = (edge - mean) / sigma at scale 2**24, then down to the 1/128 grid of the Phi table
        t = (self.edges[None, :] - mean[:, None]) * inv_sigma[:, None]
        j = np.floor_divide(t, 1 << (2 * ACT_BITS - CDF_GRID_BITS))
        n = CDF_RANGE << CDF_GRID_BITS
        cdf = cdf_table()[np.clip(j, -n, n) + n]
        full = np.concatenate([np.zeros((len(mean), 1), np.int64), cdf,
                               np.full((len(mean), 1), 1 << CDF_BITS, np.int64)], axis=1)
        mass = np.diff(full, axis=1)
        return mass / mass.sum(axis=1, keepdims=True, dtype=np.int64)

    def mode_bins(self, mean: torch.Tensor) -> np.ndarray:
        """The bin that holds each mean (used where there are no bits to borrow)."""
        return np.searchsorted(self.edges, mean.numpy().astype(np.int64), side="right").astype(np.int32)

    def values(self, bins: np.ndarray) -> torch.Tensor:
        """Integer z (scale 2**12) of bins."""
        return torch.from_numpy(self.centers[bins].astype(np.float64))
