"""Compiled (numba) kernel for the logistic-mixture probability tables.

Integer arithmetic only, then one float64 division per entry: the same numbers as the numpy
reference :func:`vlaecodec.exact.logistic_probabilities` (a test checks it bit for bit), at a
fraction of the memory traffic, since no [n, K, levels] temporary is ever built.
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def logistic_tables(params, prev_u, c, K, levels, act_bits, exp_step_bits, mix_shift,
                    grid_bits, ls_lo, ls_hi, inv_scale, edges, sig_table, step_bits, n_grid,
                    exp_table, sig_bits):
    n = params.shape[0]
    out = np.empty((n, levels), np.float64)
    mixed = np.empty(levels + 1, np.int64)
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
        for k in range(K):   # component by component: a tight loop over the bin edges
            base = -mean[k] * inv_s[k] + half_t + (n_grid << step_bits)
            sk, wk = inv_s[k], w[k]
            for v in range(levels - 1):
                j = (edges[v] * sk + base) >> step_bits
                if j < 0:
                    j = 0
                elif j > top:
                    j = top
                mixed[v + 1] += wk * sig_table[j]
        total = 0
        for v in range(levels):
            total += mixed[v + 1] - mixed[v]
        for v in range(levels):
            out[i, v] = (mixed[v + 1] - mixed[v]) / total
    return out
