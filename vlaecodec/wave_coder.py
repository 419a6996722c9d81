"""The pixel coder of version 4 files: p(x|z) straight onto the ANS stack, in compiled loops.

The same network and the same pixel order as :mod:`vlaecodec.pixels` (wave by wave, inside a
wave channel by channel, inside a channel by increasing row), but no probability table is
ever built.  A subpixel's symbol (its value, or its bin for near-lossless) is coded with the
interval that a quantized integer CDF gives it::

    Q(b) = floor(M(b) * (2**24 - bins) / M(bins)) + b

where M is the network's integer CDF N mixed with a repeat of a neighbour
(:mod:`vlaecodec.adaptive`), so every bin keeps at least one slot of 2**24 and ``Q`` rises
with ``b``.  The encoder, which knows the symbol, evaluates N twice; the decoder finds the
symbol by bisection on Q (8 evaluations for 256 values), each a handful of table lookups per
mixture component.  All of it is integer arithmetic on the integers of
:mod:`vlaecodec.exact`, so both ends agree on every machine.  A run of waves (trunk, heads,
CDF and pops) is one kernel call: no Python between pixels.  docs/FORMAT.md has the exact
definitions.

The adaptation runs in the decoder's order, so the encoder computes the network's part of
every interval of a band first (in chunks, independent), then mixes and adapts them in that
order, then pushes them last first.

With ``threads`` > 1 the encoder computes chunks of waves on a thread pool (every pixel is
known, the chunks are independent; the kernels release the GIL) and pushes them in order;
the decoder splits each wide wave's network between numba's threads and pops in order in
one.  Every pixel's integers are computed on their own, so the bytes and pixels do not
depend on the thread count.
"""
from __future__ import annotations

import threading

import numba
import numpy as np
from numba import njit, prange

from .adaptive import WEIGHT_BITS, WEIGHTS, Adaptation, choose, context, update
from .residuals import Residuals, choose_weight, hist_slot, learn, mix, predict, span
from .fixedpoint import SIGMOID_BITS, logistic_cdf, logistic_components
from .pixels import PixelCoder
from .rans import PRECISION, pop_slot, pop_symbol
from .wave_kernel import WaveKernel, head_rows, trunk_rows
from .workers import workers

ENCODE_CHUNK = 1 << 13      # pixels per encoder work item
DECODE_WAVES = 256          # waves per decoder kernel call (a progress step)
MIN_SPLIT = 32              # narrower waves are decoded in one thread
# numba's own thread pool (its default "workqueue" layer) must not be entered from two
# Python threads at once: parallel decodes take turns
_PARALLEL = threading.Lock()


def wave_sizes(height: int, width: int, lag: int) -> np.ndarray:
    """Pixels of each wave of a band: x + lag*y = t for t = 0 .. W + lag*(H-1) - 1 (lag 0, a
    factorized model: one wave of every pixel).

    >>> wave_sizes(2, 3, 2).tolist(), wave_sizes(2, 3, 0).tolist()
    ([1, 1, 2, 1, 1], [6])
    """
    if lag == 0:
        return np.array([height * width])
    t = np.arange(width + lag * (height - 1))
    return np.minimum(height - 1, t // lag) - np.maximum(0, -((width - 1 - t) // lag)) + 1


@njit(cache=True, nogil=True)
def _wave(t, H, W, lag):
    """(first row, pixels) of wave t; lag 0 (a factorized model): the band, row-major."""
    if lag == 0:
        return 0, H * W
    ylo = max(0, -((W - 1 - t) // lag))
    yhi = min(H - 1, t // lag)
    return ylo, yhi - ylo + 1


@njit(cache=True, nogil=True)
def _pixel_at(t, ylo, i, W, lag):
    if lag == 0:
        return i // W, i % W
    y = ylo + i
    return y, t - lag * y


@njit(cache=True, nogil=True, inline="always")
def _cdf_setup(params, prev_u, c, cdf, w, inv_s, base, cum):
    """Prepare one subpixel's network CDF F; returns F at the last edge (its total)."""
    (logistic, K, levels, act_bits, exp_step_bits, mix_shift, grid_bits, ls_lo, ls_hi,
     inv_scale, edges, sig_table, step_bits, n_grid, exp_table, shift) = cdf
    if logistic:
        wsum = logistic_components(params, prev_u, c, K, levels, act_bits, exp_step_bits,
                                   mix_shift, grid_bits, ls_lo, ls_hi, inv_scale, step_bits,
                                   n_grid, exp_table, w, inv_s, base)
        return (wsum << SIGMOID_BITS) >> shift
    # softmax logits: integer weights through the exp table (fixedpoint.logits_to_probabilities)
    top = params[0]
    for v in range(1, levels):
        top = max(top, params[v])
    last = exp_table.shape[0] - 1
    cum[0] = 0
    for v in range(levels):
        cum[v + 1] = cum[v] + exp_table[min((top - params[v]) >> (act_bits - exp_step_bits), last)]
    return cum[levels] >> shift


# The functions of a subpixel's search and adaptation are inlined (numba's inline="always"):
# as calls, each passing tuples of arrays, they cost more than their arithmetic; inlined, a
# bisection of 256 values took 0.6 us instead of 1.3 on the 2-core test machine.
@njit(cache=True, nogil=True, inline="always")
def _f(b, width, total, cdf, w, inv_s, base, cum):
    """The network's F at the lower edge of bin b, on the scale of ``total``."""
    (logistic, K, levels, act_bits, exp_step_bits, mix_shift, grid_bits, ls_lo, ls_hi,
     inv_scale, edges, sig_table, step_bits, n_grid, exp_table, shift) = cdf
    e = min(b * width, levels)
    if e >= levels:
        return total
    if logistic:
        return logistic_cdf(e, levels, K, w, inv_s, base, edges, sig_table, step_bits, 0) >> shift
    return cum[e] >> shift


@njit(cache=True, nogil=True, inline="always")
def _mixed(f, b, a, cand_bin, total):
    """F of the mixture (2**12 - a) / 2**12 * network + a / 2**12 * [symbol = cand_bin] at
    the lower edge of bin b, on the scale total * 2**12 (adaptive.py)."""
    return ((1 << WEIGHT_BITS) - a) * f + (a * total if b > cand_bin else 0)


@njit(cache=True, nogil=True, inline="always")
def _slot(f_mixed, b, bins, total):
    """Q(b) = floor(F * (2**24 - bins) / F(bins)) + b: the first slot of bin b."""
    return (f_mixed * ((1 << PRECISION) - bins)) // (total << WEIGHT_BITS) + b


@njit(cache=True, nogil=True, inline="always")
def _bisect(slot, width, bins, total, a, cand_bin, cdf, w, inv_s, base, cum):
    """(b, Q(b), Q(b+1), the network's F(b+1) - F(b)) for the bin b with Q(b) <= slot <
    Q(b+1).  Q(mid) <= slot is tested as F*span < (slot - mid + 1) * F(bins) (floor(a / t)
    <= s iff a < (s + 1) * t), without a division; both sides stay below 2**63."""
    span = (1 << PRECISION) - bins
    mixed_total = total << WEIGHT_BITS
    lo, hi = 0, bins
    f_lo, f_hi = np.int64(0), total
    while hi - lo > 1:
        mid = (lo + hi) >> 1
        f = _f(mid, width, total, cdf, w, inv_s, base, cum)
        if slot < mid or _mixed(f, mid, a, cand_bin, total) * span >= (slot - mid + 1) * mixed_total:
            hi, f_hi = mid, f
        else:
            lo, f_lo = mid, f
    return (lo, _slot(_mixed(f_lo, lo, a, cand_bin, total), lo, bins, total),
            _slot(_mixed(f_hi, hi, a, cand_bin, total), hi, bins, total), f_hi - f_lo)


@njit(cache=True, nogil=True, inline="always")
def _choice(x, c, y, xx, width, lengths, weights):
    """(a, candidate bin, context, left bin, up bin) of a subpixel: the adaptive option
    (adaptive.py); bins are -1 without a neighbour."""
    left, up, ctx = context(x, c, y, xx)
    if left < 0:
        return 0, -1, ctx, -1, -1
    k = choose(lengths, ctx, left)
    n = weights.shape[0]
    cand = left if k < n else up
    return weights[k % n], cand // width, ctx, left // width, up // width


@njit(cache=True, nogil=True)
def _wave_arrays(head_w, C, ph, m):
    """Per-pixel arrays of a wave of up to m pixels: trunk features (float64 holding
    integers), head outputs, values of the channels coded so far (and as network inputs)."""
    return (np.empty((m, ph)), np.empty((m, head_w[5].shape[2]), np.int64),
            np.zeros((m, C), np.int64), np.zeros((m, C), np.int64))


@njit(cache=True, nogil=True)
def _max_wave(H, W, lag):
    return H * W if lag == 0 else min(H, (W + lag - 1) // lag)


@njit(cache=True, nogil=True)
def _network_edges(t0, t1, H, W, lag, r0, u_pad, zfeat, x, trunk_w, head_w, cdf, width, out):
    """For every subpixel of waves [t0, t1) of a known band (x: values on their bins'
    values), in the decoder's order: the network's F at its bin's two edges and at the last
    edge, into out [n, 3]."""
    autoregressive, n_params = head_w[1], head_w[8]
    C = u_pad.shape[0]
    levels, K = cdf[2], cdf[1]
    T, P, prev, prev_u = _wave_arrays(head_w, C, zfeat.shape[2], _max_wave(H, W, lag))
    w, inv_s, base = np.empty(K, np.int64), np.empty(K, np.int64), np.empty(K, np.int64)
    cum = np.empty(levels + 1, np.int64)
    k = 0
    for t in range(t0, t1):
        ylo, m = _wave(t, H, W, lag)
        for i in range(m):
            y, xx = _pixel_at(t, ylo, i, W, lag)
            for c in range(C):
                v = x[c, y + r0, xx]
                prev[i, c] = v
                prev_u[i, c] = 2 * v - (levels - 1)
        for c in range(C):
            _net_stage(c, t, ylo, 0, m, W, lag, r0, u_pad, zfeat, trunk_w, head_w, T, P, prev)
            for i in range(m):
                total = _cdf_setup(P[i, :n_params[c]], prev_u[i], c if autoregressive else 0, cdf,
                                   w, inv_s, base, cum)
                b = prev[i, c] // width
                out[k, 0] = _f(b, width, total, cdf, w, inv_s, base, cum)
                out[k, 1] = _f(b + 1, width, total, cdf, w, inv_s, base, cum)
                out[k, 2] = total
                k += 1
    return k


@njit(cache=True, nogil=True)
def _adaptive_intervals(n_waves, H, W, lag, r0, x, C, bins, width, edges, lengths, counts, log2,
                        weights, res, starts, freqs):
    """The intervals of every subpixel of a band's ``n_waves`` waves in the decoder's order,
    from the network's F (:func:`_network_edges`), mixed and adapted in that order as the
    decoder will (``res``: the residual layer's state, :func:`_residual_state`)."""
    use_res, r_counts, r_tree, r_totals, r_lengths, r_seen = res
    k = 0
    for t in range(n_waves):
        ylo, m = _wave(t, H, W, lag)
        for c in range(C):
            for i in range(m):
                y, xx = _pixel_at(t, ylo, i, W, lag)
                a, cand_bin, ctx, left_bin, up_bin = _choice(x, c, y + r0, xx, width, lengths, weights)
                b = x[c, y + r0, xx] // width
                f_lo, f_hi, total = edges[k, 0], edges[k, 1], edges[k, 2]
                q_lo = _slot(_mixed(f_lo, b, a, cand_bin, total), b, bins, total)
                q_hi = _slot(_mixed(f_hi, b + 1, a, cand_bin, total), b + 1, bins, total)
                update(lengths, counts, log2, weights, ctx, b == left_bin, b == up_bin,
                       left_bin >= 0, f_hi - f_lo, total)
                if use_res:
                    pred, hctx = predict(x, c, y + r0, xx, width)
                    lo, hsum = span(r_tree, hctx, pred, bins)
                    wh = choose_weight(r_lengths, hctx)
                    h_lo = hist_slot(r_tree, hctx, b, pred, bins, lo, hsum)
                    h_hi = hist_slot(r_tree, hctx, b + 1, pred, bins, lo, hsum)
                    learn(r_counts, r_tree, r_totals, r_lengths, r_seen, log2, hctx, b, pred, bins,
                          q_hi - q_lo, h_hi - h_lo)
                    q_lo, q_hi = mix(q_lo, h_lo, wh), mix(q_hi, h_hi, wh)
                starts[k] = q_lo
                freqs[k] = q_hi - q_lo
                k += 1
    return k


def _residual_state(use: bool, channels: int, bins: int) -> tuple:
    """The residual layer's arrays for the kernels (empty ones when the file has none)."""
    r = Residuals(channels, bins if use else 1)
    return (use, r.counts, r.tree, r.totals, r.lengths, r.seen)


@njit(cache=True, nogil=True, inline="always")
def _bisect_residual(slot, width, bins, total, a, cand_bin, cdf, w, inv_s, base, cum, tree, hctx,
                     pred, lo, hsum, wh):
    """:func:`_bisect` on the intervals mixed with the residual histogram
    (:mod:`vlaecodec.residuals`): (b, Q(b), Q(b+1), the network's F(b+1) - F(b), the first
    layer's width, the histogram's width).

    The search starts at the prediction ``pred`` and gallops away from it (steps 1, 2, 4,
    ...) until it brackets the slot, then bisects the bracket: most symbols lie within a
    few bins of the prediction, so this takes about 4 evaluations of Q where bisecting all
    the bins takes 8.  The bin found is the one bin with Q(b) <= slot < Q(b+1), whatever
    the search's path."""
    b_lo, b_hi = 0, bins
    f_lo, f_hi = np.int64(0), total
    g = min(max(pred, 0), bins - 1)
    step = 1
    up = True           # galloping: from g upwards (Q(g) <= slot) or downwards
    # each end's two slots (the first layer's, the histogram's) as they are evaluated; -1 for
    # an end never evaluated (0 or bins), whose slots are computed at the end
    r_lo = h_lo = r_hi = h_hi = np.int64(-1)
    if g > 0:
        f = _f(g, width, total, cdf, w, inv_s, base, cum)
        r = _slot(_mixed(f, g, a, cand_bin, total), g, bins, total)
        h = hist_slot(tree, hctx, g, pred, bins, lo, hsum)
        if mix(r, h, wh) > slot:
            b_hi, f_hi, r_hi, h_hi, up = g, f, r, h, False
        else:
            b_lo, f_lo, r_lo, h_lo = g, f, r, h
    while b_hi - b_lo > 1:
        if step:
            mid = b_lo + step if up else b_hi - step
            if mid >= b_hi or mid <= b_lo:
                step = 0                                   # past the end: bisect from here
                continue
            step *= 2
        else:
            mid = (b_lo + b_hi) >> 1
        f = _f(mid, width, total, cdf, w, inv_s, base, cum)
        r = _slot(_mixed(f, mid, a, cand_bin, total), mid, bins, total)
        h = hist_slot(tree, hctx, mid, pred, bins, lo, hsum)
        if mix(r, h, wh) > slot:
            b_hi, f_hi, r_hi, h_hi = mid, f, r, h
            if up:
                step = 0                                   # bracketed
        else:
            b_lo, f_lo, r_lo, h_lo = mid, f, r, h
            if not up:
                step = 0
    if r_lo < 0:
        r_lo = _slot(_mixed(f_lo, b_lo, a, cand_bin, total), b_lo, bins, total)
        h_lo = hist_slot(tree, hctx, b_lo, pred, bins, lo, hsum)
    if r_hi < 0:
        r_hi = _slot(_mixed(f_hi, b_hi, a, cand_bin, total), b_hi, bins, total)
        h_hi = hist_slot(tree, hctx, b_hi, pred, bins, lo, hsum)
    return b_lo, mix(r_lo, h_lo, wh), mix(r_hi, h_hi, wh), f_hi - f_lo, r_hi - r_lo, h_hi - h_lo


@njit(cache=True, nogil=True)
def _net_stage(c, t, ylo, lo, hi, W, lag, r0, u_pad, zfeat, trunk_w, head_w, T, P, prev):
    """Channel c's head output P of pixels [lo, hi) of wave t (for c = 0, their trunk T
    first): every pixel's integers on their own, so any split of [0, m) gives the same."""
    if c == 0:
        ys, xs = np.empty(hi - lo, np.int64), np.empty(hi - lo, np.int64)
        for i in range(lo, hi):
            ys[i - lo], xs[i - lo] = _pixel_at(t, ylo, i, W, lag)
        trunk_rows(u_pad, zfeat, ys, xs, r0, trunk_w, T[lo:hi])
    head_rows(c, T[lo:hi], prev[lo:hi], head_w, P[lo:hi])


@njit(cache=True, nogil=True)
def _pop_stage(c, t, ylo, m, W, lag, r0, up, u_pad, x, head_w, cdf, bins, width, centers, P,
               prev, prev_u, state, buf, n, left, lengths, counts, log2, weights, res):
    """Pop channel c of the m pixels of wave t, in order; returns the stack's (state, n)."""
    use_res, r_counts, r_tree, r_totals, r_lengths, r_seen = res
    autoregressive, n_params = head_w[1], head_w[8]
    levels, K = cdf[2], cdf[1]
    w, inv_s, base = np.empty(K, np.int64), np.empty(K, np.int64), np.empty(K, np.int64)
    cum = np.empty(levels + 1, np.int64)
    for i in range(m):
        y, xx = _pixel_at(t, ylo, i, W, lag)
        a, cand_bin, ctx, left_bin, up_bin = _choice(x, c, y + r0, xx, width, lengths, weights)
        total = _cdf_setup(P[i, :n_params[c]], prev_u[i], c if autoregressive else 0, cdf, w,
                           inv_s, base, cum)
        if use_res:
            pred, hctx = predict(x, c, y + r0, xx, width)
            lo, hsum = span(r_tree, hctx, pred, bins)
            wh = choose_weight(r_lengths, hctx)
            b, q_lo, q_hi, f_net, rep_width, hist_width = _bisect_residual(
                pop_slot(state), width, bins, total, a, cand_bin, cdf, w, inv_s, base, cum, r_tree,
                hctx, pred, lo, hsum, wh)
        else:
            b, q_lo, q_hi, f_net = _bisect(pop_slot(state), width, bins, total, a, cand_bin, cdf, w,
                                           inv_s, base, cum)
        state, n = pop_symbol(state, buf, n, q_lo, q_hi - q_lo)
        update(lengths, counts, log2, weights, ctx, b == left_bin, b == up_bin, left_bin >= 0,
               f_net, total)
        if use_res:
            learn(r_counts, r_tree, r_totals, r_lengths, r_seen, log2, hctx, b, pred, bins,
                  rep_width, hist_width)
        v = centers[b]
        prev[i, c] = v
        prev_u[i, c] = 2 * v - (levels - 1)
        x[c, y + r0, xx] = v
        u_pad[c, y + r0 + up, xx + left] = 2 * v - (levels - 1)
    return state, n


@njit(cache=True, nogil=True)
def _decode_waves(t0, t1, H, W, lag, r0, up, left, u_pad, zfeat, x, trunk_w, head_w, cdf, bins,
                  width, centers, state, buf, n, lengths, counts, log2, weights, res):
    """Pop waves [t0, t1) of a band into x and u_pad; returns the stack's (state, n)."""
    C = u_pad.shape[0]
    T, P, prev, prev_u = _wave_arrays(head_w, C, zfeat.shape[2], _max_wave(H, W, lag))
    for t in range(t0, t1):
        ylo, m = _wave(t, H, W, lag)
        for c in range(C):
            _net_stage(c, t, ylo, 0, m, W, lag, r0, u_pad, zfeat, trunk_w, head_w, T, P, prev)
            state, n = _pop_stage(c, t, ylo, m, W, lag, r0, up, u_pad, x, head_w, cdf, bins,
                                  width, centers, P, prev, prev_u, state, buf, n, left,
                                  lengths, counts, log2, weights, res)
    return state, n


@njit(cache=True, nogil=True, parallel=True)
def _decode_waves_parallel(t0, t1, H, W, lag, r0, up, left, u_pad, zfeat, x, trunk_w, head_w,
                           cdf, bins, width, centers, state, buf, n, lengths, counts, log2,
                           weights, res, parts, min_split):
    """:func:`_decode_waves` with each wave's network split into ``parts`` (numba threads);
    the pops stay in order in this thread.  Narrow waves are not split (the hand-off would
    cost more)."""
    C = u_pad.shape[0]
    T, P, prev, prev_u = _wave_arrays(head_w, C, zfeat.shape[2], _max_wave(H, W, lag))
    for t in range(t0, t1):
        ylo, m = _wave(t, H, W, lag)
        k = parts if m >= min_split else 1
        for c in range(C):
            for p in prange(k):
                _net_stage(c, t, ylo, m * p // k, m * (p + 1) // k, W, lag, r0, u_pad, zfeat,
                           trunk_w, head_w, T, P, prev)
            state, n = _pop_stage(c, t, ylo, m, W, lag, r0, up, u_pad, x, head_w, cdf, bins,
                                  width, centers, P, prev, prev_u, state, buf, n, left,
                                  lengths, counts, log2, weights, res)
    return state, n


class WaveCoder:
    """p(x|z) of one exact network (its :class:`~vlaecodec.wave_kernel.WaveKernel`) on an
    :class:`~vlaecodec.rans.AnsStack`.  ``threads``: encoder work items at once, decoder
    threads per wave; ``progress``: a bar over the waves of large bands."""

    def __init__(self, kernel: WaveKernel, lag: int | None, up: int, left: int, threads: int = 1,
                 progress: bool = False):
        k = kernel
        self.progress = progress
        self.kernel = k
        self.lag = lag or 0
        self.up, self.left = up, left
        self.threads = max(1, threads)
        self.trunk_w, self.head_w = k.trunk_w, k.head_w
        (act_bits, exp_step_bits, mix_shift, grid_bits, ls_lo, ls_hi, inv_scale, edges, sig_table,
         step_bits, n_grid, exp_table, _) = k.table_args
        # F is shifted right until F(levels) < 2**(63 - 24 - 12): a logistic mixture's is
        # sum(w) * 2**SIGMOID_BITS < K * 2**(22 + 28), a softmax's levels * 2**30.  Then the
        # mixture (adaptive.py, 12 bits) times 2**PRECISION never overflows int64.
        largest = (k.K << (30 - mix_shift + SIGMOID_BITS)) if k.logistic else (k.levels << 30)
        shift = max(0, largest.bit_length() - (63 - PRECISION - WEIGHT_BITS))
        # the sigmoid table as int32 (its entries are below 2**SIGMOID_BITS): half the bytes, so
        # more of it stays in cache for the search's random reads
        sig_table = sig_table.astype(np.int32)
        self.cdf = (bool(k.logistic), int(k.K), int(k.levels), act_bits, exp_step_bits, mix_shift,
                    grid_bits, ls_lo, ls_hi, inv_scale, edges, sig_table, step_bits, n_grid,
                    exp_table, shift)

    def push(self, stack, x: np.ndarray, u_pad: np.ndarray, zhalf: np.ndarray,
             rows: tuple[int, int], bins, residuals: bool = False) -> None:
        """Push the pixels of rows [r0, r1) of x [C,H,W] (on their bins' values), last wave
        first, so that :meth:`pop` pops them in order; ``residuals``: with the residual layer
        (:mod:`vlaecodec.residuals`)."""
        C, _, W = x.shape
        r0, r1 = rows
        H = r1 - r0
        zf = self.kernel._channels_last(zhalf)
        x = np.ascontiguousarray(x, np.int64)
        sizes = wave_sizes(H, W, self.lag)
        groups, t0, start, size = [], 0, 0, 0      # runs of waves of about ENCODE_CHUNK pixels
        for t, m in enumerate(sizes.tolist()):
            size += m
            if size >= ENCODE_CHUNK or t + 1 == len(sizes):
                groups.append((t0, t + 1, start, size))
                t0, start, size = t + 1, start + size, 0
        # the network's part of every interval, chunk by chunk (on threads: independent) ...
        edges = np.empty((C * int(sizes.sum()), 3), np.int64)

        bar = self._bar(H * W, len(sizes), "encode")

        def network(group):
            a, b, first, count = group
            _network_edges(a, b, H, W, self.lag, r0, u_pad, zf, x, self.trunk_w, self.head_w,
                           self.cdf, bins.width, edges[C * first:C * (first + count)])
            return b - a

        with workers(self.threads) as pool:
            for waves in (pool.map if pool else map)(network, groups):
                if bar is not None:
                    bar.update(waves)
        if bar is not None:
            bar.close()
        # ... then the adaptation, in the decoder's order, and the pushes, last first
        starts, freqs = np.empty(len(edges), np.int64), np.empty(len(edges), np.int64)
        ad = Adaptation()
        _adaptive_intervals(len(sizes), H, W, self.lag, r0, x, C, len(bins.centers), bins.width, edges,
                            ad.lengths, ad.counts, ad.log2, WEIGHTS,
                            _residual_state(residuals, C, len(bins.centers)), starts, freqs)
        stack.push_intervals(starts, freqs)

    def pop(self, stack, x: np.ndarray, u_pad: np.ndarray, zhalf: np.ndarray,
            rows: tuple[int, int], bins, residuals: bool = False) -> None:
        """Fill rows [r0, r1) of x [C,H,W] and its padded input u_pad from the stack."""
        _, _, W = x.shape
        r0, r1 = rows
        zf = self.kernel._channels_last(zhalf)
        centers = np.ascontiguousarray(bins.centers, np.int64)
        n_waves = len(wave_sizes(r1 - r0, W, self.lag))
        ad = Adaptation()
        res = _residual_state(residuals, x.shape[0], len(centers))
        bar = self._bar((r1 - r0) * W, n_waves, "decode")
        for t0 in range(0, n_waves, DECODE_WAVES):
            t1 = min(n_waves, t0 + DECODE_WAVES)
            state, buf, n = stack.reserve(0)
            args = (t0, t1, r1 - r0, W, self.lag, r0, self.up, self.left, u_pad, zf, x, self.trunk_w,
                    self.head_w, self.cdf, len(centers), bins.width, centers, state, buf, n,
                    ad.lengths, ad.counts, ad.log2, WEIGHTS, res)
            if self.threads == 1 or _max_wave(r1 - r0, W, self.lag) < MIN_SPLIT:
                # no wave wide enough to split: the serial kernel; numba's parallel one
                # would only be loaded for nothing
                stack.update(*_decode_waves(*args))
            else:
                with _PARALLEL:
                    numba.set_num_threads(min(self.threads, numba.config.NUMBA_NUM_THREADS))
                    stack.update(*_decode_waves_parallel(*args, self.threads, MIN_SPLIT))
            if bar is not None:
                bar.update(t1 - t0)
        if bar is not None:
            bar.close()

    def _bar(self, pixels: int, waves: int, what: str):
        """A tqdm bar over a band's waves, or None (small bands; no progress asked for)."""
        if not self.progress or pixels < PixelCoder.PROGRESS_MIN_PIXELS:
            return None
        from tqdm import tqdm
        return tqdm(total=waves, desc=f"{what} {pixels} px", unit="wave", leave=False, mininterval=1)
