"""Compiled (numba) kernel for the logistic-mixture probability tables.

Integer arithmetic only, then one float64 division per entry: the same numbers as the numpy
reference :func:`vlaecodec.exact.logistic_probabilities` (a test checks it bit for bit), at a
fraction of the memory traffic, since no [n, K, levels] temporary is ever built.
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _first_edge_above(edges, sk, base, step_bits, j_min):
    """The first v with table index (edges[v]*sk + base) >> step_bits above j_min
    (len(edges) if none): a binary search, as the index rises with v."""
    lo, hi = 0, edges.shape[0]
    while lo < hi:
        mid = (lo + hi) // 2
        if (edges[mid] * sk + base) >> step_bits > j_min:
            hi = mid
        else:
            lo = mid + 1
    return lo


@njit(cache=True, nogil=True)
def logistic_tables(params, prev_u, c, K, levels, act_bits, exp_step_bits, mix_shift,
                    grid_bits, ls_lo, ls_hi, inv_scale, edges, sig_table, step_bits, n_grid,
                    exp_table, sig_bits):
    n = params.shape[0]
    out = np.empty((n, levels), np.float64)
    mixed = np.empty(levels + 1, np.int64)
    flat = np.empty(levels, np.int64)
    w = np.empty(K, np.int64)
    mean = np.empty(K, np.int64)
    inv_s = np.empty(K, np.int64)
    half_ls = 1 << (act_bits - grid_bits - 1)
    half_e = 1 << (act_bits - exp_step_bits - 1)
    half_t = 1 << (step_bits - 1)
    top = sig_table.shape[0] - 1
    for i in range(n):
        wmax = params[i, 0]
        for k in range(1, K):
            if params[i, k] > wmax:
                wmax = params[i, k]
        wsum = 0
        for k in range(K):
            d = (wmax - params[i, k] + half_e) >> (act_bits - exp_step_bits)
            if d > exp_table.shape[0] - 1:
                d = exp_table.shape[0] - 1
            w[k] = exp_table[d] >> mix_shift
            wsum += w[k]
            m = params[i, K + k]
            for q in range(c):
                prod = params[i, (3 + q) * K + k] * prev_u[i, q]
                m += prod // (levels - 1)   # floor division, as numpy's //
            mean[k] = m
            ls = (params[i, 2 * K + k] + half_ls) >> (act_bits - grid_bits)
            if ls < ls_lo:
                ls = ls_lo
            if ls > ls_hi:
                ls = ls_hi
            inv_s[k] = inv_scale[ls - ls_lo]
        mixed[:] = 0
        mixed[levels] = wsum << sig_bits
        flat[:] = 0
        for k in range(K):   # component by component: a tight loop over the bin edges
            base = -mean[k] * inv_s[k] + half_t + (n_grid << step_bits)
            sk, wk = inv_s[k], w[k]
            # j rises with v; outside [v_lo, v_hi) it sits on the table's ends, so those bins
            # go in as two constant runs (a difference array) instead of one lookup each
            v_lo = _first_edge_above(edges, sk, base, step_bits, 0)
            v_hi = _first_edge_above(edges, sk, base, step_bits, top - 1)
            flat[0] += wk * sig_table[0]
            flat[v_lo] -= wk * sig_table[0]
            flat[v_hi] += wk * sig_table[top]
            for v in range(v_lo, v_hi):
                j = (edges[v] * sk + base) >> step_bits
                mixed[v + 1] += wk * sig_table[j]
        run = 0
        for v in range(levels - 1):
            run += flat[v]
            mixed[v + 1] += run
        total = 0
        for v in range(levels):
            total += mixed[v + 1] - mixed[v]
        for v in range(levels):
            out[i, v] = (mixed[v + 1] - mixed[v]) / total
    return out


@njit(cache=True, nogil=True)
def normal_bin_tables(mean, inv_sigma, edges, cdf_table, shift, top):
    """Rows [n, len(edges)+1] of bin masses of N(mean, sigma) over the bins between ``edges``:
    the CDF at each edge is ``cdf_table`` (centred, clipped at its ends) at index
    ((edge - mean) * inv_sigma) >> shift, 0 below the first bin and ``top`` above the last;
    then one float64 division per entry.  The same numbers as the numpy reference
    :meth:`vlaecodec.latents.Latents.posterior_probabilities_numpy`."""
    n, m = mean.shape[0], edges.shape[0]
    half = (cdf_table.shape[0] - 1) // 2
    out = np.empty((n, m + 1), np.float64)
    cdf = np.empty(m + 2, np.int64)
    cdf[0] = 0
    cdf[m + 1] = top
    for i in range(n):
        for k in range(m):
            j = ((edges[k] - mean[i]) * inv_sigma[i]) >> shift
            if j < -half:
                j = -half
            elif j > half:
                j = half
            cdf[k + 1] = cdf_table[j + half]
        total = 0
        for k in range(m + 1):
            total += cdf[k + 1] - cdf[k]
        for k in range(m + 1):
            out[i, k] = (cdf[k + 1] - cdf[k]) / total
    return out


@njit(cache=True, nogil=True)
def finish_rows(acc, bias, scale, lim, relu):
    """In place: floor((acc + bias) * scale) clipped to [-lim, lim] (then max(., 0) if
    ``relu``), for a layer's [n, out] products in float64 holding integers (scale is a power
    of two, so every step is exact)."""
    n, m = acc.shape
    low = 0.0 if relu else -lim
    for i in range(n):
        for j in range(m):
            v = np.floor((acc[i, j] + bias[j]) * scale)
            acc[i, j] = min(max(v, low), lim)
    return acc
