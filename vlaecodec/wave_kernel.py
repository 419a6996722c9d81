"""The per-pixel network of a wave as compiled kernels, in integer arithmetic.

:class:`WaveKernel` holds the integer weights of an :class:`~vlaecodec.exact.ExactVLAE`'s
pixel decoder (window convolution, trunk, embeddings, heads), prepared once, and computes
for a set of pixels (a wave, or a chunk of waves) exactly what the numpy path computes:

* :meth:`WaveKernel.trunk`: ``net.trunk_rows(net.context_rows(...))``, the trunk features;
* :meth:`WaveKernel.probabilities`: ``net.probabilities(c, t, prev)``, channel c's rows;
* :meth:`WaveKernel.first`: both for channel 0 (what a decoder needs before its first pop);
* :meth:`WaveKernel.tables`: every channel's rows when all pixels are known (the encoder).

Each is one or two calls of fused numba kernels (gather, layers, table) per pixel set, with no
Python between the layers.  The numpy path carries integers in float64 and is exact because
every sum stays below 2**53; here they are int64 sums of integer products, exact below 2**63,
so both give the same integers and hence the same float64 probability rows (one correctly
rounded division per entry, from the same integer masses).

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
  is below 2**33.  The inputs are int32 wherever they fit (the window's, the trunk's, the
  inner layers' and a head's whose sum stays below 2**31), so each
  product is of two int32 widened to int64 (:func:`_dense`); a head input above 2**31 takes
  int64 products, the same integers;
* so every accumulator, bias + sum_k x_k w_k, is below 2**53 + 2**33 * 2**29 < 2**63: int64
  sums never overflow, whatever the order.  The numpy path is exact only while its float64
  sums stay below 2**53 (which the layer scaling guarantees for inputs clipped to 2**22);
  wherever it is exact, the two agree bit for bit.
* bias: round(b * 2**(w_bits + in_bits)), checked to be an integer below 2**53 (held exactly
  in float64 by the numpy path);
* floor(v * 2**-shift) of the numpy path is ``v >> shift`` on int64 (an arithmetic shift
  rounds towards minus infinity, as floor does).

Rows are independent, so any split of a pixel set between threads gives the same rows; the
kernels release the GIL (``nogil``), so the split waves of ``--threads 2`` run in parallel.

Speed (2-core AMD EPYC, AVX2): `fast`'s trunk (a 93x96 window layer, two blocks of
96-32-96) costs about 5.6 us a pixel, and its three heads (96-32-25 each) have about half as many
multiply-adds again; the vector multiplies bound them.  The first use after an install compiles the kernels (numba
then caches them on disk).
"""
from __future__ import annotations

import numpy as np
from numba import njit

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


class WaveKernel:
    """The pixel decoder of one exact network (``local`` or ``factorized``), for the kernels."""

    def __init__(self, net: ExactVLAE):
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
        # the largest layer input (see the module's bounds) times sum|w| < 2**30, plus a bias
        largest_input = (2 + len(net.trunk)) * LIMIT + (C - 1) * int(np.abs(self.embed).max(initial=0))
        if largest_input.bit_length() + 30 > 62:
            raise ValueError("network too deep for the kernel's int64 bounds")

    # --- the interface -------------------------------------------------------------------------
    def trunk(self, u_pad: np.ndarray, zfeat: np.ndarray, ys: np.ndarray, xs: np.ndarray,
              r0: int = 0) -> np.ndarray:
        """Trunk features [n, ph] (int64) of pixels (ys, xs) of a band starting at row r0:
        ys are band rows (z features ``zfeat`` [ph, h2, w2] are the band's), u_pad [C, H+up,
        W+left+right] is the whole image's padded input (float64 holding integers)."""
        ys = np.ascontiguousarray(ys, np.int64)
        xs = np.ascontiguousarray(xs, np.int64)
        return _trunk(u_pad, self._channels_last(zfeat), ys, xs, r0, self.dy, self.dx, *self.win,
                      *self.trunk1, *self.trunk2, LIMIT)

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
        return (self.embed, self.autoregressive, self.hid_w, self.hid_b, self.hid_s,
                self.out_w, self.out_b, self.out_s, self.n_params, LIMIT,
                self.logistic, self.K, self.levels, self.exp, *self.table_args)


# --- kernels ---------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _dense(x, W, b, shift, low, high, acc, out):
    """out[:m] = clip((b + x @ W) >> shift, low, high) for one row x [fan_in], summed in the
    int64 ``acc`` [>= m] (``out`` may be ``acc`` or a slice of it).

    One pass over the outputs per nonzero input (a row of W, int32): zero inputs (ReLU
    outputs: about half) are skipped, as an exact sum does not change.  Each product is of two
    int64 sign-extended from int32 where x is int32: x86 then multiplies 32 x 32 -> 64 bits in
    vector lanes (AVX2's vpmuldq), where a full int64 product has no AVX2 instruction.  That
    made a 96x96 layer 1.6 times faster on the 2-core AVX2 test machine (1.09 against 1.73 us
    per pixel); the sums are the same integers either way."""
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


@njit(cache=True, nogil=True)
def trunk_pixel(u_pad, zfeat, y, x, r0, dy, dx, win_w, win_b, win_s, tw1, tb1, ts1, tw2, tb2, ts2,
                lim, scratch, ctx):
    """ctx [ph] = the trunk features of pixel (y, x) of a band starting at image row r0
    (scratch: :func:`trunk_scratch`)."""
    feats, a, h, acc = scratch
    ph = zfeat.shape[2]
    C = u_pad.shape[0]
    n_off = dy.shape[0]
    if n_off:
        # the window, ordered (offset, channel) as the window matrix's rows; |u| <= 255
        for o in range(n_off):
            for c in range(C):
                feats[o * C + c] = np.int32(u_pad[c, y + r0 + dy[o], x + dx[o]])
        _dense(feats, win_w, win_b, win_s, -lim, lim, ctx, ctx)
    else:
        ctx[:] = 0
    z = zfeat[y >> 1, x >> 1]
    for j in range(ph):
        ctx[j] += np.int64(z[j])
    for k in range(tw1.shape[0]):
        for j in range(ph):
            a[j] = max(ctx[j], 0)          # |ctx| < 2**25 (module docstring): int32
        _dense(a, tw1[k], tb1[k], ts1[k], 0, lim, acc, h)
        _dense(h, tw2[k], tb2[k], ts2[k], -lim, lim, acc, acc[:ph])
        for j in range(ph):
            ctx[j] += acc[j]


@njit(cache=True, nogil=True)
def trunk_scratch(dy, C, ph, inner):
    """The scratch of :func:`trunk_pixel`: the window's inputs, the stream's and the inner
    layer's (int32, the products' inputs), and an int64 accumulator."""
    return (np.empty(max(dy.shape[0] * C, 1), np.int32), np.empty(ph, np.int32),
            np.empty(inner, np.int32), np.empty(max(ph, inner), np.int64))


@njit(cache=True, nogil=True)
def _trunk(u_pad, zfeat, ys, xs, r0, dy, dx, win_w, win_b, win_s, tw1, tb1, ts1, tw2, tb2, ts2, lim):
    n = ys.shape[0]
    ph = zfeat.shape[2]
    t = np.empty((n, ph), np.int64)
    scratch = trunk_scratch(dy, u_pad.shape[0], ph, tw1.shape[2])
    for i in range(n):
        trunk_pixel(u_pad, zfeat, ys[i], xs[i], r0, dy, dx, win_w, win_b, win_s, tw1, tb1, ts1,
                    tw2, tb2, ts2, lim, scratch, t[i])
    return t


@njit(cache=True, nogil=True)
def head_scratch(ph, inner, n_out):
    """The scratch of :func:`head_pixel`: its input (int64, and int32 when it fits), the
    inner layer's output (int32) and an int64 accumulator."""
    return (np.empty(ph, np.int64), np.empty(ph, np.int32), np.empty(inner, np.int32),
            np.empty(max(inner, n_out), np.int64))


@njit(cache=True, nogil=True)
def head_pixel(c, t, prev, embed, autoregressive, hid_w, hid_b, hid_s, out_w, out_b, out_s, lim,
               scratch, params):
    """params [n_params[c]] = channel c's head output for one pixel of trunk features t [ph],
    its earlier channels' values in prev (scratch: :func:`head_scratch`)."""
    u, u32, h, acc = scratch
    ph = t.shape[0]
    for j in range(ph):
        u[j] = t[j]
    if autoregressive:
        base = c * (c - 1) // 2            # config.embed_index(c, p) = base + p
        for p in range(c):
            e = embed[base + p, prev[p]]
            for j in range(ph):
                u[j] += e[j]
    wide = False
    for j in range(ph):
        u[j] = max(u[j], 0)
        wide |= u[j] > 0x7FFFFFFF
    # the embeddings are only bounded by 2**31 each: the int64 products where the sum
    # does not fit int32 (the same integers, more slowly)
    if wide:
        _dense(u, hid_w[c], hid_b[c], hid_s[c], 0, lim, acc, h)
    else:
        for j in range(ph):
            u32[j] = u[j]
        _dense(u32, hid_w[c], hid_b[c], hid_s[c], 0, lim, acc, h)
    _dense(h, out_w[c], out_b[c], out_s[c], -lim, lim, acc, params)


@njit(cache=True, nogil=True)
def _head(c, t, prev, embed, autoregressive, hid_w, hid_b, hid_s, out_w, out_b, out_s,
          n_params, lim, logistic, K, levels, exp, act_bits, exp_step_bits, mix_shift,
          grid_bits, ls_lo, ls_hi, inv_scale, edges, sig_table, step_bits, n_grid, exp_table,
          sig_bits):
    n, ph = t.shape
    params = np.empty((n, n_params[c]), np.int64)
    scratch = head_scratch(ph, hid_w.shape[2], out_w.shape[2])
    for i in range(n):
        head_pixel(c, t[i], prev[i], embed, autoregressive, hid_w, hid_b, hid_s, out_w, out_b,
                   out_s, lim, scratch, params[i])
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
