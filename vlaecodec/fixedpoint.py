"""Fixed-point arithmetic for coding: the integer formats, the integer tables, and the
probability rows built from them (with their compiled kernels).

The decoder must reproduce the encoder's probabilities bit for bit, so every number that
reaches the entropy coder is built from integers:

* activations are integers at scale ``2**ACT_BITS``, clamped to ``+-2**ACT_CLAMP_BITS``, and
  each layer's weights are scaled so that ``sum |w| <= 2**WEIGHT_SUM_BITS``: every product
  and sum stays exact in float64 (below 2**53), in any order (:func:`weight_exponent`);
* exp, sigmoid and Phi come from tables made once, from Python's ``decimal`` module (no
  libm), or, for Phi, with every value checked to be far from a rounding boundary;
* a probability row is integer masses divided by their (exact integer) sum: one correctly
  rounded float64 division per entry, the same on every machine.

Each compiled (numba) kernel has a numpy reference here, and the tests check them bit for bit.

>>> exp_table()[:2].tolist(), int(exp_table()[256]) == round(2**30 / 2.718281828459045)
([1073741824, 1069555701], True)
>>> decimal_exp_table(0, 2, 6, 12).tolist()       # round(2**12 * exp(-s/64)), s = 0, 1, 2
[4096, 4032, 3970]
>>> logits_to_probabilities(np.array([[0, 4096 * 30]])).tolist()
[[0.0, 1.0]]
"""
from __future__ import annotations

import math
from decimal import Decimal, localcontext
from functools import lru_cache

import numpy as np
from numba import njit

from .config import LOGISTIC_LOGSCALE_MAX, LOGISTIC_LOGSCALE_MIN, LOGSCALE_MAX, LOGSCALE_MIN
from .shipped_tables import table

# --- number formats ------------------------------------------------------------------------
ACT_BITS = 12            # activations are integers at scale 2**12
ACT_CLAMP_BITS = 22      # |activation| <= 2**22 (i.e. 1024.0)
WEIGHT_SUM_BITS = 29     # sum_i |w_int| <= 2**29, so |acc| <= 2**51 < 2**53
MAX_WEIGHT_BITS = 24
ACT_LIMIT = float(2 ** ACT_CLAMP_BITS)
DECIMAL_DIGITS = 40      # precision of every table made with ``decimal``


def weight_exponent(w) -> int:
    """Largest power-of-two scale s with fan_in * max|w| * 2**s <= 2**WEIGHT_SUM_BITS, for a
    layer's weights [out, ...] (exact: frexp), at most MAX_WEIGHT_BITS.

    >>> weight_exponent(np.full((4, 3), 1000.0)), weight_exponent(np.zeros((2, 2)))
    (17, 24)
    """
    w = np.asarray(w)
    fan_in = w[0].size
    peak = float(np.abs(w).max())
    if peak == 0.0:
        return MAX_WEIGHT_BITS
    _, e_w = math.frexp(peak)                  # peak < 2**e_w
    e_f = max(fan_in - 1, 1).bit_length()      # fan_in <= 2**e_f
    return min(MAX_WEIGHT_BITS, WEIGHT_SUM_BITS - e_w - e_f)


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


# --- integer tables --------------------------------------------------------------------------
EXP_STEP_BITS = 8        # the exp table has 256 entries per nat
EXP_RANGE_NATS = 40
PROB_BITS = 30


@lru_cache(maxsize=1)
def exp_table() -> np.ndarray:
    """round(2**30 * exp(-k/256)) for k = 0 .. 40*256, from ``decimal`` (no libm)."""
    return table("exp", _exp_table)


def _exp_table() -> np.ndarray:
    with localcontext() as ctx:
        ctx.prec = DECIMAL_DIGITS
        step = (Decimal(-1) / Decimal(2 ** EXP_STEP_BITS)).exp()
        out, v = [], Decimal(2 ** PROB_BITS)
        for _ in range(EXP_RANGE_NATS * 2 ** EXP_STEP_BITS + 1):
            out.append(int(v.to_integral_value()))
            v *= step
    return np.array(out, dtype=np.int64)


@lru_cache(maxsize=4)
def decimal_exp_table(lo: int, hi: int, grid_bits: int, scale_bits: int) -> np.ndarray:
    """round(2**scale_bits * exp(-s / 2**grid_bits)) for s = lo .. hi, from ``decimal``: the
    1/sigma tables of a log scale on a grid (latents, logistic mixtures)."""
    return table(_exp_name(lo, hi, grid_bits, scale_bits),
                 lambda: _decimal_exp_table(lo, hi, grid_bits, scale_bits))


def _exp_name(lo: int, hi: int, grid_bits: int, scale_bits: int) -> str:
    return f"exp_{lo}_{hi}_{grid_bits}_{scale_bits}".replace("-", "m")


def _decimal_exp_table(lo: int, hi: int, grid_bits: int, scale_bits: int) -> np.ndarray:
    with localcontext() as ctx:
        ctx.prec = DECIMAL_DIGITS
        out = [int(((Decimal(-s) / (1 << grid_bits)).exp() * (1 << scale_bits)).to_integral_value())
               for s in range(lo, hi + 1)]
    return np.array(out, dtype=np.int64)


def logits_to_probabilities(logits: np.ndarray) -> np.ndarray:
    """Integer logits [n, L] (scale 2**ACT_BITS) -> float64 probability rows for constriction.

    softmax through an integer exp table: weights are integers, and the float64 division by
    their (exact integer) sum is correctly rounded, hence identical on every machine."""
    lg = logits.astype(np.int64)
    d = (lg.max(axis=1, keepdims=True) - lg) >> (ACT_BITS - EXP_STEP_BITS)
    table = exp_table()
    w = table[np.minimum(d, len(table) - 1)]
    return w / w.sum(axis=1, keepdims=True, dtype=np.int64)


# --- normal bins (the latents' posterior tables) ---------------------------------------------
CDF_GRID_BITS = 7        # Phi tabulated every 1/128
CDF_RANGE = 8            # on [-8, 8]
CDF_BITS = 31
LOGSCALE_GRID_BITS = 6   # log sigma rounded down to 1/64 for the 1/sigma table
# (lo, hi, grid_bits, scale_bits) of the latents' 1/sigma table (decimal_exp_table)
LATENT_SCALE_GRID = (int(LOGSCALE_MIN * (1 << LOGSCALE_GRID_BITS)), int(LOGSCALE_MAX * (1 << LOGSCALE_GRID_BITS)),
                     LOGSCALE_GRID_BITS, ACT_BITS)


def checked_round(v: float) -> int:
    """round(v), refusing values so close to .5 that another libm might round them otherwise.

    >>> checked_round(2.4), checked_round(-0.6)
    (2, -1)
    """
    frac = v - math.floor(v)
    if abs(frac - 0.5) < 1e-6:
        raise ArithmeticError(f"table value {v!r} too close to a rounding boundary")
    return int(math.floor(v + 0.5))


@lru_cache(maxsize=1)
def cdf_table() -> np.ndarray:
    """round(2**31 * Phi(j/128)) for j = -1024 .. 1024."""
    n = CDF_RANGE << CDF_GRID_BITS
    vals = [checked_round(0.5 * math.erfc(-(j / (1 << CDF_GRID_BITS)) / math.sqrt(2)) * 2 ** CDF_BITS)
            for j in range(-n, n + 1)]
    return np.array(vals, dtype=np.int64)


def inv_sigma_table() -> np.ndarray:
    """round(2**12 * exp(-s/64)) for s/64 in [LOGSCALE_MIN, LOGSCALE_MAX]."""
    return decimal_exp_table(*LATENT_SCALE_GRID)


def _mean_and_inv_sigma(mean: np.ndarray, logscale: np.ndarray):
    mean = np.asarray(mean).astype(np.int64)
    ls = np.floor_divide(np.asarray(logscale).astype(np.int64), 1 << (ACT_BITS - LOGSCALE_GRID_BITS))
    return mean, inv_sigma_table()[ls - int(LOGSCALE_MIN * (1 << LOGSCALE_GRID_BITS))]


def normal_bin_probabilities(mean: np.ndarray, logscale: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Rows [n, len(edges)+1] of the masses of N(mean, exp(logscale)) over the bins between
    integer ``edges``, for integer mean / logscale [n] at scale 2**12 (the compiled kernel;
    :func:`normal_bin_probabilities_numpy` is the reference)."""
    mean, inv_sigma = _mean_and_inv_sigma(mean, logscale)
    return normal_bin_tables(np.ascontiguousarray(mean), np.ascontiguousarray(inv_sigma), edges,
                             cdf_table(), 2 * ACT_BITS - CDF_GRID_BITS, 1 << CDF_BITS)


def normal_bin_probabilities_numpy(mean: np.ndarray, logscale: np.ndarray, edges: np.ndarray) -> np.ndarray:
    mean, inv_sigma = _mean_and_inv_sigma(mean, logscale)
    # t = (edge - mean) / sigma at scale 2**24, then down to the 1/128 grid of the Phi table
    t = (edges[None, :] - mean[:, None]) * inv_sigma[:, None]
    j = np.floor_divide(t, 1 << (2 * ACT_BITS - CDF_GRID_BITS))
    n = CDF_RANGE << CDF_GRID_BITS
    cdf = cdf_table()[np.clip(j, -n, n) + n]
    full = np.concatenate([np.zeros((len(mean), 1), np.int64), cdf,
                           np.full((len(mean), 1), 1 << CDF_BITS, np.int64)], axis=1)
    mass = np.diff(full, axis=1)
    return mass / mass.sum(axis=1, keepdims=True, dtype=np.int64)


@njit(cache=True, nogil=True)
def normal_bin_cum(mean, inv_sigma, edges, cdf_table, shift, top):
    """Rows [n, len(edges)+2] of the integer CDF of N(mean, sigma) at the bins' edges: 0,
    then ``cdf_table`` (centred, clipped at its ends) at index ((edge - mean) * inv_sigma) >>
    shift for each inner edge, then ``top`` (non-decreasing: the table and the index rise)."""
    n, m = mean.shape[0], edges.shape[0]
    half = (cdf_table.shape[0] - 1) // 2
    cum = np.empty((n, m + 2), np.int64)
    for i in range(n):
        cum[i, 0] = 0
        cum[i, m + 1] = top
        for k in range(m):
            j = ((edges[k] - mean[i]) * inv_sigma[i]) >> shift
            if j < -half:
                j = -half
            elif j > half:
                j = half
            cum[i, k + 1] = cdf_table[j + half]
    return cum


@njit(cache=True, nogil=True)
def normal_bin_tables(mean, inv_sigma, edges, cdf_table, shift, top):
    """Rows [n, len(edges)+1] of bin masses of N(mean, sigma) over the bins between ``edges``
    (:func:`normal_bin_cum`, then one float64 division per entry).  The same numbers as the
    numpy reference :func:`normal_bin_probabilities_numpy`."""
    cum = normal_bin_cum(mean, inv_sigma, edges, cdf_table, shift, top)
    n, m = cum.shape[0], cum.shape[1] - 1
    out = np.empty((n, m), np.float64)
    for i in range(n):
        total = 0
        for k in range(m):
            total += cum[i, k + 1] - cum[i, k]
        for k in range(m):
            out[i, k] = (cum[i, k + 1] - cum[i, k]) / total
    return out


def normal_bin_cdf(mean: np.ndarray, logscale: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The integer CDF rows [n, len(edges)+2] of :func:`normal_bin_probabilities` (their last
    entry is 2**CDF_BITS), for an integer coder."""
    mean, inv_sigma = _mean_and_inv_sigma(mean, logscale)
    return normal_bin_cum(np.ascontiguousarray(mean), np.ascontiguousarray(inv_sigma), edges,
                          cdf_table(), 2 * ACT_BITS - CDF_GRID_BITS, 1 << CDF_BITS)


# --- discretized logistic mixture ------------------------------------------------------------
SIGMOID_GRID_BITS = 10   # sigmoid tabulated every 1/1024 ...
SIGMOID_RANGE = 20       # ... on [-20, 20]
SIGMOID_BITS = 28
MIX_WEIGHT_SHIFT = 8     # mixture weights at 2**22, so sum_k w_k * mass_k < 2**53
LOGISTIC_GRID_BITS = 8   # log scale rounded to 1/256 for the 1/s table
LOGISTIC_SCALE_GRID = (int(LOGISTIC_LOGSCALE_MIN * (1 << LOGISTIC_GRID_BITS)),
                       int(LOGISTIC_LOGSCALE_MAX * (1 << LOGISTIC_GRID_BITS)), LOGISTIC_GRID_BITS, ACT_BITS)


@lru_cache(maxsize=1)
def sigmoid_table() -> np.ndarray:
    """round(2**28 * sigmoid(j/1024)) for j = -20480 .. 20480, from ``decimal``
    (exp(-j/1024) by repeated multiplication at 40 digits; sigmoid(-t) = 1 - sigmoid(t))."""
    return table("sigmoid", _sigmoid_table)


def _sigmoid_table() -> np.ndarray:
    n = SIGMOID_RANGE << SIGMOID_GRID_BITS
    with localcontext() as ctx:
        ctx.prec = DECIMAL_DIGITS
        step = (Decimal(-1) / (1 << SIGMOID_GRID_BITS)).exp()
        one, top = Decimal(1), Decimal(1 << SIGMOID_BITS)
        pos, e = [], one
        for _ in range(n + 1):
            pos.append(int((top / (one + e)).to_integral_value()))
            e *= step
    pos = np.array(pos, dtype=np.int64)
    return np.concatenate([(1 << SIGMOID_BITS) - pos[:0:-1], pos])


def logistic_inv_scale_table() -> np.ndarray:
    """round(2**12 * exp(-s/256)) over the clamped log-scale range."""
    return decimal_exp_table(*LOGISTIC_SCALE_GRID)


def fixed_tables() -> dict:
    """Every ``decimal`` table that coding uses, by its name in :mod:`vlaecodec.shipped_tables`:
    the functions that compute it."""
    out = {"exp": _exp_table, "sigmoid": _sigmoid_table}
    for grid in (LATENT_SCALE_GRID, LOGISTIC_SCALE_GRID):
        out[_exp_name(*grid)] = lambda grid=grid: _decimal_exp_table(*grid)
    return out


@lru_cache(maxsize=4)
def upper_edges(levels: int) -> np.ndarray:
    """Upper bin edges of values 0..levels-2 on [-1, 1] at scale 2**12, rounded to nearest (integers only)."""
    num = np.array([(2 * v - (levels - 2)) << ACT_BITS for v in range(levels - 1)], dtype=np.int64)
    return (2 * num + (levels - 1)) // (2 * (levels - 1))


def logistic_probabilities(params: np.ndarray, prev_u: np.ndarray | None, c: int, K: int,
                           levels: int) -> np.ndarray:
    """The compiled kernel (:func:`logistic_tables`); :func:`logistic_probabilities_numpy` is the reference."""
    g = 1 << LOGISTIC_GRID_BITS
    p = np.ascontiguousarray(params, dtype=np.int64)
    pu = np.zeros((len(p), 1), np.int64) if prev_u is None else np.ascontiguousarray(prev_u, dtype=np.int64)
    return logistic_tables(p, pu, c if prev_u is not None else 0, K, levels, ACT_BITS, EXP_STEP_BITS,
                           MIX_WEIGHT_SHIFT, LOGISTIC_GRID_BITS, int(LOGISTIC_LOGSCALE_MIN * g),
                           int(LOGISTIC_LOGSCALE_MAX * g), logistic_inv_scale_table(), upper_edges(levels),
                           sigmoid_table(), 2 * ACT_BITS - SIGMOID_GRID_BITS,
                           SIGMOID_RANGE << SIGMOID_GRID_BITS, exp_table(), SIGMOID_BITS)


def logistic_probabilities_numpy(params: np.ndarray, prev_u: np.ndarray | None, c: int, K: int,
                                 levels: int) -> np.ndarray:
    """Probability rows [n, levels] of a discretized logistic mixture from integer head outputs.

    params [n, K*(3+c)]: weight logits, means and log scales at scale 2**12, then one mean
    coefficient per earlier channel; prev_u [n, c] are those channels as u = 2x - (levels-1)."""
    p = params.astype(np.int64)
    logit_w, mean, logscale = p[:, :K], p[:, K:2 * K], p[:, 2 * K:3 * K]
    if prev_u is not None:
        u = prev_u.astype(np.int64)
        for q in range(c):
            coef = p[:, (3 + q) * K:(4 + q) * K]
            mean = mean + (coef * u[:, q:q + 1]) // (levels - 1)  # coef * x_q, x_q = u/(levels-1)
    g = 1 << LOGISTIC_GRID_BITS
    lo, hi = int(LOGISTIC_LOGSCALE_MIN * g), int(LOGISTIC_LOGSCALE_MAX * g)
    half = 1 << (ACT_BITS - LOGISTIC_GRID_BITS - 1)
    ls = np.clip((logscale + half) >> (ACT_BITS - LOGISTIC_GRID_BITS), lo, hi)  # nearest grid point
    inv_s = logistic_inv_scale_table()[ls - lo]                                  # n,K
    # t = (edge - mean) / s at 2**24, then the nearest point of the sigmoid table: the offset
    # `a` carries -mean/s, the rounding half step and the table's centre, so the big
    # [n, K, L-1] array takes one multiply-add, one shift and one clipped lookup
    step_bits = 2 * ACT_BITS - SIGMOID_GRID_BITS
    n_grid = SIGMOID_RANGE << SIGMOID_GRID_BITS
    a = -mean * inv_s + (1 << (step_bits - 1)) + (n_grid << step_bits)
    j = upper_edges(levels)[None, None, :] * inv_s[:, :, None]
    j += a[:, :, None]
    j >>= step_bits
    cdf = np.take(sigmoid_table(), j, mode="clip")                               # n,K,L-1
    d = (logit_w.max(axis=1, keepdims=True) - logit_w + (1 << (ACT_BITS - EXP_STEP_BITS - 1))) >> (ACT_BITS - EXP_STEP_BITS)
    etable = exp_table()
    w = etable[np.minimum(d, len(etable) - 1)] >> MIX_WEIGHT_SHIFT              # n,K
    # mix the CDFs first, then difference: the same integers, 1/K of the work
    n = len(p)
    mixed = np.empty((n, levels + 1), np.int64)
    mixed[:, 0] = 0
    mixed[:, -1] = w.sum(axis=1) << SIGMOID_BITS
    np.einsum("nk,nkl->nl", w, cdf, out=mixed[:, 1:-1])
    total = np.diff(mixed, axis=1)
    return total / total.sum(axis=1, keepdims=True, dtype=np.int64)


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


@njit(cache=True, nogil=True, inline="always")
def logistic_components(params, prev_u, c, K, levels, act_bits, exp_step_bits, mix_shift,
                        grid_bits, ls_lo, ls_hi, inv_scale, step_bits, n_grid, exp_table,
                        w, inv_s, base):
    """One pixel's mixture from its integer head output ``params`` and earlier channels
    ``prev_u``: the integer weight w[k], 1/s inv_s[k] and sigmoid-table offset base[k] of
    each component (component k's CDF at upper edge e is the sigmoid table at
    ``(e * inv_s[k] + base[k]) >> step_bits``); returns the weights' sum."""
    half_ls = 1 << (act_bits - grid_bits - 1)
    half_e = 1 << (act_bits - exp_step_bits - 1)
    half_t = 1 << (step_bits - 1)
    wmax = params[0]
    for k in range(1, K):
        if params[k] > wmax:
            wmax = params[k]
    wsum = 0
    for k in range(K):
        d = (wmax - params[k] + half_e) >> (act_bits - exp_step_bits)
        if d > exp_table.shape[0] - 1:
            d = exp_table.shape[0] - 1
        w[k] = exp_table[d] >> mix_shift
        wsum += w[k]
        m = params[K + k]
        for q in range(c):
            prod = params[(3 + q) * K + k] * prev_u[q]
            m += prod // (levels - 1)   # floor division, as numpy's //
        ls = (params[2 * K + k] + half_ls) >> (act_bits - grid_bits)
        if ls < ls_lo:
            ls = ls_lo
        if ls > ls_hi:
            ls = ls_hi
        inv_s[k] = inv_scale[ls - ls_lo]
        base[k] = -m * inv_s[k] + half_t + (n_grid << step_bits)
    return wsum


@njit(cache=True, nogil=True, inline="always")
def logistic_cdf(v, levels, K, w, inv_s, base, edges, sig_table, step_bits, total):
    """The mixture's integer CDF below value v (0 .. levels): sum_k w[k] * sigmoid_k at the
    upper edge of value v-1, 0 at v = 0 and ``total`` (sum(w) * 2**SIGMOID_BITS) at
    v = levels: the running sums of :func:`logistic_tables`, entry by entry."""
    if v <= 0:
        return np.int64(0)
    if v >= levels:
        return total
    top = sig_table.shape[0] - 1
    e = edges[v - 1]
    acc = np.int64(0)
    for k in range(K):
        j = (e * inv_s[k] + base[k]) >> step_bits
        if j < 0:
            j = 0
        elif j > top:
            j = top
        acc += w[k] * sig_table[j]
    return acc


@njit(cache=True, nogil=True)
def logistic_tables(params, prev_u, c, K, levels, act_bits, exp_step_bits, mix_shift,
                    grid_bits, ls_lo, ls_hi, inv_scale, edges, sig_table, step_bits, n_grid,
                    exp_table, sig_bits):
    """The logistic-mixture rows of :func:`logistic_probabilities_numpy`, the same numbers
    (integer arithmetic, then one float64 division per entry) at a fraction of the memory
    traffic: no [n, K, levels] temporary is ever built."""
    n = params.shape[0]
    out = np.empty((n, levels), np.float64)
    mixed = np.empty(levels + 1, np.int64)
    flat = np.empty(levels, np.int64)
    w = np.empty(K, np.int64)
    inv_s = np.empty(K, np.int64)
    base = np.empty(K, np.int64)
    top = sig_table.shape[0] - 1
    for i in range(n):
        wsum = logistic_components(params[i], prev_u[i], c, K, levels, act_bits, exp_step_bits,
                                   mix_shift, grid_bits, ls_lo, ls_hi, inv_scale, step_bits,
                                   n_grid, exp_table, w, inv_s, base)
        mixed[:] = 0
        mixed[levels] = wsum << sig_bits
        flat[:] = 0
        for k in range(K):   # component by component: a tight loop over the bin edges
            sk, wk = inv_s[k], w[k]
            # j rises with v; outside [v_lo, v_hi) it sits on the table's ends, so those bins
            # go in as two constant runs (a difference array) instead of one lookup each
            v_lo = _first_edge_above(edges, sk, base[k], step_bits, 0)
            v_hi = _first_edge_above(edges, sk, base[k], step_bits, top - 1)
            flat[0] += wk * sig_table[0]
            flat[v_lo] -= wk * sig_table[0]
            flat[v_hi] += wk * sig_table[top]
            for v in range(v_lo, v_hi):
                j = (edges[v] * sk + base[k]) >> step_bits
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
