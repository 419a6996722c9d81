"""The per-pixel network of a wave as compiled kernels, in integer arithmetic.

:class:`WaveKernel` holds the integer weights of an :class:`~vlaecodec.exact.ExactVLAE`'s
pixel decoder (window convolution, trunk, embeddings, heads), prepared once, and computes
for a set of pixels (a wave, or a chunk of waves) exactly what the numpy path computes:

* :meth:`WaveKernel.trunk`: ``net.trunk_rows(net.context_rows(...))``, the trunk features;
* :meth:`WaveKernel.probabilities`: ``net.probabilities(c, t, prev)``, channel c's rows;
* :meth:`WaveKernel.first`: both for channel 0 (what a decoder needs before its first pop);
* :meth:`WaveKernel.tables`: every channel's rows when all pixels are known (the encoder).

Each is one or two calls of numba kernels per pixel set, with no Python between the layers.
A layer of a pixel set is one float64 matrix product (BLAS, called from numba) whenever that
product is exact: its inputs and weights are integers and the layer's bound
(:func:`_float_layer`) keeps every partial sum, and each sum plus its bias, below 2**53, in
any order of summation, so any BLAS on any CPU gives the same integers (a gemm sums the
products, in some order; no BLAS uses a fast, inexact algorithm for it).  The bias, the
scaling by a power of two, floor and clip stay in float64 and are exact too.  Where an input
exceeds the bound (the zoo's clipped activations never do) the layer falls back to exact
int64 sums (:func:`_dense`).
The numpy path carries the same integers in float64, so both give the same float64
probability rows (one correctly rounded division per entry, from the same integer masses).

Why each integer width is safe (the weight bounds are checked when the weights are
prepared, :func:`_int_matrix`; the rest follows from the clipping):

* network input u = 2x - (levels-1): |u| <= 255 (it is read from the float64 padded input
  into the window's int32 inputs);
* weights: :func:`~vlaecodec.fixedpoint.weight_exponent` scales each layer so that
  fan_in * max|w| <= 2**WEIGHT_SUM_BITS = 2**29, so |w| <= 2**29 and sum_k |w_k| <= 2**29
  (plus rounding): int32;
* every layer's output is clipped to +-2**ACT_CLAMP_BITS = 2**22.  The trunk input is the
  window output plus the z features (clipped to 2**22 by their last layer), and each of the
  B residual blocks adds one more clipped output: |ctx| <= (2 + B) * 2**22 < 2**25 for B <= 6.
  A head adds at most C-1 = 2 embeddings, each checked to be below 2**31: every layer input
  is below 2**33;
* so every int64 accumulator of the fallback, bias + sum_k x_k w_k, is below
  2**53 + 2**33 * 2**29 < 2**63: it never overflows, whatever the order.  The matrix
  products are exact while each input is within the layer's bound, checked per product.
* bias: round(b * 2**(w_bits + in_bits)), checked to be an integer below 2**53 (held exactly
  in float64 by the numpy path);
* floor(v * 2**-shift) of the numpy path is ``v >> shift`` on int64 (an arithmetic shift
  rounds towards minus infinity, as floor does).

Rows are independent, so any split of a pixel set between threads gives the same rows; the
kernels release the GIL (``nogil``), so the split waves of ``--threads 2`` run in parallel.
The BLAS is held to one thread (:mod:`vlaecodec.blas`): the coders' own threads share
the cores.

Speed (2-core AMD EPYC, AVX2): a product of a wave of 64-256 pixels runs at 10-16 GMAC/s in
one thread, against 3-5 for per-pixel int64 loops.  The first use after an install compiles
the kernels (numba then caches them on disk).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .blas import load as load_blas
from .exact import ExactVLAE, QLinear
from .fixedpoint import (
    ACT_BITS,
    ACT_CLAMP_BITS,
    EXP_STEP_BITS,
    LOGISTIC_GRID_BITS,
    MIX_WEIGHT_SHIFT,
    SIGMOID_BITS,
    SIGMOID_GRID_BITS,
    SIGMOID_RANGE,
    exp_table,
    logistic_inv_scale_table,
    logistic_tables,
    sigmoid_table,
    upper_edges,
)
from .config import LOGISTIC_LOGSCALE_MAX, LOGISTIC_LOGSCALE_MIN

LIMIT = 1 << ACT_CLAMP_BITS
F64_EXACT = 1 << 53


def _int_matrix(a: np.ndarray, bound: int, dtype) -> np.ndarray:
    """float64 integers -> ``dtype``, refusing any that is not an integer below ``bound``."""
    a = np.asarray(a, dtype=np.float64)
    if not (np.all(a == np.round(a)) and np.all(np.abs(a) < bound)):
        raise ValueError("integer weights out of the kernel's bounds")
    return np.ascontiguousarray(a.astype(dtype))


def _layer(q: QLinear, matrix: np.ndarray | None = None):
    """(weights [fan_in, out] int32, bias int64, shift) of one layer."""
    m = q.matrix if matrix is None else matrix
    return (_int_matrix(m, 1 << 31, np.int32), _int_matrix(q.bias, F64_EXACT, np.int64), q.shift)


def _stack(layers):
    """Layers of one fan-in as 3 stacked arrays (outputs padded to the widest)."""
    m = max(w.shape[1] for w, _, _ in layers)
    W = np.zeros((len(layers), layers[0][0].shape[0], m), np.int32)
    b = np.zeros((len(layers), m), np.int64)
    for k, (w, bias, _) in enumerate(layers):
        W[k, :, :w.shape[1]] = w
        b[k, :w.shape[1]] = bias
    return W, b, np.array([s for _, _, s in layers], np.int64)


def _float_layer(w: np.ndarray, b: np.ndarray, blas: bool = True):
    """(w, bias as float64, the exact bound of each matrix): the integer weights [..., fan_in,
    out] and biases [..., out] of one layer or of stacked ones, and for each matrix the
    largest input magnitude (a float64 integer) for which every partial sum of x @ w, and
    the sums plus their bias, stay below 2**53 in magnitude, whatever the order: then
    float64's products and sums are all exact (:func:`_rows`).  ``blas=False``: a bound of
    -1, which no input meets."""
    w, b = np.asarray(w, np.int64), np.asarray(b, np.int64)
    col_sums = np.abs(w).sum(axis=-2)                       # sum_k |w[k, j]|, per output
    worst = np.maximum(col_sums.max(axis=-1, initial=0), 1)
    room = F64_EXACT - 1 - np.abs(b).max(axis=-1, initial=0)
    limit = (room // worst).astype(np.float64) if blas else np.full(worst.shape, -1.0)
    return (np.ascontiguousarray(w.astype(np.float64)), np.ascontiguousarray(b.astype(np.float64)),
            (float(limit) if w.ndim == 2 else limit))


class WaveKernel:
    """The pixel decoder of one exact network (``local`` or ``factorized``), for the kernels.
    ``blas=False``: every layer takes the int64 loop instead of the matrix products (the
    tests' reference; the integers are the same)."""

    def __init__(self, net: ExactVLAE, blas: bool = True):
        cfg = net.cfg
        self.cfg = cfg
        self.channels, self.levels = cfg.channels, cfg.levels
        ph = cfg.pixel_hidden
        self.local = net.local
        if net.local:
            offs = np.array(net.offsets, np.int64).reshape(-1, 2)
            self.dy = np.ascontiguousarray(offs[:, 0] + net.up)
            self.dx = np.ascontiguousarray(offs[:, 1] + net.left)
            self.win = _layer(net.window, net.window_matrix)
        else:
            self.dy = self.dx = np.zeros(0, np.int64)
            self.win = (np.zeros((0, ph), np.int32), np.zeros(ph, np.int64), 0)
        # the blocks' first and second layers, each stacked (their widths may differ)
        pi = cfg.pixel_inner_width
        self.trunk1 = _stack([_layer(a) for a, _ in net.trunk]) if net.trunk else (
            np.zeros((0, ph, pi), np.int32), np.zeros((0, pi), np.int64), np.zeros(0, np.int64))
        self.trunk2 = _stack([_layer(b) for _, b in net.trunk]) if net.trunk else (
            np.zeros((0, pi, ph), np.int32), np.zeros((0, ph), np.int64), np.zeros(0, np.int64))
        C = cfg.channels
        # embeddings: E[idx(c, p)] is added for channel p's value when computing channel c
        if net.embed:
            self.embed = _int_matrix(np.stack(net.embed), 1 << 31, np.int64)
        else:
            self.embed = np.zeros((0, cfg.levels, ph), np.int64)
        self.autoregressive = bool(net.embed)
        self.hid_w, self.hid_b, self.hid_s = _stack([_layer(q) for q in net.hidden])
        outs = [_layer(q) for q in net.out]
        self.n_params = np.array([w.shape[1] for w, _, _ in outs], np.int64)
        self.out_w, self.out_b, self.out_s = _stack(outs)
        self.logistic = net.logistic
        self.K = cfg.mixtures
        g = 1 << LOGISTIC_GRID_BITS
        # the logistic tables' constants, in the order fixedpoint.logistic_tables takes them
        self.table_args = (ACT_BITS, EXP_STEP_BITS, MIX_WEIGHT_SHIFT, LOGISTIC_GRID_BITS,
                           int(LOGISTIC_LOGSCALE_MIN * g), int(LOGISTIC_LOGSCALE_MAX * g),
                           logistic_inv_scale_table(), upper_edges(cfg.levels), sigmoid_table(),
                           2 * ACT_BITS - SIGMOID_GRID_BITS, SIGMOID_RANGE << SIGMOID_GRID_BITS,
                           exp_table(), SIGMOID_BITS)
        self.exp = exp_table()
        self._zfeat = None
        # every layer again as float64 for one BLAS product per set of pixels (:func:`_rows`),
        # with the largest input for which that product is exact
        floats = [_float_layer(w, b, blas) for w, b in ((self.win[0], self.win[1]), self.trunk1[:2],
                                                         self.trunk2[:2], (self.hid_w, self.hid_b),
                                                         (self.out_w, self.out_b))]
        if blas:
            load_blas()
        # the weights as the kernels take them (wave_coder's _net_stage)
        self.trunk_w = (self.dy, self.dx, *self.win, *self.trunk1, *self.trunk2, np.int64(LIMIT),
                        *floats[0], *floats[1], *floats[2], float(cfg.levels - 1))   # |u| <= levels - 1
        # the largest layer input (see the module's bounds) times sum|w| < 2**30, plus a bias
        largest_input = (2 + len(net.trunk)) * LIMIT + (C - 1) * int(np.abs(self.embed).max(initial=0))
        if largest_input.bit_length() + 30 > 62:
            raise ValueError("network too deep for the kernel's int64 bounds")
        # the embeddings as float64 (integers below 2**31: exact), so that adding them to the
        # float trunk features is a vector loop, not a conversion per number
        self.head_w = (self.embed.astype(np.float64), self.autoregressive, self.hid_w, self.hid_b, self.hid_s,
                       self.out_w, self.out_b, self.out_s, self.n_params, np.int64(LIMIT),
                       *floats[3], *floats[4], float(largest_input))

    # --- the interface -------------------------------------------------------------------------
    def trunk(self, u_pad: np.ndarray, zfeat: np.ndarray, ys: np.ndarray, xs: np.ndarray,
              r0: int = 0) -> np.ndarray:
        """Trunk features [n, ph] (int64) of pixels (ys, xs) of a band starting at row r0:
        ys are band rows (z features ``zfeat`` [ph, h2, w2] are the band's), u_pad [C, H+up,
        W+left+right] is the whole image's padded input (float64 holding integers)."""
        ys = np.ascontiguousarray(ys, np.int64)
        xs = np.ascontiguousarray(xs, np.int64)
        zf = self._channels_last(zfeat)
        t = np.empty((len(ys), zf.shape[2]))
        trunk_rows(u_pad, zf, ys, xs, r0, self.trunk_w, t)
        return t.astype(np.int64)

    def probabilities(self, c: int, t: np.ndarray, prev: np.ndarray | None) -> np.ndarray:
        """Probability rows [n, levels] of channel c from trunk features t; prev [n, >= c]
        holds each pixel's earlier channels (None for channel 0)."""
        n = t.shape[0]
        if prev is None:
            prev = np.zeros((n, 1), np.int64)
        return _head(c, t, np.ascontiguousarray(prev, np.int64), *self._head_args())

    def first(self, u_pad, zfeat, ys, xs, r0: int = 0):
        """(trunk features, channel 0's rows) of some pixels: what a decoder needs before its
        first pop.  Two kernel calls (one fused kernel would take numba as long again to
        compile on first use, 5 s on a busy machine, for no measurable gain)."""
        t = self.trunk(u_pad, zfeat, ys, xs, r0)
        return t, self.probabilities(0, t, None)

    def tables(self, u_pad, zfeat, ys, xs, r0: int, prev: np.ndarray) -> list[np.ndarray]:
        """Rows [n, levels] of every channel of known pixels (prev [n, C], their values)."""
        t = self.trunk(u_pad, zfeat, ys, xs, r0)
        prev = np.ascontiguousarray(prev, np.int64)
        args = self._head_args()
        return [_head(c, t, prev, *args) for c in range(self.channels)]

    def _channels_last(self, zfeat: np.ndarray) -> np.ndarray:
        """zfeat [ph, h2, w2] as [h2, w2, ph]: a pixel's features in one run of memory, not
        ph pages apart (no copy when zfeat is a view of such an array, as
        :meth:`~vlaecodec.exact.ExactVLAE.z_features_half` returns).  Made once per band:
        the last array seen is kept (the coders never change a band's features in place)."""
        last = self._zfeat
        if last is None or last[0] is not zfeat:
            last = self._zfeat = (zfeat, np.ascontiguousarray(zfeat.transpose(1, 2, 0)))
        return last[1]

    def _head_args(self):
        return (self.head_w, self.logistic, self.K, self.levels, self.exp, *self.table_args)


# The float kernels hold integers: no NaN, no infinity, and -0 is 0.  Saying so lets LLVM
# use vector max and min for their ReLUs and clips; no sum is reordered (no "reassoc"),
# though any order would give the same integers below 2**53.
FINITE = {"nnan", "ninf", "nsz"}


# --- kernels ---------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _dense(x, W, b, shift, low, high, acc, out):
    """out[:m] = clip((b + x @ W) >> shift, low, high) for one row x [fan_in] (int64), summed
    in the int64 ``acc`` [>= m] (``out`` may be ``acc`` or a slice of it): :func:`_rows`'s
    exact fallback.  Zero inputs (ReLU outputs: about half) are skipped, as an exact sum does
    not change."""
    m = out.shape[0]
    for j in range(m):
        acc[j] = b[j]
    for k in range(x.shape[0]):
        a = np.int64(x[k])
        if a != 0:
            for j in range(m):
                acc[j] += a * np.int64(W[k, j])
    for j in range(m):
        out[j] = min(max(acc[j] >> shift, low), high)


@njit(cache=True, nogil=True, fastmath=FINITE)
def _rows(X, big, Wf, bf, x_limit, W, b, shift, low, high, out):
    """out[i, j] = clip(floor((b[j] + X[i] @ W[:, j]) / 2**shift), low, high) for the rows of X
    [n, fan_in] and j < out.shape[1]; X and out are float64 holding integers, and ``big``
    bounds |X| (the bounds of the module's docstring); returns the bound of |out|, its clip.

    One float64 matrix product (BLAS) for all rows when it is exact: |X| <= x_limit, so
    that every partial sum, in any order, and each sum plus its bias, is an integer below
    2**53 (:func:`_float_layer`); the scaling by a power of two, floor and clip are exact
    too.  When ``big`` is above x_limit, X's largest magnitude decides; if that is above it
    too, which the clipped activations of the zoo's models never come near, each row goes
    in int64 (:func:`_dense`).  The integers are the same either way: only the speed
    differs (BLAS is about 3x the per-row kernel for a wave of 64 or more pixels).  Bounds
    rather than each product's largest input: a running maximum keeps LLVM from
    vectorizing the loops it sits in, which cost as much as the products."""
    n, K = X.shape
    m = out.shape[1]
    if big > x_limit:
        big = 0.0
        for i in range(n):
            for k in range(K):
                big = max(big, abs(X[i, k]))
    if big <= x_limit:
        acc = X @ Wf
        scale = 1.0 / float(np.int64(1) << shift)      # a power of two: exact
        for i in range(n):
            for j in range(m):
                out[i, j] = min(max(np.floor((acc[i, j] + bf[j]) * scale), low), high)
    else:
        x = np.empty(K, np.int64)
        acc = np.empty(W.shape[1], np.int64)
        for i in range(n):
            for k in range(K):
                x[k] = np.int64(X[i, k])
            _dense(x, W, b, shift, np.int64(low), np.int64(high), acc, acc)
            for j in range(m):
                out[i, j] = acc[j]
    return max(abs(low), abs(high))


@njit(cache=True, nogil=True, fastmath=FINITE)
def trunk_rows(u_pad, zfeat, ys, xs, r0, trunk_w, T):
    """T [n, ph] (float64 holding integers) = the trunk features of pixels (ys, xs) of a band
    starting at image row r0, a layer at a time over all of them (:func:`_rows`)."""
    (dy, dx, win_w, win_b, win_s, tw1, tb1, ts1, tw2, tb2, ts2, lim,
     win_f, win_bf, win_lim, tw1_f, tb1_f, lim1, tw2_f, tb2_f, lim2, in_bound) = trunk_w
    n = ys.shape[0]
    ph = zfeat.shape[2]
    C = u_pad.shape[0]
    n_off = dy.shape[0]
    hi = float(lim)
    if n_off:
        F = np.empty((n, n_off * C))
        for i in range(n):
            for o in range(n_off):
                for c in range(C):
                    F[i, o * C + c] = u_pad[c, ys[i] + r0 + dy[o], xs[i] + dx[o]]
        _rows(F, in_bound, win_f, win_bf, win_lim, win_w, win_b, win_s, -hi, hi, T)
    else:
        T[:] = 0
    for i in range(n):
        z = zfeat[ys[i] >> 1, xs[i] >> 1]
        for j in range(ph):
            T[i, j] += z[j]
    A, H = np.empty((n, ph)), np.empty((n, tw1.shape[2]))
    D = np.empty((n, ph))
    bound = 2.0 * hi           # |T|: the window's clipped output plus the z features (clipped)
    for k in range(tw1.shape[0]):
        for i in range(n):
            for j in range(ph):
                A[i, j] = max(T[i, j], 0.0)
        big = _rows(A, bound, tw1_f[k], tb1_f[k], lim1[k], tw1[k], tb1[k], ts1[k], 0.0, hi, H)
        bound += _rows(H, big, tw2_f[k], tb2_f[k], lim2[k], tw2[k], tb2[k], ts2[k], -hi, hi, D)
        for i in range(n):
            for j in range(ph):
                T[i, j] += D[i, j]


@njit(cache=True, nogil=True, fastmath=FINITE)
def head_rows(c, T, prev, head_w, P):
    """P[i, :n_params[c]] (int64) = channel c's head output for pixels of trunk features T
    [n, ph] and earlier channels prev [n, >= c], a layer at a time."""
    (embed, autoregressive, hid_w, hid_b, hid_s, out_w, out_b, out_s, n_params, lim,
     hid_f, hid_bf, hid_lim, out_f, out_bf, out_lim, u_bound) = head_w
    n, ph = T.shape
    U = np.empty((n, ph))
    base = c * (c - 1) // 2            # config.embed_index(c, p) = base + p
    for i in range(n):         # T plus the earlier channels' embeddings, in that order
        for j in range(ph):
            U[i, j] = T[i, j]
        if autoregressive:
            for p in range(c):
                e = embed[base + p, prev[i, p]]
                for j in range(ph):
                    U[i, j] += e[j]
        for j in range(ph):
            U[i, j] = max(U[i, j], 0.0)
    hi = float(lim)
    H = np.empty((n, hid_w.shape[2]))
    big = _rows(U, u_bound, hid_f[c], hid_bf[c], hid_lim[c], hid_w[c], hid_b[c], hid_s[c], 0.0, hi, H)
    m = n_params[c]
    Q = np.empty((n, m))
    _rows(H, big, out_f[c], out_bf[c], out_lim[c], out_w[c], out_b[c], out_s[c], -hi, hi, Q)
    for i in range(n):
        for j in range(m):
            P[i, j] = np.int64(Q[i, j])


@njit(cache=True, nogil=True)
def _head(c, t, prev, head_w, logistic, K, levels, exp, act_bits, exp_step_bits, mix_shift,
          grid_bits, ls_lo, ls_hi, inv_scale, edges, sig_table, step_bits, n_grid, exp_table,
          sig_bits):
    """Channel c's probability rows [n, levels] of pixels of trunk features t."""
    n = t.shape[0]
    autoregressive, n_params = head_w[1], head_w[8]
    params = np.empty((n, n_params[c]), np.int64)
    head_rows(c, t, prev, head_w, params)
    if not logistic:
        return _softmax_rows(params, exp, act_bits - exp_step_bits)
    q = c if autoregressive else 0
    prev_u = np.empty((n, max(q, 1)), np.int64)
    for i in range(n):
        for p in range(q):
            prev_u[i, p] = 2 * prev[i, p] - (levels - 1)
    return logistic_tables(params, prev_u, q, K, levels, act_bits, exp_step_bits, mix_shift,
                           grid_bits, ls_lo, ls_hi, inv_scale, edges, sig_table, step_bits,
                           n_grid, exp_table, sig_bits)


@njit(cache=True, nogil=True)
def _softmax_rows(logits, table, shift):
    """:func:`~vlaecodec.fixedpoint.logits_to_probabilities` on int64 logits."""
    n, L = logits.shape
    out = np.empty((n, L), np.float64)
    w = np.empty(L, np.int64)
    last = table.shape[0] - 1
    for i in range(n):
        top = logits[i, 0]
        for v in range(1, L):
            top = max(top, logits[i, v])
        total = 0
        for v in range(L):
            w[v] = table[min((top - logits[i, v]) >> shift, last)]
            total += w[v]
        for v in range(L):
            out[i, v] = w[v] / total
    return out
